"""The published OpenAPI document, and schemathesis driving the app with it."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from sim_server import ServerSettings, create_app

# A short long-poll cap: generated requests may ask to wait, and the run must stay fast.
app = create_app(ServerSettings(auto_create=True, max_wait=0.01), backend="asyncio")
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def test_document_lists_every_route():
    """/openapi.json documents each API route and its methods."""
    paths = schema.raw_schema["paths"]
    assert set(paths) >= {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/status", "/status", "/healthz"}
    assert set(paths["/jobs"]) >= {"get", "post"}


def test_rate_limit_and_key_answers_are_documented():
    """Every status read documents 429 (the rate limit) and 401 (the API key)."""
    paths = schema.raw_schema["paths"]
    for path in ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/status", "/status"):
        assert {"401", "429"} <= set(paths[path]["get"]["responses"]), path


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_breaks_the_server(case):
    """No request schemathesis derives from the document gets a 500 or breaks the document."""
    case.call_and_validate()
