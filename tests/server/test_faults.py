"""Fault injection: each kind as a client sees it, and the sequence fixed by the seed."""

from __future__ import annotations

import httpx
import pytest
import trio

from sim_server._faults import GARBAGE_VARIANTS, FaultInjector
from sim_server._settings import FAULT_KINDS

MIXED = {
    "500": 0.05,
    "502": 0.05,
    "503": 0.05,
    "429": 0.05,
    "slow": 0.05,
    "drop": 0.05,
    "garbage": 0.05,
}


def sequence(seed: int, n: int = 2000) -> list[tuple[str, str | None] | None]:
    injector = FaultInjector(MIXED, seed)
    out = []
    for _ in range(n):
        fault = injector.next()
        out.append(None if fault is None else (fault.kind, fault.variant))
    return out


def test_same_seed_same_sequence():
    """Two injectors with one seed decide the same fault for every request."""
    assert sequence(42) == sequence(42)
    assert sequence(42) != sequence(43)


def test_rates_are_respected():
    """Over many requests each kind occurs at about its rate, garbage in all its variants."""
    seq = sequence(1, 20_000)
    for kind in FAULT_KINDS:
        share = sum(1 for f in seq if f and f[0] == kind) / len(seq)
        assert share == pytest.approx(0.05, abs=0.01), kind
    assert {f[1] for f in seq if f and f[0] == "garbage"} == set(GARBAGE_VARIANTS)
    assert sum(1 for f in seq if f is None) / len(seq) == pytest.approx(0.65, abs=0.02)


def test_no_rates_no_faults():
    """With every rate at zero nothing is ever injected."""
    injector = FaultInjector(dict.fromkeys(FAULT_KINDS, 0.0), 0)
    assert not injector.enabled
    assert all(injector.next() is None for _ in range(1000))


@pytest.mark.parametrize(
    ("kind", "hints", "retry_after"),
    [
        ("500", True, None),
        ("502", True, None),
        ("503", True, "1"),
        ("429", True, "1"),
        ("429", False, None),
    ],
)
async def test_error_faults(autojump_clock, make_sim, kind, hints, retry_after):
    """Error faults answer their status code (503 and 429 with Retry-After, unless
    --no-fault-hints) on status reads."""
    sim = make_sim(**{f"fault_{kind}": 1.0}, fault_hints=hints)
    await sim.create("f", 10)  # creation is never faulted
    for path in ("/jobs/f", "/jobs/f/status", "/status", "/jobs?ids=f"):
        r = await sim.client.get(path)
        assert r.status_code == int(kind), path
        assert r.headers.get("retry-after") == retry_after
        assert r.json()["error"] == "injected_fault"
    assert (await sim.client.get("/healthz")).status_code == 200
    metrics = (await sim.client.get("/metrics")).text
    assert f'sim_faults_injected_total{{kind="{kind}"}} 4.0' in metrics
    assert f'sim_requests_total{{code="{kind}",method="GET",route="/jobs/{{id}}"}} 1.0' in metrics


async def test_slow_fault_delays_then_answers(autojump_clock, make_sim):
    """A slow response arrives --slow-delay seconds late and is otherwise correct."""
    sim = make_sim(fault_slow=1.0, slow_delay=7.0)
    await sim.create("s", 100)
    start = trio.current_time()
    r = await sim.client.get("/jobs/s")
    assert trio.current_time() - start == pytest.approx(7.0)
    assert r.json()["result"] == "pending"


async def test_drop_fault_cuts_the_response(autojump_clock, make_sim):
    """A dropped connection reaches the client as httpx's RemoteProtocolError."""
    sim = make_sim(fault_drop=1.0)
    await sim.create("d", 100)
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await sim.client.get("/jobs/d")


async def test_garbage_variants(autojump_clock, make_sim):
    """Malformed bodies: truncated JSON, a wrong content type, an unknown result value."""
    sim = make_sim(fault_garbage=1.0, seed=3)
    await sim.create("g", 100)
    seen = set()
    for _ in range(30):
        r = await sim.client.get("/jobs/g")
        assert r.status_code == 200
        if r.headers["content-type"] == "text/html":
            seen.add("content_type")
        elif r.text.endswith('"pend'):
            seen.add("truncated")
        else:
            assert r.json()["result"] == "exploded"
            seen.add("unknown_result")
    assert seen == set(GARBAGE_VARIANTS)


async def test_same_seed_same_faults_through_the_app(autojump_clock, make_sim):
    """Two servers with one seed fail the same requests the same way."""
    runs = []
    for _ in range(2):
        sim = make_sim(seed=99, **{f"fault_{k}": v for k, v in MIXED.items()}, slow_delay=0.01)
        await sim.create("x", 1000)
        outcomes = []
        for _ in range(100):  # with this seed, the tenth distinct answer comes at the 53rd
            try:
                r = await sim.client.get("/jobs/x")
                outcomes.append((r.status_code, r.headers["content-type"], len(r.content)))
            except httpx.RemoteProtocolError:
                outcomes.append(("dropped", "", 0))
        runs.append(outcomes)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) >= 7
