"""The published OpenAPI document, and schemathesis driving the app with it.

Schemathesis is imported by the tests that use it, not by this module, and its pytest plugin
is not loaded: through the plugin, every pytest process (the main one and each worker, which
all collect every test) imported it and loaded the document to collect these, 1.3 s of CPU
each, for the one worker that runs them. The tests it builds per operation are the plugin's
own (examples, coverage and fuzzing), one parametrised test each.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from sim_server import ServerSettings, create_app

#: Schemathesis's import, the document and its tests are built once a process (2.5 s of CPU).
pytestmark = pytest.mark.together

#: What the document lists, one test each. Named here, since collecting may not load it: a
#: new route fails test_each_operation_is_driven until it is added.
OPERATIONS = [
    "GET /healthz",
    "GET /jobs",
    "POST /jobs",
    "GET /jobs/{job_id}",
    "GET /jobs/{job_id}/status",
    "GET /metrics",
    "GET /status",
    "GET /v1/dubbing/{job_id}",
    "GET /v2/video_translate/{job_id}",
]


#: Not fuzzed: the vendors' routes. In the simulator's dialect they answer 404 before reading
#: a parameter, and what a generated value meets on the way (routing, the gate) the fuzzing of
#: /jobs/{job_id} meets too. Their coverage cases still run (0.5 s of CPU less each).
NOT_FUZZED = ["GET /v1/dubbing/{job_id}", "GET /v2/video_translate/{job_id}"]


@functools.cache
def _schema() -> Any:
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    # A short long-poll cap: generated requests may ask to wait, and the run must stay fast.
    app = create_app(ServerSettings(auto_create=True, max_wait=0.01), backend="asyncio")
    config = SchemathesisConfig.from_dict(
        {"operations": [{"include-name": NOT_FUZZED, "phases": {"fuzzing": {"enabled": False}}}]}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def test_document_lists_every_route():
    """/openapi.json documents each API route and its methods."""
    paths = _schema().raw_schema["paths"]
    assert set(paths) >= {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/status", "/status", "/healthz"}
    assert set(paths["/jobs"]) >= {"get", "post"}


def test_rate_limit_and_key_answers_are_documented():
    """Every status read documents 429 (the rate limit) and 401 (the API key)."""
    paths = _schema().raw_schema["paths"]
    for path in ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/status", "/status"):
        assert {"401", "429"} <= set(paths[path]["get"]["responses"]), path


def test_each_operation_is_driven():
    """Every operation of the document is one of those the next test drives."""
    assert sorted(result.ok().label for result in _schema().get_all_operations()) == sorted(
        OPERATIONS
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def _call_and_validate(case: Any) -> None:
    case.call_and_validate()


@functools.cache
def _tests() -> dict[str, Any]:
    """Schemathesis's test of each operation, as its plugin makes them: built once, all
    together (built again, the coverage phase finds fewer cases)."""
    from schemathesis.checks import load_all_checks
    from schemathesis.core.result import Ok
    from schemathesis.pytest.lazy import get_all_tests

    load_all_checks()
    tests = {}
    for result in get_all_tests(
        schema=_schema(), test_func=_call_and_validate, settings=None, given_kwargs=None
    ):
        if isinstance(result, Ok):
            operation, test = result.ok()
            tests[operation.label] = test
        else:  # an operation it cannot build a test of: one that fails, naming why
            tests[result.err().label] = result.err().as_failing_test_function()
    return tests


@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_generated_request_breaks_the_server(operation: str):
    """No request schemathesis derives from the document gets a 500 or breaks the document."""
    _tests()[operation]()
