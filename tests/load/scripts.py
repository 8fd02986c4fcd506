"""A load script (``load/NAME.py``) imported as a module of the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LOAD = Path(__file__).parents[2] / "load"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"load_{name}", LOAD / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass of the module looks it up there
    spec.loader.exec_module(module)
    return module
