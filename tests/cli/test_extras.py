"""``vtpoll`` installed without an extra it needs says which one, in one line, exit 2.

Each case runs in a fresh interpreter whose import system refuses the extra's modules, as a
plain ``pip install video-translation-client`` (no ``cli``) or one without ``fleet`` would.
The command lines of one case run in one interpreter, one after the other.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Run vtpoll.main(argv) for each argv of sys.argv[2] (JSON) with the modules of sys.argv[1]
#: (comma-separated) not installed; print each run's [exit code, stdout, stderr] as JSON, then
#: the server's frameworks that the runs imported.
WITHOUT = """
import contextlib, io, json, sys

blocked = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
import vtpoll

runs = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            vtpoll.main(argv)
        except SystemExit as exit:
            code = exit.code
    runs.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(runs))
print(json.dumps(sorted({"hypercorn", "quart"} & sys.modules.keys())))
"""


def vtpoll_without(modules: str, *argvs: list[str]) -> list[tuple[int, str, str]]:
    """Each command line's exit code, output and error output, with ``modules`` missing."""
    return runs_without(modules, *argvs)[0]


def runs_without(modules: str, *argvs: list[str]) -> tuple[list[tuple[int, str, str]], list[str]]:
    """:func:`vtpoll_without`, and which of Quart and hypercorn the runs imported."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, modules, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    runs, imported = map(json.loads, done.stdout.splitlines()[-2:])
    return [(code, out, err) for code, out, err in runs], imported


def needs(what: str, extra: str) -> str:
    return f'{what} needs the "{extra}" extra: pip install "video-translation-client[{extra}]"\n'


def test_without_click_vtpoll_names_the_cli_extra():
    """With no click, any vtpoll command line is one line naming the cli extra, exit 2."""
    runs = vtpoll_without("click", ["watch", "--help"], ["--help"], [])
    assert runs == [(2, "", needs("vtpoll", "cli"))] * 3


def test_without_rich_a_command_names_the_cli_extra():
    """A command whose own module needs a missing part of the cli extra names that extra."""
    runs = vtpoll_without("rich", ["watch", "job-1"])
    assert runs == [(2, "", "vtpoll: error: " + needs("'vtpoll watch'", "cli"))]


def test_without_coredis_fleet_names_the_fleet_extra_and_the_help_still_works():
    """With no coredis, every fleet command line is one line naming the fleet extra, exit 2;
    'vtpoll --help' still works and says that fleet needs it, without importing the server's
    Quart and hypercorn (a third of a second) to list 'serve'."""
    fleet = [["fleet"], ["fleet", "--help"], ["fleet", "submit", "a"]]
    runs, imported = runs_without("coredis", *fleet, ["--help"])
    *refused, (code, out, err) = runs
    assert refused == [(2, "", "vtpoll: error: " + needs("'vtpoll fleet'", "fleet"))] * 3
    assert (code, err) == (0, "")
    assert 'fleet   (needs the "fleet" extra)' in out
    assert "watch" in out
    assert "serve" in out
    assert imported == []


def test_a_module_of_no_extra_is_not_blamed_on_one():
    """A missing module that no extra brings is a real error, raised as it is."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        vtpoll_without("video_translation_client", ["watch", "--help"])
    assert "ModuleNotFoundError: No module named 'video_translation_client" in failed.value.stderr
