"""The load scripts' smoke tests: a script run in this test process, its Python processes
forked from the suite's zygote (tests/_zygote.py), not started: a server's start costs 1 s of
CPU importing Quart and hypercorn, a client's 0.6 s, and these tests start seventeen. Their
servers and clients are stopped by the scripts, and by the suite's check that nothing is left
running."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests._zygote import Zygote

from .scripts import script


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch, zygote: Zygote) -> Callable[[ModuleType], None]:
    """Makes a load script's Python processes (``python ...``, through ``_common.spawn``)
    children of the zygote; the others (redis-server) it starts as it would."""

    def fork_from(module: ModuleType) -> None:
        common = sys.modules["_common"]  # imported by the script
        started: Callable[..., subprocess.Popen[str]] = common.spawn

        def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
            if argv[0] != sys.executable:
                return started(argv, **kwargs)
            return zygote.python(argv[1:], **kwargs)

        monkeypatch.setattr(common, "spawn", spawn)
        if hasattr(module, "spawn"):  # imported by name
            monkeypatch.setattr(module, "spawn", spawn)

    return fork_from


@pytest.fixture
def run_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], forked: Callable[[ModuleType], None]
) -> Callable[..., tuple[list[dict[str, Any]], str]]:
    """``run_script(NAME, *ARGS)``: ``load/NAME.py ARGS`` (with a seed and plots into the
    test's folder for the workload scripts, its processes forked): its JSON rows and what it
    printed."""

    def run(name: str, *args: str, workload: bool = True) -> tuple[list[dict[str, Any]], str]:
        out = tmp_path / f"{name}.json"
        common = ["--seed", "3", "--plots", str(tmp_path)] if workload else []
        module = script(name)
        forked(module)
        module.main([*args, *common, "--json", str(out)])
        return json.loads(out.read_text()), capsys.readouterr().out

    return run
