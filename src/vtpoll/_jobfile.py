"""The command line's files: job-ID lists in, JSON Lines results out (with resume).

Nothing here touches the network: every input is checked, and every problem reported, before
the first request is sent.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sim_server._settings import JOB_ID
from video_translation_client import JobResult, Outcome

#: The API's job-ID rule, as the simulation server enforces it.
JOB_ID_RE = re.compile(JOB_ID)
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


def id_sources(
    ids: Iterable[str], files: Iterable[Path], stdin: IO[str]
) -> list[tuple[str, Iterable[str]]]:
    sources: list[tuple[str, Iterable[str]]] = []
    arguments = [i for i in ids if i != "-"]
    if arguments:
        sources.append(("argument", arguments))
    wants_stdin = "-" in ids or any(str(f) == "-" for f in files)
    for path in files:
        if str(path) != "-":
            sources.append((str(path), file_lines(path)))
    if wants_stdin:
        sources.append(("<stdin>", stdin_lines(stdin)))
    return sources


def lines_of(text: str) -> list[str]:
    """``text`` cut at each ``\n`` and nowhere else, as ``grep -n`` and editors number lines:
    not ``str.splitlines``, which also cuts at form feeds, U+2028 and other characters a
    person does not see as line ends (so an error would name the wrong line). A ``\r``
    before the ``\n`` is stripped with the rest of the line's blanks."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no other
    return lines


