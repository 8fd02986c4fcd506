"""The polling options are the library's settings: every one offered, each reaching the
client, refusals named by flag, and the docs' table in step with them."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from video_translation_client import StatusPollingConfig, VideoTranslationClient
from vtpoll._errors import Problem
from vtpoll._options import SETTINGS, make_client
from vtpoll.watch import watch

CLI_PAGE = Path(__file__).parents[2] / "docs" / "cli.md"


def _polling(*args: str) -> dict[str, Any]:
    """What click hands the watch command for these arguments, less its own options."""
    ctx = watch.make_context("watch", ["job-1", *args])
    own = {"ids", "files", "output", "resume", "quiet"}
    return {k: v for k, v in ctx.params.items() if k not in own}


def _flags() -> set[str]:
    flags = {o for p in watch.params for o in (*p.opts, *p.secondary_opts)}
    return {f for f in flags if f.startswith("--") and f != "--help"}


def test_every_library_setting_is_an_option():
    """Each config field and each plain-valued client argument is a watch option, with the
    library's docstring as its help."""
    fields = {f.name for f in dataclasses.fields(StatusPollingConfig)}
    keywords = {
        name
        for name, p in inspect.signature(VideoTranslationClient.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY
        and name not in ("api_key", "http_client", "random", "rate_limiter", "dialect")
    }
    assert {s.name for s in SETTINGS} == fields | keywords
    assert all(s.help for s in SETTINGS), [s.name for s in SETTINGS if not s.help]
    assert {s.flag for s in SETTINGS} | {"--dialect", "--dialect-file"} <= _flags()


def test_the_defaults_are_the_librarys():
    """With no option given, the client is the library's default one."""
    client = make_client(**_polling())
    assert client.config == StatusPollingConfig()
    default = VideoTranslationClient("http://localhost:8000")
    for name in ("max_in_flight", "max_held", "batch", "batch_window"):
        assert getattr(client, name) == getattr(default, name), name
    assert client.statistics().current_rate == default.statistics().current_rate


def test_options_reach_the_client_and_zero_means_none():
    """Each value given reaches its field; 0 stands for the library's None."""
    client = make_client(
        **_polling(
            "--max-attempts", "3", "--timeout", "0", "--rate", "7", "--max-held", "9",
            "--no-long-poll", "--jitter", "none", "--no-batch", "--outage-timeout", "5",
        )
    )  # fmt: skip
    assert client.config.max_attempts == 3
    assert client.config.timeout is None
    assert client.config.long_poll == 0
    assert client.config.jitter == "none"
    assert client.config.outage_timeout == 5
    assert client.max_held == 9
    assert client.batch is False
    assert client.statistics().current_rate == 7
    assert make_client(**_polling("--long-poll", "3")).config.long_poll == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "--rate must be a finite number > 0 or 0, got -1.0"),
        (["--in-flight", "0"], "--in-flight must be an integer >= 1, got 0"),
        (["--max-delay", "0.5"], "--max-delay must be >= initial_delay (1.0), got 0.5"),
        (["--batch-window", "2"], "--batch-window must be a number of seconds in [0, 1], got 2.0"),
    ],
)
def test_a_refused_value_is_named_by_its_flag(args: list[str], message: str):
    """The library's refusal, in the command line's words: the flag, and 0 for None."""
    with pytest.raises(Problem) as refused:
        make_client(**_polling(*args))
    assert refused.value.message == message


def test_the_docs_list_every_option_of_watch():
    """The command line page's table of watch options names exactly the options watch has."""
    text = CLI_PAGE.read_text()
    table = text[text.index("| option | default | meaning |") :].split("\n\n", 1)[0]
    listed = set(re.findall(r"`(--[a-z-]+)", table))
    listed |= {f"--no-{flag[2:]}" for flag in re.findall(r"`(--[a-z-]+)/--no-", table)}
    assert listed == _flags()


def test_importing_the_library_imports_no_command_line_and_no_server():
    """`import video_translation_client` loads neither click, rich, the server nor vtpoll,
    beyond what httpx itself loads (httpx imports click and rich when they are installed)."""
    probe = (
        "import sys; import httpx; before = set(sys.modules);"
        "import video_translation_client;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "print(sorted(new & {'click', 'rich', 'sim_server', 'quart', 'hypercorn', 'vtpoll'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[]"
