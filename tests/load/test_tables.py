"""The tables load/README.md quotes are what their scripts print from the JSON they wrote."""

from __future__ import annotations

import re

from .scripts import script


def test_every_quoted_table_is_what_its_script_prints():
    """Each table quoted after a `load/NAME.py ... --json load/results/FILE.json` command is
    NAME.py's table for the rows in FILE.json (rows may be left out, not changed)."""
    tables = script("tables")
    lines = tables.README.read_text().splitlines()
    assert len(tables.quoted(lines)) >= 12
    assert [(t.script, t.results.name) for t in tables.unchecked(lines)] == []
    assert [(t.script, t.results.name) for t, _ in tables.differences(lines)] == []


def test_a_figure_changed_by_hand_is_caught():
    """One number of a quoted row edited: the table no longer matches its script's."""
    tables = script("tables")
    lines = tables.README.read_text().splitlines()
    table = tables.quoted(lines)[0]
    row = table.start + 1
    lines[row] = re.sub(r"\d", lambda m: str((int(m[0]) + 1) % 10), lines[row], count=1)
    assert [t.start for t, _ in tables.differences(lines)] == [table.start]
