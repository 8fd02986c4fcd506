"""Where Python may not write ``.pyc`` files (PYTHONDONTWRITEBYTECODE) into a venv that was
not compiled (``uv run`` makes it so; ``.ci/run`` compiles it), every process a test starts
(servers, vtpoll, load clients, pytest's workers) compiled all it imported again, about 1 s
of CPU each: a third of the suite's. They share one cache instead, this run's alone, outside
the tree and removed when the run ends, as not writing ``.pyc`` files asks.

Imported by tests/conftest.py before anything else it imports, so that what pytest's main
process imports from there on (the app, httpx, trio: 3 s of compiling) goes into the cache
too, and its workers find it there rather than each compile it again.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

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
    CACHE = tempfile.mkdtemp(prefix="vtpoll-tests-pyc-")
    atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
    # For the processes started from now on (xdist's workers too)...
    os.environ["PYTHONPYCACHEPREFIX"] = CACHE
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    # ...and for what this one imports from now on.
    sys.pycache_prefix = CACHE
    sys.dont_write_bytecode = False
