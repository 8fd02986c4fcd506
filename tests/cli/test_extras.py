"""``vtpoll`` installed without an extra it needs says which one, in one line, exit 2.

Each case runs in a fresh interpreter whose import system refuses the extra's modules, as a
plain ``pip install video-translation-client`` (no ``cli``) or one without ``fleet`` would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Run vtpoll.main(argv) with the modules of sys.argv[1] (comma-separated) not installed.
WITHOUT = """
import sys

blocked = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
import vtpoll

vtpoll.main(sys.argv[2:])
"""

CLI = 'vtpoll needs the "cli" extra: pip install "video-translation-client[cli]"\n'


def vtpoll_without(modules: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, modules, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args", [["watch", "--help"], ["--help"], []])
def test_without_click_vtpoll_names_the_cli_extra(args: list[str]):
    """With no click, any vtpoll command line is one line naming the cli extra, exit 2."""
    done = vtpoll_without("click", *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", CLI)


def test_without_rich_a_command_names_the_cli_extra():
    """A command whose own module needs a missing part of the cli extra names that extra."""
    done = vtpoll_without("rich", "watch", "job-1")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "vtpoll: error: 'vtpoll watch' needs the \"cli\" extra: "
        'pip install "video-translation-client[cli]"\n'
    )


@pytest.mark.parametrize("args", [["fleet"], ["fleet", "--help"], ["fleet", "submit", "a"]])
def test_without_coredis_fleet_names_the_fleet_extra(args: list[str]):
    """With no coredis, every fleet command line is one line naming the fleet extra, exit 2."""
    done = vtpoll_without("coredis", *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "vtpoll: error: 'vtpoll fleet' needs the \"fleet\" extra: "
        'pip install "video-translation-client[fleet]"\n'
    )


def test_without_coredis_the_help_lists_fleet_and_its_extra():
    """'vtpoll --help' still works without the fleet extra, and says fleet needs it."""
    done = vtpoll_without("coredis", "--help")
    assert (done.returncode, done.stderr) == (0, "")
    assert 'fleet   (needs the "fleet" extra)' in done.stdout
    assert "watch" in done.stdout


def test_a_module_of_no_extra_is_not_blamed_on_one():
    """A missing module that no extra brings is a real error, raised as it is."""
    done = vtpoll_without("video_translation_client", "watch", "--help")
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr
