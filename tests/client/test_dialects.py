"""Dialects: declared, loaded from TOML, refused when wrong, and spoken end to end against the
simulation server speaking the vendors' APIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sim_server._jobs import Job
from video_translation_client import (
    DIALECTS,
    Dialect,
    InvalidArgument,
    InvalidResponse,
    JobStatus,
    Outcome,
    RetriesExhausted,
    StatusPollingConfig,
    UnknownStatus,
    VideoTranslationClient,
    load_dialect,
)

from .scripted import Scripted

URL = "http://sim"

#: The issue's example: a service answering numbers, nested.
NUMBERS_TOML = """
status_url = "/api/v1/translate/{id}"
status_field = "Response.JobStatus"
pending = [1, 3, 4, 5, 6]
completed = [8]
error = [2, 7]
auth_header = "X-Token"
auth_scheme = ""                      # "Bearer" sends "Bearer KEY"; "" the key alone
keep = ["Response.ResultVideoUrl"]    # copied into each result
"""


def numbers(status: object, **more: object) -> dict[str, object]:
    return {"Response": {"JobStatus": status, **more}}


def add_jobs(sim, specs: dict[str, tuple[float, str]]) -> None:
    now = trio.current_time()
    for job_id, (duration, outcome) in specs.items():
        sim.state.store.add(Job(job_id, now, duration, outcome))  # type: ignore[arg-type]


# -- declared and refused -------------------------------------------------------------------


def test_a_file_declares_a_dialect(tmp_path: Path):
    """The issue's TOML: nested numbers, the key alone in X-Token, a kept field."""
    path = tmp_path / "acme.toml"
    path.write_text(NUMBERS_TOML)
    dialect = load_dialect(path)
    assert dialect.name == "acme"
    assert dialect.status_path("a/b c") == "/api/v1/translate/a%2Fb%20c"
    assert dialect.auth("k3y") == ("X-Token", "k3y")
    assert dialect.status_of(numbers(4)) is JobStatus.PENDING
    assert dialect.status_of(numbers(8)) is JobStatus.COMPLETED
    assert dialect.status_of(numbers(7)) is JobStatus.ERROR
    assert dialect.status_of(numbers(8.0)) is JobStatus.COMPLETED  # JSON numbers as floats
    body = numbers(8, ResultVideoUrl="https://cdn/x.mp4")
    assert dialect.kept(body) == {"Response.ResultVideoUrl": "https://cdn/x.mp4"}
    assert dialect.kept(numbers(1)) == {"Response.ResultVideoUrl": None}


BASE = {
    "status_url": "/x/{id}",
    "status_field": "state",
    "pending": ["p"],
    "completed": ["c"],
    "error": ["e"],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status_url": "/x/status"}, "status_url must be a path with {id} once"),
        ({"status_url": "x/{id}"}, "status_url must be a path under the base URL"),
        ({"status_url": "/x/{id}/{id}"}, "status_url must be a path with {id} once"),
        ({"status_url": "/x/{job}/{id}"}, "status_url must be a path with no spaces and no"),
        ({"pending": []}, "pending must be a non-empty list of strings or integers"),
        ({"error": ["c"]}, "error must be values listed once (it is also under 'completed')"),
        ({"completed": ["c", "c"]}, "completed must be values listed once"),
        ({"completed": [True]}, "completed must be a list of strings or integers"),
        ({"pending": [1.5]}, "pending must be a list of strings or integers"),
        ({"status_field": "a..b"}, "status_field must be a dotted field name"),
        ({"auth_header": "X Token"}, "auth_header must be an HTTP header name"),
        ({"auth_scheme": "Bearer token"}, "auth_scheme must be a word"),
        ({"keep": ["ok", ""]}, "keep must be a dotted field name"),
        ({"batch_url": "/x"}, "batch_url must be a path with {ids} once"),
        ({"long_poll": "yes"}, "long_poll must be true or false"),
    ],
)
def test_a_wrong_declaration_is_refused_naming_the_key(tmp_path: Path, change, message):
    """Refused at construction, from Python and from a file alike, naming the key."""
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        Dialect(**{**BASE, **change})
    path = tmp_path / "d.toml"
    # TOML's strings, numbers, booleans and arrays of them are written as JSON writes them.
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in {**BASE, **change}.items()))
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dialect(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('status_url = "/x/{id}"\nstatus_field = "s"', "pending must be given in the file"),
        (NUMBERS_TOML + 'stauts = "x"', "stauts must be a key a dialect has"),
        ("status_url = ", "dialect file must be valid TOML"),
        (NUMBERS_TOML + "hook = 1", "hook must be a key a dialect has"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "d.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message) as info:
        load_dialect(path)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_one_line(tmp_path: Path):
    with pytest.raises(InvalidArgument, match="dialect file must be a readable file"):
        load_dialect(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ({"Response": {}}, InvalidResponse, "no status field 'Response.JobStatus'"),
        (numbers([8]), InvalidResponse, "'Response.JobStatus' holds a list, not a status"),
        (numbers({"v": 8}), InvalidResponse, "holds an object, not a status"),
        (numbers("8"), UnknownStatus, "holds '8', which the acme dialect does not list"),
        (numbers(9), UnknownStatus, "holds 9, which the acme dialect does not list"),
    ],
)
async def test_an_answer_the_dialect_cannot_read_is_transient_and_named(
    autojump_clock, body, error, words
):
    """A missing field, a list, an object, a value not listed: a transient InvalidResponse
    (UnknownStatus for a value not listed) naming the field, retried, then the job's failure
    (once the route has shown itself right with a first good answer)."""
    dialect = Dialect(name="acme", **{**_numbers_fields(), "keep": ()})
    server = Scripted([httpx.Response(200, json=numbers(1)), httpx.Response(200, json=body)])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, StatusPollingConfig(max_retries=2), http_client=http, dialect=dialect
        )
        with pytest.raises(RetriesExhausted) as info:
            await client.poll_until_complete("j")
    cause = info.value.__cause__
    assert type(cause) is error
    assert words in str(cause)
    assert len(server.log) == 4


