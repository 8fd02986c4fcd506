from __future__ import annotations

# First: what is imported after it goes into the run's bytecode cache (see its docstring).
from tests import _bytecode  # noqa: F401

# isort: split
import contextlib
import gc
import itertools
import os
import random
import shutil
import signal
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import trio
from hypothesis import settings

from tests._zygote import Zygote
from tests.helpers import spawn, stop

if TYPE_CHECKING:
    from tests.sim import Sim

# The suite must give the same verdict on every run: hypothesis explores the same examples
# each time, and keeps no database of past failures between runs.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

#: Every process this run starts inherits this variable, which is how one left running is
#: found at the end, even after its parent died and it was handed to init.
RUN_MARK = "VTPOLL_TEST_RUN"
os.environ[RUN_MARK] = uuid.uuid4().hex

T = TypeVar("T")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: two workers a core (at most four: ``--maxprocesses``). A third of the
    suite's time is spent waiting on servers and processes, and a worker waiting leaves its
    core to another. On 2 cores with one kept busy, a clean clone: 62-67 s with four workers
    against 75 s with three and 65 s with five (2026-12-03, the long tests first, one zygote
    for the run; before, 84-91 s with four against 104-106 s with three and 92 s with five)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the count asked for, read by xdist's own hook
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 * (cores or 1)


def long_first(items: list[T], workers: int, unit: Callable[[T], object]) -> list[T]:
    """``items`` with the units (``unit(item)``: None for an item that may go anywhere, else
    its unit's key) at the heads of the shares worksteal first hands out, dealt round in the
    order they come, each unit's items together: worker k gets the k-th of ``workers``
    contiguous shares, each ``left // workers left`` items, and a worker stealing takes the
    tail of another's queue, so the heads stay where they are. The rest keep their order."""
    units: dict[object, list[T]] = {}
    free: list[T] = []
    for item in items:
        key = unit(item)
        if key is None:
            free.append(item)
        else:
            units.setdefault(key, []).append(item)
    heads = list(units.values())
    rest = iter(free)
    ordered: list[T] = []
    for k in range(workers):
        share = (len(items) - len(ordered)) // (workers - k)
        dealt = [item for head in heads[k::workers] for item in head]
        ordered += dealt
        ordered += itertools.islice(rest, max(0, share - len(dealt)))
    ordered += rest
    return ordered


def _unit(item: pytest.Item) -> object:
    """A test marked ``long`` is a unit of its own; those marked ``together``, one per
    module."""
    if item.get_closest_marker("long"):
        return item.nodeid
    if item.get_closest_marker("together"):
        return item.path
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, a test marked ``long`` (seconds of wall time: processes, real servers)
    starts first in a worker's share (:func:`long_first`), so that none starts last and holds
    the run's end while the other workers idle (one did, by 10 s); tests marked ``together``
    (a costly set-up in each process that runs one) start first in one share, one after
    another, rather than be stolen by every worker in turn (schemathesis's tests cost 15 s of
    CPU spread over four, against 6.6 s in one). Every worker computes the same order from the
    same count, as xdist requires."""
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers > 1:
        items[:] = long_first(items, workers, _unit)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (the modules, the tests) lives until the end of the run: left out
    of the collector's passes from now on. The fleet tests collect after each test (see
    tests/fleet/conftest.py), and each full pass went over all of it: 0.1 s of CPU a time,
    nine in ten of it on objects that cannot be garbage."""
    gc.collect()
    gc.freeze()


def _marked_processes() -> list[int]:
    """Processes other than this one that carry this run's mark (Linux: /proc)."""
    mark = f"{RUN_MARK}={os.environ[RUN_MARK]}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if int(entry.name) != os.getpid() and mark in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def repeatable_jitter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client made without ``random=`` draws its jitter from a generator seeded by the
    test's name, so that a test sees the same delays on every run. (Tests meant to hold for
    any draw say so with seeds of their own.)"""
    from video_translation_client import _client as client_module

    seed = zlib.crc32(request.node.nodeid.encode())
    monkeypatch.setattr(client_module, "default_random", lambda: random.Random(seed).random)


@pytest.fixture(autouse=True)
def repeatable_scheduling(request: pytest.FixtureRequest) -> None:
    """Trio runs the tasks ready at one instant in an order it draws at random; on the virtual
    clock that order is all that differs between two runs of a test, and a schedule that learns
    from whichever jobs answer first can differ by more than a test's margin. Seeded by the
    test's name, as the jitter is (the generator is trio's own, which its Hypothesis plugin
    seeds the same way; absent, the order stays random)."""
    scheduler = getattr(trio._core._run, "_r", None)
    if isinstance(scheduler, random.Random):
        scheduler.seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Every process a test starts is stopped by the end of the run, whatever failed."""
    yield
    leftovers = {}
    for pid in _marked_processes():
        with contextlib.suppress(OSError):
            leftovers[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running (now killed): {leftovers}"


#: Where the run's zygote listens, for the workers of an xdist run.
SHARED_ZYGOTE = "VTPOLL_TESTS_ZYGOTE"
_shared_zygote: list[tuple[Zygote, str]] = []


def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """In the main process of an xdist run, before its workers start: the zygote they share
    (see ``tests._zygote``). A zygote starts with the standard library alone; what it imports
    for its children's programs, it imports once for the run."""
    folder = tempfile.mkdtemp(prefix="vtpoll-zygote-")
    path = os.path.join(folder, "zygote.sock")
    _shared_zygote.append((Zygote.start(spawn, listen=path), folder))
    os.environ[SHARED_ZYGOTE] = path


def _end(made: Zygote) -> None:
    """Close the connection, and stop the zygote if it is this process's own."""
    try:
        made.close()
    finally:
        if made.proc is not None:
            stop(made.proc)


def pytest_unconfigure(config: pytest.Config) -> None:
    for made, folder in _shared_zygote:
        try:
            _end(made)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    """Where this test process's ``vtpoll`` processes are forked from (see ``tests._zygote``):
    the run's, or one of its own if it has none; the connection (and a zygote of its own)
    ended before the check that nothing is left running."""
    shared = os.environ.get(SHARED_ZYGOTE)
    made = Zygote.join(shared) if shared else Zygote.start(spawn)
    try:
        yield made
    finally:
        _end(made)


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Sim]]:
    """``make_sim(**settings)``: a :class:`tests.sim.Sim`, closed after the test."""
    from sim_server import ServerSettings
    from tests.sim import Sim

    made: list[Sim] = []

    def make(**settings: Any) -> Sim:
        settings.setdefault("error_rate", 0.0)
        sim = Sim(ServerSettings(**settings))
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.client.aclose()
        sim.state.store.close()
