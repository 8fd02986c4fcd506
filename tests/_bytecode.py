"""Where Python may not write ``.pyc`` files (PYTHONDONTWRITEBYTECODE) into a venv that was
not compiled (``uv run`` makes it so; ``.ci/run`` compiles it), every process a test starts
(servers, vtpoll, load clients, pytest's workers) compiled all it imported again, about 1 s
of CPU each: a third of the suite's. They share one cache instead, this run's alone, outside
the tree and removed when the run ends, as not writing ``.pyc`` files asks.

Loaded as the first plugin pyproject's addopts names (and imported by tests/conftest.py
before anything else, for a run that names no plugins), so that what pytest's main process
imports from there on (the plugins, then the app, httpx, trio: 4 s of compiling) goes into
the cache too, and its workers find it there rather than each compile it again.

What only collection imports (the test modules; coredis and beartype for the fleet's) the
main process does not: its workers collect one at a time, the first compiling it into the
cache and the others reading it back (2.5 s of CPU less a worker). They started together, and
compiled the same modules side by side. A second worker now starts its tests the later by the
first's collection, when the machine has a core for each.
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

_PREFIX = "vtpoll-tests-pyc-"

#: This run's cache, in the process that made it; None elsewhere (its workers and the
#: processes of its tests inherit it through PYTHONPYCACHEPREFIX).
CACHE: str | None = None


def _venv_compiled() -> bool:
    """Whether the venv has its own ``.pyc`` files (looked at before importing httpx)."""
    spec = importlib.util.find_spec("httpx")
    assert spec is not None
    assert spec.origin is not None
    return Path(importlib.util.cache_from_source(spec.origin)).exists()


# A cache prefix replaces the __pycache__ folders: in a compiled venv it would compile
# everything again.
if "PYTHONDONTWRITEBYTECODE" in os.environ and not _venv_compiled():
    CACHE = tempfile.mkdtemp(prefix=_PREFIX)
    atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
    # For the processes started from now on (xdist's workers too)...
    os.environ["PYTHONPYCACHEPREFIX"] = CACHE
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    # ...and for what this one imports from now on.
    sys.pycache_prefix = CACHE
    sys.dont_write_bytecode = False


#: In a cache of the run's (the worker's, inherited): held by the worker collecting.
_LOCK = "collecting.lock"


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    prefix = sys.pycache_prefix
    if prefix is None or not Path(prefix).name.startswith(_PREFIX) or CACHE is not None:
        return (yield)
    if not hasattr(session.config, "workerinput"):
        return (yield)
    with open(Path(prefix) / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
        return (yield)