def _numbers_fields() -> dict[str, Any]:
    return {
        "status_url": "/api/v1/translate/{id}",
        "status_field": "Response.JobStatus",
        "pending": (1, 3, 4, 5, 6),
        "completed": (8,),
        "error": (2, 7),
        "auth_header": "X-Token",
        "auth_scheme": "",
    }


async def test_a_hook_reads_what_a_declaration_cannot(autojump_clock):
    """The hook's status wins; None leaves the answer to the declaration."""

    def done_when_url(body: object) -> JobStatus | None:
        if isinstance(body, dict) and body.get("Response", {}).get("ResultVideoUrl"):
            return JobStatus.COMPLETED
        return None

    dialect = Dialect(name="acme", hook=done_when_url, **_numbers_fields())
    assert dialect.status_of(numbers(5, ResultVideoUrl="u")) is JobStatus.COMPLETED
    assert dialect.status_of(numbers(5)) is JobStatus.PENDING


async def test_the_key_goes_in_the_dialects_header_only(autojump_clock):
    """xi-api-key: KEY for elevenlabs, and no Authorization header at all."""
    body = {"dubbing_id": "d", "status": "dubbed", "target_languages": ["es"]}
    server = Scripted([httpx.Response(200, json=body)])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, http_client=http, dialect="elevenlabs", api_key="s3cr3t-key"
        )
        done = await client.poll_until_complete("d")
    [(_, request)] = server.log
    assert request.url.path == "/v1/dubbing/d"
    assert request.headers["xi-api-key"] == "s3cr3t-key"
    assert "authorization" not in request.headers
    assert "prefer" not in request.headers  # the service holds nothing: never asked to
    assert done.kept == {"target_languages": ["es"], "error": None}
    assert "s3cr3t" not in repr(client) + repr(client.dialect) + repr(client.__dict__)


def test_the_original_dialect_keeps_the_job_less_route():
    assert DIALECTS["original"].status_path(None) == "/status"
    assert DIALECTS["original"].status_path("a") == "/jobs/a/status"
    with pytest.raises(InvalidArgument, match="job_id must be given"):
        DIALECTS["heygen"].status_path(None)


# -- spoken end to end, in process ----------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "kept"),
    [
        ("elevenlabs", {"target_languages": ["es", "de"], "error": None}),
        ("heygen", {"data.url": "https://files.sim.test/translated/j1.mp4", "data.message": None}),
    ],
)
async def test_a_vendors_dialect_end_to_end(autojump_clock, make_sim, dialect, kept):
    """The server speaking the vendor's API, the client its dialect: every job its true
    outcome through faults and 429s (ElevenLabs' without Retry-After), the kept fields in
    each result, at a few requests per job."""
    # 30 jobs at 6% of each fault meet about as many as 60 did at 3% (9 500s, 5 429s and 3
    # malformed bodies, against 10-13, 5-7 and 2-5), at half the CPU.
    sim = make_sim(
        dialect=dialect,
        api_key="sekrit",
        fault_500=0.06,
        fault_429=0.06,
        fault_garbage=0.06,
        rate_limit=40,
        seed=5,
    )
    truth = {f"j{i}": ("completed" if i % 5 else "error") for i in range(30)}
    add_jobs(
        sim, {job_id: (5 + i % 7, outcome) for i, (job_id, outcome) in enumerate(truth.items())}
    )
    client = VideoTranslationClient(
        URL,
        StatusPollingConfig(max_retries=10),
        http_client=sim.client,
        dialect=dialect,
        api_key="sekrit",
    )
    results = await client.poll_many(list(truth))
    assert {r.job_id: r.outcome.value for r in results} == truth
    assert results[1].kept == kept
    stats = client.statistics()
    assert stats.requests / len(truth) <= 8


async def test_elevenlabs_429s_without_retry_after_are_flow_control(autojump_clock, make_sim):
    """A rate limit that never says when to come back: no job fails for it, at a bounded
    cost in requests."""
    sim = make_sim(dialect="elevenlabs", rate_limit=5, burst=5)
    add_jobs(sim, {f"j{i}": (3, "completed") for i in range(40)})
    client = VideoTranslationClient(URL, http_client=sim.client, dialect="elevenlabs")
    results = await client.poll_many([f"j{i}" for i in range(40)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    stats = client.statistics()
    assert stats.throttled > 0
    assert stats.requests <= 8 * 40


async def test_a_sim_client_against_a_vendors_server_hears_a_wrong_route(autojump_clock, make_sim):
    """The sim dialect against a server speaking heygen: every job a WrongRoute at once."""
    sim = make_sim(dialect="heygen")
    add_jobs(sim, {"a": (5, "completed"), "b": (5, "completed")})
    client = VideoTranslationClient(URL, http_client=sim.client)
    results = await client.poll_many(["a", "b"])
    assert {type(r.error).__name__ for r in results} == {"WrongRoute"}
