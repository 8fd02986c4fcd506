"""The server's HTTP behaviour, in process on trio's virtual clock."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

from sim_server import Job
from sim_server._settings import MAX_BODY_BYTES
from sim_server.testing import SimTransport


async def test_create_returns_job_and_location(autojump_clock, make_sim):
    """POST /jobs answers 201 with the job and a Location header."""
    sim = make_sim()
    r = await sim.client.post("/jobs", json={"job_id": "a.1", "duration": 3})
    assert r.status_code == 201
    assert r.headers["location"] == "/jobs/a.1"
    assert r.json() == {
        "job_id": "a.1",
        "result": "pending",
        "progress": 0.0,
        "elapsed": 0.0,
        "eta": 3.0,
    }


async def test_create_defaults_to_completion_time_and_generated_id(autojump_clock, make_sim):
    """A bare POST makes a job with a generated ID and the configured completion time."""
    sim = make_sim(completion_time=7.5)
    r = await sim.client.post("/jobs")
    assert r.status_code == 201
    body = r.json()
    assert body["job_id"].startswith("job-")
    assert body["eta"] == 7.5


async def test_create_existing_id_conflicts(autojump_clock, make_sim):
    """Creating an ID twice is 409 naming the ID."""
    sim = make_sim()
    await sim.create("dup", 1)
    r = await sim.client.post("/jobs", json={"job_id": "dup"})
    assert r.status_code == 409
    assert r.json() == {"error": "job_exists", "detail": "a job with ID 'dup' already exists"}


async def test_job_goes_pending_to_outcome_at_exact_second_and_stays(autojump_clock, make_sim):
    """The job is pending until created+duration, then its outcome, forever after."""
    sim = make_sim()
    start = trio.current_time()
    await sim.create("j", 10, "error")
    await trio.sleep_until(start + 9.999)
    r = await sim.client.get("/jobs/j")
    assert r.json()["result"] == "pending"
    assert r.json()["progress"] == pytest.approx(0.9999, abs=1e-4)
    await trio.sleep_until(start + 10)
    assert (await sim.client.get("/jobs/j")).json() == {
        "job_id": "j",
        "result": "error",
        "progress": 1.0,
        "elapsed": 10.0,
        "eta": 0.0,
    }
    await trio.sleep(3600)
    assert (await sim.client.get("/jobs/j")).json()["result"] == "error"


async def test_pending_answers_carry_retry_hints(autojump_clock, make_sim):
    """Pending answers say when to ask again: whole seconds and precise milliseconds."""
    sim = make_sim()
    start = trio.current_time()
    await sim.create("h", 4.2)
    await trio.sleep_until(start + 1.0)
    r = await sim.client.get("/jobs/h")
    assert r.headers["retry-after"] == "4"
    assert r.headers["retry-after-ms"] == "3200"
    await trio.sleep_until(start + 4.2)
    r = await sim.client.get("/jobs/h")
    assert "retry-after" not in r.headers
    assert "retry-after-ms" not in r.headers


async def test_long_poll_wakes_at_completion(autojump_clock, make_sim):
    """Prefer: wait=N holds a pending request and answers the moment the job completes."""
    sim = make_sim(max_wait=30)
    start = trio.current_time()
    await sim.create("lp", 5)
    r = await sim.client.get("/jobs/lp", headers={"Prefer": "wait=20"})
    assert trio.current_time() - start == pytest.approx(5.0)
    assert r.json()["result"] == "completed"
    assert r.headers["preference-applied"] == "wait=20"


async def test_long_poll_times_out_pending_with_hints(autojump_clock, make_sim):
    """A hold that ends before completion answers pending, with hints, after N seconds."""
    sim = make_sim(max_wait=30)
    start = trio.current_time()
    await sim.create("slow", 100)
    r = await sim.client.get("/jobs/slow", headers={"Prefer": "respond-async, wait=3"})
    assert trio.current_time() - start == pytest.approx(3.0)
    assert r.json()["result"] == "pending"
    assert r.headers["retry-after-ms"] == "97000"
    assert r.headers["preference-applied"] == "wait=3"


async def test_long_poll_capped_by_max_wait(autojump_clock, make_sim):
    """The hold never exceeds the server's --max-wait, and says the wait it applied."""
    sim = make_sim(max_wait=2)
    start = trio.current_time()
    await sim.create("cap", 100)
    r = await sim.client.get("/jobs/cap", headers={"Prefer": "wait=60"})
    assert trio.current_time() - start == pytest.approx(2.0)
    assert r.headers["preference-applied"] == "wait=2"