def stdin_lines(stdin: IO[str]) -> list[str]:
    """The lines of standard input, read as bytes where it has them (a text stream would turn
    a lone ``\r`` into a line end), or :class:`InputError`."""
    buffer = getattr(stdin, "buffer", None)
    try:
        if buffer is not None:
            return lines_of(buffer.read().decode("utf-8-sig"))
        return lines_of(stdin.read().removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        raise InputError(f"<stdin>: not UTF-8 text (byte {exc.start})") from None


def file_lines(path: Path) -> list[str]:
    """The lines of an ID file (a UTF-8 byte-order mark is dropped), or :class:`InputError`
    saying why it cannot be read."""
    try:
        return lines_of(path.read_bytes().decode("utf-8-sig"))
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
    status = result.last_status
    error = result.error
    return {
        "job_id": result.job_id,
        "outcome": result.outcome.value,
        "status": status.status.value if status is not None else None,
        "detected_at": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "elapsed_s": round(result.elapsed_time, 3),
        "checks": result.checks,
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
        # What the dialect keeps: the translated video's URL, the languages...
        "kept": result.kept,
    }


def record_line(result: JobResult) -> str:
    """The record as the line written for it."""
    return json.dumps(result_record(result), separators=(",", ":"))


@dataclass(slots=True)
class Previous:
    """What an existing results file already holds."""

    outcomes: dict[str, str] = field(default_factory=dict)
    #: Bytes of a torn last line that were cut off, 0 if the file ended cleanly.
    repaired: int = 0
    #: The file's last record lacks its newline: one is written before appending.
    needs_newline: bool = False
    #: What looked wrong but was kept (duplicates, conflicts, unknown outcomes), one line each.
    warnings: list[str] = field(default_factory=list)


#: How every record this module writes begins: a torn line of ours begins so too.
RECORD_PREFIX = b'{"job_id":"'
OUTCOMES = frozenset(outcome.value for outcome in Outcome)
#: Examples named in one warning; the rest are counted.
SHOWN_WARNINGS = 3


def load_previous(path: Path) -> Previous:
    """Read a results file for ``--resume``, cutting off a torn last line.

    A crash can leave the last line half written; that job is not done, so the fragment is
    truncated away and the job is polled again. Only a fragment that is demonstrably a record
    of ours is cut (it begins as every record written here begins); any other line that is not
    a record means the file is not ours: :class:`InputError` with its line number, the file
    untouched. Only regular files are read (not a FIFO, not /dev/zero).
    """
    previous = Previous()
    if not path.exists():
        return previous
    _regular_or_missing(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # whatever follows the last newline
    if not tail and lines and _record(lines[-1]) is None and lines[-1].startswith(RECORD_PREFIX):
        # A newline made it to disk but the record before it did not: torn too.
        tail = lines.pop() + b"\n"
    seen: dict[str, tuple[int, str]] = {}
    notes = _Notes()
    for number, line in enumerate(lines, 1):
        if line.strip():
            _take(path, number, _record(line), seen, notes)
    if tail:
        record = _record(tail)
        if record is not None:  # a whole record, only its newline missing
            _take(path, len(lines) + 1, record, seen, notes)
            previous.needs_newline = True
        elif tail.startswith(RECORD_PREFIX) or (seen and RECORD_PREFIX.startswith(tail)):
            _cut(path, len(data) - len(tail))
            previous.repaired = len(tail)
        else:
            raise _not_ours(path, len(lines) + 1)
    previous.outcomes = {job_id: outcome for job_id, (_, outcome) in seen.items()}
    previous.warnings = notes.lines(path)
    return previous


@dataclass(slots=True)
class _Notes:
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def lines(self, path: Path) -> list[str]:
        kinds = (
            ("jobs recorded twice with the same outcome", self.duplicates),
            (
                "jobs recorded twice with different outcomes; the later record counts",
                self.conflicts,
            ),
            ("records with an unknown outcome, counted as not completed", self.unknown),
        )
        out = []
        for kind, found in kinds:
            if found:
                shown = ", ".join(found[:SHOWN_WARNINGS])
                more = len(found) - SHOWN_WARNINGS
                out.append(
                    f"{path}: {len(found)} {kind}: {shown}" + (f" and {more} more" * (more > 0))
                )
        return out


def _take(
    path: Path,
    number: int,
    record: dict[str, Any] | None,
    seen: dict[str, tuple[int, str]],
    notes: _Notes,
) -> None:
    if record is None:
        raise _not_ours(path, number)
    job_id, outcome = record["job_id"], record["outcome"]
    if outcome not in OUTCOMES:
        notes.unknown.append(f"line {number} ({job_id!r}: {outcome[:20]!r})")
    if job_id in seen:
        first, before = seen[job_id]
        if before == outcome:
            notes.duplicates.append(f"{job_id!r} (lines {first} and {number})")
        else:
            notes.conflicts.append(
                f"{job_id!r} (line {first}: {before[:20]!r}, line {number}: {outcome[:20]!r})"
            )
    seen[job_id] = (number, outcome)


def _not_ours(path: Path, number: int) -> InputError:
    return InputError(f"{path}:{number}: not a vtpoll result line; refusing to append to this file")


def _cut(path: Path, size: int) -> None:
    try:
        with path.open("r+b") as file:
            file.truncate(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot cut its torn last line: {exc.strerror}") from None


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


#: fsync's errors for a file that cannot be synced (a pipe, a terminal, /dev/full), not
#: for a disk that failed.
_CANNOT_SYNC = frozenset({errno.EINVAL, errno.EROFS, errno.ENOTSUP})


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
        self.write_line(record_line(result))

    def write_line(self, line: str) -> None:
        """A record already made (by :func:`record_line`, maybe in another process). A
        file that cannot take it raises OSError (EBADF for one already closed)."""
        with self._closed_is_ebadf():
            self._file.write(line + "\n")
            self._file.flush()
        self.written += 1

    def sync(self) -> None:
        """Put what was written on disk (fsync), before what it came from is forgotten: a
        disk's failure raises OSError. A file that cannot be synced (a pipe, a terminal) is
        only flushed: nothing of it is kept beyond the reader anyway."""
        with self._closed_is_ebadf():
            self._file.flush()
            try:
                fd = self._file.fileno()
            except (OSError, ValueError):
                return  # not a file of the system's (a test's capture)
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno not in _CANNOT_SYNC:
                    raise

    @contextmanager
    def _closed_is_ebadf(self) -> Iterator[None]:
        try:
            yield
        except ValueError:
            if not self._file.closed:
                raise
            raise OSError(errno.EBADF, "the file is closed") from None


def open_results(path: Path, *, resume: bool) -> tuple[IO[str], Previous]:
    """Open the results file for appending, locked for as long as it is open (see
    :func:`lock`); without ``resume`` it must be new or empty. What it holds is read (and a
    torn last line cut) only under the lock: another run may be appending to it."""
    if resume:
        _regular_or_missing(path)
    elif path.exists() and (not path.is_file() or path.stat().st_size > 0):
        raise _exists(path)
    try:
        file = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        lock(file, path)
        previous = Previous()
        if resume:
            previous = load_previous(path)
        elif os.fstat(file.fileno()).st_size > 0:
            raise _exists(path)  # written by another run between the look and the lock
        if previous.needs_newline:
            file.write("\n")
    except BaseException:
        file.close()
        raise
    return file, previous


def lock(file: IO[str], path: Path) -> None:
    """Hold an exclusive lock on ``file`` (``flock``: released when it is closed, or its
    process ends however it ends), or :class:`InputError` if another process holds it: two
    runs appending to one results file would each poll and write every job."""
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(
            f"{path} is being written by another vtpoll still running; wait for it to end, "
            "or choose another file"
        ) from None
    except OSError:
        pass  # a file system without locks (some network mounts): written unlocked, as before


def _exists(path: Path) -> InputError:
    return InputError(
        f"{path} already exists; pass --resume to continue it, or choose another file"
    )


def _regular_or_missing(path: Path) -> None:
    """Refuse what --resume cannot continue before opening it (opening a FIFO would block)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file; --resume continues a results file")
