"""The reference site (docs/, built by mkdocs in CI) leaves out no public name and no command.

mkdocs' strict build fails on a name that does not resolve; these fail on one left out: a name
added to ``__all__`` or a command added to ``vtpoll`` must be given its place in the docs.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click

import sim_server
import video_translation_client
import vtpoll
from vtpoll._main import Commands, NeedsExtra

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"


def pages() -> dict[str, str]:
    return {page.name: page.read_text() for page in sorted(DOCS.glob("*.md"))}


def documented(package: str) -> list[str]:
    """The names of ``package`` given a mkdocstrings block (``::: package.Name``)."""
    pattern = re.compile(rf"^::: {re.escape(package)}\.(\w+)$", re.MULTILINE)
    return [name for text in pages().values() for name in pattern.findall(text)]


def test_every_public_name_of_the_library_is_in_the_reference():
    """Each name of video_translation_client.__all__ has one block in the docs, and no other."""
    names = documented("video_translation_client")
    assert sorted(names) == sorted(video_translation_client.__all__)


def test_every_public_name_of_the_server_is_in_the_docs():
    """Each name of sim_server.__all__ has one block in the docs, and no other."""
    assert sorted(documented("sim_server")) == sorted(sim_server.__all__)


def click_directives() -> list[dict[str, str]]:
    """The options of every ``::: mkdocs-click`` block of the docs."""
    blocks = []
    for text in pages().values():
        for block in re.findall(r"^::: mkdocs-click\n((?:    :\w+:.*\n)+)", text, re.MULTILINE):
            blocks.append(dict(re.findall(r"^    :(\w+): *(.*)$", block, re.MULTILINE)))
    return blocks


def commands(group: click.Group, path: str) -> dict[str, click.Command]:
    """Every command under ``group``, found as mkdocs-click finds them (list, then get)."""
    found: dict[str, click.Command] = {}
    ctx = click.Context(group, info_name=path)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found[f"{path} {name}"] = command
        if isinstance(command, click.Group):
            found |= commands(command, f"{path} {name}")
    return found


def test_the_command_reference_covers_every_command():
    """One mkdocs-click block documents the whole vtpoll group, and mkdocs-click's walk of it
    reaches every command: none hidden (it would be left out), none a stand-in for a missing
    extra, the fleet's subcommands included."""
    (directive,) = click_directives()
    group = getattr(importlib.import_module(directive["module"]), directive["command"])
    assert group is vtpoll.cli
    assert directive["prog_name"] == "vtpoll"
    assert directive.get("show_hidden", "false") == "false"
    found = commands(vtpoll.cli, "vtpoll")
    assert not [path for path, command in found.items() if command.hidden]
    assert isinstance(vtpoll.cli, Commands)
    assert not [path for path, command in found.items() if isinstance(command, NeedsExtra)]
    assert {"vtpoll watch", "vtpoll fleet worker", "vtpoll serve"} <= set(found)


def test_every_page_is_in_the_navigation():
    """Every page under docs/ is reachable from the site's navigation."""
    nav = set(re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M))
    assert nav == set(pages())