async def test_long_poll_off_when_max_wait_zero(autojump_clock, make_sim):
    """With --max-wait 0 the preference is ignored: answered at once, nothing applied."""
    sim = make_sim(max_wait=0)
    start = trio.current_time()
    await sim.create("off", 100)
    r = await sim.client.get("/jobs/off", headers={"Prefer": "wait=60"})
    assert trio.current_time() == start
    assert "preference-applied" not in r.headers


@pytest.mark.parametrize(
    "prefer", ["wait=abc", "wait=-1", "wait=inf", "wait", "", "=,;", "wait=nan"]
)
async def test_malformed_prefer_is_ignored(autojump_clock, make_sim, prefer):
    """A Prefer header that is not a valid wait is ignored, never an error."""
    sim = make_sim()
    await sim.create("p", 100)
    start = trio.current_time()
    r = await sim.client.get("/jobs/p", headers={"Prefer": prefer})
    assert r.status_code == 200
    assert trio.current_time() == start
    assert "preference-applied" not in r.headers


async def test_thousands_of_long_polls_all_wake_on_time(autojump_clock, make_sim):
    """500 held requests each wake exactly when their own job completes."""
    sim = make_sim(max_wait=60)
    start = trio.current_time()
    for i in range(500):
        sim.state.store.add(Job(f"m{i}", start, 1 + (i % 50) / 10, "completed"))
    woke: dict[int, float] = {}

    async def hold(i: int) -> None:
        r = await sim.client.get(f"/jobs/m{i}", headers={"Prefer": "wait=60"})
        assert r.json()["result"] == "completed"
        woke[i] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        for i in range(500):
            nursery.start_soon(hold, i)
        await trio.testing.wait_all_tasks_blocked()
        assert sim.metric("sim_long_polls_held") == 500
    assert all(woke[i] == pytest.approx(1 + (i % 50) / 10) for i in range(500))
    assert sim.metric("sim_long_polls_held") == 0


async def test_batch_status_lists_unknown_apart(autojump_clock, make_sim):
    """GET /jobs?ids= answers known jobs in order and lists unknown IDs apart, deduplicated."""
    sim = make_sim()
    await sim.create("a", 1)
    await sim.create("b", 100)
    await trio.sleep(2)
    r = await sim.client.get("/jobs", params={"ids": "b,zz,a,b"})
    assert r.status_code == 200
    body = r.json()
    assert [(j["job_id"], j["result"]) for j in body["jobs"]] == [
        ("b", "pending"),
        ("a", "completed"),
    ]
    assert body["unknown"] == ["zz"]
    assert r.headers["retry-after-ms"] == "98000"


async def test_batch_limit_is_100(autojump_clock, make_sim):
    """100 IDs are fine; 101 is a 400 that states the limit."""
    sim = make_sim(auto_create=True)
    ok = await sim.client.get("/jobs", params={"ids": ",".join(f"x{i}" for i in range(100))})
    assert ok.status_code == 200
    assert len(ok.json()["jobs"]) == 100
    r = await sim.client.get("/jobs", params={"ids": ",".join(f"x{i}" for i in range(101))})
    assert r.status_code == 400
    assert r.json()["detail"] == "at most 100 job IDs per batch, got 101"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("", "the ids query parameter is required: ?ids=a,b,c"),
        ("?ids=", "the ids query parameter names no job ID"),
        ("?ids=ok,bad%20id", "1 invalid job ID(s): 'bad id': job IDs are 1 to 128 characters"),
    ],
)
async def test_batch_bad_queries(autojump_clock, make_sim, query, detail):
    """Batch requests without usable IDs get a 400 naming the problem."""
    sim = make_sim()
    r = await sim.client.get("/jobs" + query)
    assert r.status_code == 400
    assert r.json()["detail"].startswith(detail)


