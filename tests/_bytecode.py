"""Where Python may not write ``.pyc`` files (PYTHONDONTWRITEBYTECODE) into a venv that was
not compiled (``uv run`` makes it so; ``.ci/run`` compiles it), every process a test starts
(servers, vtpoll, load clients, pytest's workers) compiled all it imported again, about 1 s
of CPU each: a third of the suite's. They share one cache instead, this run's alone, outside
the tree and removed when the run ends, as not writing ``.pyc`` files asks.

Loaded as the first plugin pyproject's addopts names (and imported by tests/conftest.py
before anything else, for a run that names no plugins), so that what pytest's main process
imports from there on (the plugins, then the app, httpx, trio: 4 s of compiling) goes into
the cache too, and its workers find it there rather than each compile it again.

What only collection imports (the test modules, whose asserts pytest rewrites: 1.3 s of CPU a
worker) the main process does not: its workers collect one at a time, the first compiling it
into the cache and the others reading it back (2.5 s of CPU less a worker). They started
together, and compiled the same modules side by side. A second worker now starts its tests
the later by the first's collection, when the machine has a core for each. In a compiled venv
only collection uses the cache, which would otherwise stand in for the venv's own ``.pyc``
files: four workers collected with 8.6-9.1 s of CPU instead of 12.2-12.9 s (3.2 s for the
first). The project's own packages, installed editable, lie outside site-packages, which is all
``uv sync --compile-bytecode`` compiles: ``.ci/run`` compiles them itself.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

_PREFIX = "vtpoll-tests-pyc-"
#: The run's cache, for its workers.
_CACHE_VARIABLE = "VTPOLL_TESTS_PYC"

#: This run's cache, in the process that made it; None elsewhere (its workers and the
#: processes of its tests inherit it through PYTHONPYCACHEPREFIX).
CACHE: str | None = None


def _venv_compiled() -> bool:
    """Whether the venv has its own ``.pyc`` files (looked at before importing httpx)."""
    spec = importlib.util.find_spec("httpx")
    assert spec is not None
    assert spec.origin is not None
    return Path(importlib.util.cache_from_source(spec.origin)).exists()


if "PYTHONDONTWRITEBYTECODE" in os.environ and _CACHE_VARIABLE not in os.environ:
    CACHE = tempfile.mkdtemp(prefix=_PREFIX)
    atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
    os.environ[_CACHE_VARIABLE] = CACHE  # for the workers
    # A cache prefix replaces the __pycache__ folders: in a compiled venv, everything would be
    # compiled again. There, only collection uses it (see pytest_collection).
    if not _venv_compiled():
        # For the processes started from now on (xdist's workers too)...
        os.environ["PYTHONPYCACHEPREFIX"] = CACHE
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        # ...and for what this one imports from now on.
        sys.pycache_prefix = CACHE
        sys.dont_write_bytecode = False


#: What the test modules import from the venv, the plugins aside: imported before collection
#: sets the run's cache, or the first worker would compile it all into the cache (coredis
#: brings beartype, 360 modules: 2 s).
_IMPORTED_BY_TESTS = ("coredis", "hypercorn.trio", "prometheus_client", "quart", "httpx")

#: In a cache of the run's (the worker's, inherited): held by the worker collecting.
_LOCK = "collecting.lock"


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    cache = os.environ.get(_CACHE_VARIABLE)
    if cache is None or CACHE is not None or not hasattr(session.config, "workerinput"):
        return (yield)
    everything = sys.pycache_prefix == cache  # an uncompiled venv: see above
    if not everything:
        # From the venv's own .pyc files, before the cache is set, and before the lock: the
        # workers read them side by side.
        for name in _IMPORTED_BY_TESTS:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    with open(Path(cache) / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
        if everything:
            return (yield)
        before = sys.pycache_prefix, sys.dont_write_bytecode
        sys.pycache_prefix, sys.dont_write_bytecode = cache, False
        try:
            return (yield)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = before
