"""The command line's files: job-ID lists in, JSON Lines results out (with resume).

Nothing here touches the network: every input is checked, and every problem reported, before
the first request is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ._models import JobResult

#: The API's job-ID rule (the simulation server enforces the same one; a test keeps them equal).
JOB_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Invalid lines named in one error message; the rest are counted.
SHOWN_PROBLEMS = 10


class InputError(Exception):
    """A file or an ID the user gave is wrong; the message names it (exit code 2)."""


@dataclass(slots=True)
class IdList:
    """Job IDs in the order given, without duplicates."""

    ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    #: (source, line number, ID) of the first duplicate, for the warning.
    first_duplicate: tuple[str, int, str] | None = None


def _clean(line: str) -> str:
    # IDs cannot contain spaces or '#', so whatever follows a '#' is a comment.
    return line.split("#", 1)[0].strip()


def read_ids(sources: Iterable[tuple[str, Iterable[str]]]) -> IdList:
    """Read IDs from (name, lines) sources: blank lines and ``#`` comments ignored.

    Raises :class:`InputError` listing every invalid line (with its source and number).
    """
    result = IdList()
    seen: set[str] = set()
    problems: list[str] = []
    bad = 0
    for name, lines in sources:
        for number, raw in enumerate(lines, 1):
            job_id = _clean(raw)
            if not job_id:
                continue
            if JOB_ID_RE.fullmatch(job_id) is None:
                bad += 1
                if len(problems) < SHOWN_PROBLEMS:
                    problems.append(f"{name}:{number} {_shorten(job_id)!r}")
                continue
            if job_id in seen:
                result.duplicates += 1
                if result.first_duplicate is None:
                    result.first_duplicate = (name, number, job_id)
                continue
            seen.add(job_id)
            result.ids.append(job_id)
    if bad:
        more = f" and {bad - len(problems)} more" if bad > len(problems) else ""
        raise InputError(
            f"{bad} invalid job ID{'s' if bad > 1 else ''} (IDs are 1-128 letters, digits, "
            f"'.', '_', ':' or '-'): {', '.join(problems)}{more}"
        )
    return result


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def file_lines(path: Path) -> list[str]:
    """The lines of an ID file, or :class:`InputError` saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file of job IDs") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


# -- results ---------------------------------------------------------------------------------


def result_record(result: JobResult, *, now: datetime | None = None) -> dict[str, Any]:
    """One JSON Lines record: what a script needs to act on a finished job."""
    status = result.status
    error = result.error
    return {
        "job_id": result.job_id,
        "outcome": result.outcome.value,
        "status": status.status.value if status is not None else None,
        "detected_at": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "elapsed_s": round(result.elapsed_time, 3),
        "attempts": result.attempts,
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
    }


@dataclass(slots=True)
class Previous:
    """What an existing results file already holds."""

    outcomes: dict[str, str] = field(default_factory=dict)
    #: Bytes of a torn last line that were cut off, 0 if the file ended cleanly.
    repaired: int = 0


def load_previous(path: Path) -> Previous:
    """Read a results file for ``--resume``, cutting off a torn last line.

    A crash can leave the last line half written (no newline, or not JSON); that job is not
    done, so the fragment is truncated away and the job is polled again. Any other bad line
    means the file is not ours: :class:`InputError` with its line number, nothing changed.
    """
    previous = Previous()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return previous
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    end = data.rfind(b"\n") + 1
    complete, tail = data[:end], data[end:]
    lines = complete.split(b"\n")[:-1]
    if not tail and lines and _record(lines[-1]) is None:
        # A newline made it to disk but the line before it is still not a record: torn too.
        tail = lines.pop() + b"\n"
        end -= len(tail)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            raise InputError(
                f"{path}:{number}: not a vtpoll result line; refusing to append to this file"
            )
        previous.outcomes[record["job_id"]] = record["outcome"]
    if tail:
        with path.open("r+b") as file:
            file.truncate(end)
        previous.repaired = len(tail)
    return previous


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if (
        isinstance(record, dict)
        and isinstance(record.get("job_id"), str)
        and isinstance(record.get("outcome"), str)
    ):
        return record
    return None


class ResultWriter:
    """Appends one line per finished job and flushes it at once.

    Flushing hands the line to the operating system, so a killed process (SIGKILL, a crash)
    loses nothing already written; only a power cut could, and guarding against that (fsync per
    line) would cost a disk sync per job.
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.written = 0

    def write(self, result: JobResult) -> None:
        self._file.write(json.dumps(result_record(result), separators=(",", ":")) + "\n")
        self._file.flush()
        self.written += 1


def open_results(path: Path, *, resume: bool) -> tuple[IO[str], Previous]:
    """Open the results file for appending; without ``resume`` it must be new or empty."""
    previous = Previous()
    if resume:
        previous = load_previous(path)
    elif path.exists() and (not path.is_file() or path.stat().st_size > 0):
        raise InputError(
            f"{path} already exists; pass --resume to continue it, or choose another file"
        )
    try:
        file = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    return file, previous