async def test_batch_long_poll_wakes_at_first_completion(autojump_clock, make_sim):
    """A held batch answers when the first of its jobs completes."""
    sim = make_sim()
    start = trio.current_time()
    await sim.create("b1", 9)
    await sim.create("b2", 4)
    r = await sim.client.get("/jobs?ids=b1,b2", headers={"Prefer": "wait=30"})
    assert trio.current_time() - start == pytest.approx(4.0)
    assert [j["result"] for j in r.json()["jobs"]] == ["pending", "completed"]


async def test_original_format_routes(autojump_clock, make_sim):
    """/jobs/{id}/status and /status answer {"result": ...}; /status starts with the server."""
    sim = make_sim(completion_time=20)
    start = trio.current_time()
    await sim.create("o", 5, "error")
    assert (await sim.client.get("/jobs/o/status")).json() == {"result": "pending"}
    assert (await sim.client.get("/status")).json() == {"result": "pending"}
    await trio.sleep_until(start + 5)
    assert (await sim.client.get("/jobs/o/status")).json() == {"result": "error"}
    await trio.sleep_until(start + 20)
    assert (await sim.client.get("/status")).json() == {"result": "completed"}


async def test_default_job_error_rate_one_ends_in_error(autojump_clock, make_sim):
    """/status's default job follows the configured error rate."""
    sim = make_sim(completion_time=1, error_rate=1.0)
    await trio.sleep(1)
    assert (await sim.client.get("/status")).json() == {"result": "error"}


@pytest.mark.parametrize("bad_id", ["a b", "x" * 129, "caf\u00e9", "a%3Fb", "a;b"])
async def test_invalid_job_ids_are_400(autojump_clock, make_sim, bad_id):
    """IDs outside [A-Za-z0-9._:-]{1,128} get a 400 that states the rule."""
    sim = make_sim()
    r = await sim.client.get(f"/jobs/{bad_id}")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_job_id"
    assert "1 to 128 characters" in r.json()["detail"]


async def test_path_traversal_ids_never_reach_other_routes(autojump_clock, make_sim):
    """An encoded slash or dot-dot in an ID is a 404/400 JSON answer, never another route."""
    sim = make_sim(api_key="k")
    for path in ["/jobs/..%2Fmetrics", "/jobs/a%2Fb", "/jobs/%2E%2E"]:
        r = await sim.client.get(path, headers={"X-Api-Key": "k"})
        assert r.status_code in (400, 404), path
        assert r.headers["content-type"] == "application/json"


async def test_unknown_job_is_json_404(autojump_clock, make_sim):
    """An unknown ID is a 404 with a JSON body naming it."""
    sim = make_sim()
    r = await sim.client.get("/jobs/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "job_not_found", "detail": "no job with ID 'nope'"}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{not json", 400, "the request body is not valid JSON"),
        (b"[1, 2]", 422, "the request body must be a JSON object"),
        (b'{"duration": -1}', 422, "duration: Input should be greater than or equal to 0"),
        (b'{"duration": 1e9}', 422, "duration: Input should be less than or equal to 604800"),
        (b'{"duration": NaN}', 422, "duration: Input should be a finite number"),
        (b'{"duration": "soon"}', 422, "duration: Input should be a valid number"),
        (b'{"outcome": "maybe"}', 422, "outcome: Input should be 'completed' or 'error'"),
        (b'{"job_id": "../x"}', 422, "job_id: String should match pattern"),
        (b'{"color": "red"}', 422, "color: Extra inputs are not permitted"),
    ],
)
async def test_bad_creation_bodies(autojump_clock, make_sim, body, status, detail):
    """Bad creation bodies get a JSON 4xx naming the problem, never a 500."""
    sim = make_sim()
    r = await sim.client.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert r.json()["detail"].startswith(detail)


