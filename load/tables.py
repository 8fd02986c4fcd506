"""The tables load/README.md quotes, checked against (or rewritten from) the JSON their
scripts wrote, so that a quoted table is always what its script printed.

    uv run python load/tables.py           # check: exit 1 if a quoted table differs
    uv run python load/tables.py --write   # rewrite the quoted tables from the JSON

A quoted table is a ``console`` block whose first line runs ``load/NAME.py ... --json
load/results/FILE.json``; the lines after it, up to the first that is not the table, are
the table as NAME.py prints it (its ``COLUMNS``, through ``_common.print_table``) from the
rows in FILE.json. Rerun a script with the command quoted to refresh its JSON, then
``--write``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
README = HERE / "README.md"
_COMMAND = re.compile(r"^\$ uv run python load/(\w+)\.py .*--json load/(results/[\w.]+\.json)")


@dataclass(frozen=True, slots=True)
class Quoted:
    script: str
    results: Path
    #: Line numbers (0-based) in the README of the table's first and past-last lines.
    start: int
    end: int


def quoted(lines: list[str]) -> list[Quoted]:
    """The quoted tables of the README's lines: each runs from the line after its command
    (in a ``console`` block) to the end of the block, an empty line or the next command."""
    found = []
    console = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            console = line.startswith("```console")
            continue
        match = _COMMAND.match(line)
        if not console or match is None:
            continue
        end = next(
            j for j in range(i + 1, len(lines)) if lines[j].startswith(("```", "$")) or not lines[j]
        )
        found.append(Quoted(match[1], HERE / match[2], i + 1, end))
    return found


def rendered(script: str, results: Path) -> list[str] | None:
    """The table ``script`` prints for the rows in ``results``; None if it has no
    ``COLUMNS`` (a script that prints otherwise)."""
    sys.path.insert(0, str(HERE))
    try:
        module = importlib.import_module(script)
    finally:
        sys.path.remove(str(HERE))
    columns = getattr(module, "COLUMNS", None)
    if columns is None:
        return None
    from _common import print_table

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table(json.loads(results.read_text()), columns)
    return out.getvalue().splitlines()


def unchecked(lines: list[str]) -> list[Quoted]:
    """The quoted tables whose script prints no table of its ``COLUMNS``: nothing to check
    them against, so each is an error rather than passed over."""
    return [t for t in quoted(lines) if rendered(t.script, t.results) is None]


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def differences(lines: list[str]) -> list[tuple[Quoted, list[str]]]:
    """Each quoted table that is not what its script prints from its JSON, with what it
    prints. A quote may leave rows out (a README shows the rows it discusses), align its
    columns to the rows it keeps, and leave out the header under another run's table:
    each of its rows, and its header if any, must be the script's, cell for cell."""
    out = []
    for table in quoted(lines):
        expected = rendered(table.script, table.results)
        if expected is None:
            continue
        quote = [_cells(line) for line in lines[table.start : table.end]]
        printed = [_cells(line) for line in expected]
        rows = quote[1:] if quote[:1] == printed[:1] else quote  # a second run's rows alone
        if not rows or any(row not in printed[1:] for row in rows):
            out.append((table, expected))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables from the JSON")
    args = parser.parse_args()
    lines = README.read_text().splitlines()
    stale = differences(lines)
    if args.write:
        for table, expected in reversed(stale):
            lines[table.start : table.end] = expected
        README.write_text("\n".join(lines) + "\n")
        print(f"{len(stale)} tables rewritten")
        return 0
    for table, _ in stale:
        where = f"README.md:{table.start + 1}"
        print(f"{where}: not what {table.script}.py prints from {table.results}")
    blind = unchecked(lines)
    for table in blind:
        where = f"README.md:{table.start + 1}"
        print(f"{where}: {table.script}.py prints no table (COLUMNS) to check it against")
    return 1 if stale or blind else 0


if __name__ == "__main__":
    sys.exit(main())