async def test_body_over_cap_is_413(autojump_clock, make_sim):
    """A body over the size cap is refused with a JSON 413."""
    sim = make_sim()
    r = await sim.client.post("/jobs", content=b" " * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413
    assert r.json()["error"] == "request_entity_too_large"


async def test_wrong_method_is_json_405(autojump_clock, make_sim):
    """A wrong method is a JSON 405 that keeps the Allow header."""
    sim = make_sim()
    r = await sim.client.delete("/jobs/x")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    assert r.json()["error"] == "method_not_allowed"


async def test_auto_create_is_deterministic_per_seed_and_id(autojump_clock, make_sim):
    """--auto-create makes unknown IDs with a duration and outcome fixed by seed and ID."""
    first = make_sim(auto_create=True, seed=7, completion_time=10, error_rate=0.5)
    second = make_sim(auto_create=True, seed=7, completion_time=10, error_rate=0.5)
    other = make_sim(auto_create=True, seed=8, completion_time=10, error_rate=0.5)
    ids = [f"auto-{i}" for i in range(40)]
    for sim in (first, second, other):
        for job_id in ids:
            assert (await sim.client.get(f"/jobs/{job_id}")).status_code == 200

    def fates(sim):
        return [(sim.state.store.get(i).duration, sim.state.store.get(i).outcome) for i in ids]

    assert fates(first) == fates(second)
    assert fates(first) != fates(other)
    assert all(5 <= d <= 15 for d, _ in fates(first))
    assert {o for _, o in fates(first)} == {"completed", "error"}


async def test_healthz_and_metrics(autojump_clock, make_sim):
    """/healthz answers ok; /metrics counts requests, checks per job, long-polls and creations."""
    sim = make_sim()
    await sim.create("m", 2)
    await sim.client.get("/jobs/m")
    await sim.client.get("/jobs/m", headers={"Prefer": "wait=5"})
    await sim.client.get("/jobs/m")
    await sim.client.get("/jobs/none")
    assert (await sim.client.get("/healthz")).json() == {"status": "ok", "jobs": 1}
    text = (await sim.client.get("/metrics")).text
    assert 'sim_requests_total{code="200",method="GET",route="/jobs/{id}"} 3.0' in text
    assert 'sim_requests_total{code="404",method="GET",route="/jobs/{id}"} 1.0' in text
    assert "sim_status_checks_total 3.0" in text
    # The job was first seen final on its second check.
    assert 'sim_status_checks_per_job_bucket{le="1.0"} 0.0' in text
    assert 'sim_status_checks_per_job_bucket{le="2.0"} 1.0' in text
    assert "sim_long_polls_total 1.0" in text
    assert "sim_long_polls_held 0.0" in text
    assert 'sim_jobs_created_total{how="post"} 1.0' in text


async def test_api_key_required_on_api_routes(autojump_clock, make_sim):
    """With an API key, API routes need Bearer or X-Api-Key; health and metrics stay open."""
    sim = make_sim(api_key="s3cret")
    assert (await sim.client.post("/jobs", json={"job_id": "k"})).status_code == 401
    r = await sim.client.post(
        "/jobs", json={"job_id": "k"}, headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 201
    assert (await sim.client.get("/jobs/k", headers={"X-Api-Key": "s3cret"})).status_code == 200
    for wrong in (
        {"X-Api-Key": "s3cre"},
        {"Authorization": "Basic s3cret"},
        {"X-Api-Key": b"\xe9"},
    ):
        r = await sim.client.get("/jobs/k", headers=wrong)
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "detail": "missing or wrong API key"}
    assert (await sim.client.get("/healthz")).status_code == 200
    assert (await sim.client.get("/metrics")).status_code == 200


async def test_api_key_never_logged(autojump_clock, make_sim, caplog):
    """The key appears in no log record, whatever the request."""
    caplog.set_level(logging.DEBUG)
    sim = make_sim(api_key="top-secret-key")
    await sim.client.get("/jobs/x", headers={"X-Api-Key": "top-secret-key"})
    await sim.client.get("/jobs/x", headers={"Authorization": "Bearer top-secret-key-wrong"})
    assert "top-secret" not in caplog.text
    assert "top-secret" not in repr(sim.state.settings)


async def test_rate_limit_refuses_with_headers_and_refills(autojump_clock, make_sim):
    """Past the burst, 429 with Retry-After and RateLimit headers; a token per 1/rate s."""
    sim = make_sim(rate_limit=2, burst=3)
    await sim.create("r", 100)  # creation is not limited: status reads are
    codes = [(await sim.client.get("/jobs/r")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await sim.client.get("/jobs/r")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.headers["retry-after-ms"] == "500"
    assert r.headers["ratelimit-policy"] == '"default";q=2;w=1'
    assert r.headers["ratelimit"] == '"default";r=0;t=1'
    assert r.json()["detail"] == "over the rate limit of 2 requests/s"
    await trio.sleep(0.5)
    ok = await sim.client.get("/jobs/r")
    assert ok.status_code == 200
    assert ok.headers["ratelimit"] == '"default";r=0;t=2'
    assert "sim_rate_limited_total 2.0" in (await sim.client.get("/metrics")).text


async def test_rate_limit_is_per_address_whatever_key_is_sent(autojump_clock, make_sim):
    """Without API keys configured, each client address has its own bucket: a new, unchecked
    X-Api-Key on every request gets no fresh bucket."""
    sim = make_sim(rate_limit=1, burst=1)
    await sim.create("r", 100)
    codes = [
        (await sim.client.get("/jobs/r", headers={"X-Api-Key": f"random-{i}"})).status_code
        for i in range(5)
    ]
    assert codes == [200, 429, 429, 429, 429]
    elsewhere = httpx.AsyncClient(
        transport=SimTransport(sim.app, client=("127.0.0.2", 40000)), base_url="http://sim"
    )
    async with elsewhere:
        assert (await elsewhere.get("/jobs/r")).status_code == 200


async def test_rate_limit_is_per_key_when_keys_are_configured(autojump_clock, make_sim):
    """With an API key, its holders share one bucket, from any address; a wrong key is
    refused before it can take a token."""
    sim = make_sim(rate_limit=1, burst=1, api_key="s3cret")
    good = {"X-Api-Key": "s3cret"}
    await sim.client.post("/jobs", json={"job_id": "r", "duration": 100}, headers=good)
    assert (await sim.client.get("/jobs/r", headers={"X-Api-Key": "wrong"})).status_code == 401
    assert (await sim.client.get("/jobs/r", headers=good)).status_code == 200
    elsewhere = httpx.AsyncClient(
        transport=SimTransport(sim.app, client=("127.0.0.2", 40000)), base_url="http://sim"
    )
    async with elsewhere:
        assert (await elsewhere.get("/jobs/r", headers=good)).status_code == 429


async def test_without_hints_a_pending_job_says_nothing_of_when(autojump_clock, make_sim):
    """--no-hints: no Retry-After, no Retry-After-Ms, no eta, on one job and on a batch; a
    429's Retry-After stays, as flow control."""
    sim = make_sim(hints=False, rate_limit=1.0)
    await sim.create("h", 4.0)
    r = await sim.client.get("/jobs/h")
    assert r.status_code == 200
    assert "eta" not in r.json()
    assert r.json()["result"] == "pending"
    assert "retry-after" not in r.headers
    assert "retry-after-ms" not in r.headers
    throttled = await sim.client.get("/jobs?ids=h")
    assert throttled.status_code == 429
    assert "retry-after" in throttled.headers
    await trio.sleep(1.0)
    batch = await sim.client.get("/jobs?ids=h")
    assert "eta" not in batch.json()["jobs"][0]
    assert "retry-after" not in batch.headers


async def test_without_batch_the_batch_route_is_an_unknown_route(autojump_clock, make_sim):
    """--no-batch: GET /jobs?ids= answers as a route that does not exist does; creating jobs
    and single status reads still work."""
    sim = make_sim(batch=False)
    await sim.create("b", 1.0)
    missing = await sim.client.get("/no-such-route")
    r = await sim.client.get("/jobs?ids=b")
    assert r.status_code == 404
    assert r.json() == missing.json()
    assert (await sim.client.get("/jobs/b")).status_code == 200


async def test_a_default_client_works_against_a_plain_server(autojump_clock, make_sim):
    """Against a server like the original (no hints, no batch, no long-poll), a client with
    every default still sees each job's true outcome."""
    from sim_server._cli import PLAIN
    from video_translation_client import VideoTranslationClient

    sim = make_sim(**PLAIN)
    for i in range(20):
        await sim.create(f"p{i}", 1.0 + i / 4, "error" if i % 5 == 0 else "completed")
    client = VideoTranslationClient("http://sim", http_client=sim.client)
    results = await client.poll_many([f"p{i}" for i in range(20)])
    assert [r.outcome.value for r in results] == [
        "error" if i % 5 == 0 else "completed" for i in range(20)
    ]
