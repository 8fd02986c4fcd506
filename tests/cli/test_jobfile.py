"""Reading job-ID lists and the JSON Lines results file, without a network."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from io import BytesIO, StringIO, TextIOWrapper
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim_server._models import JOB_ID_PATTERN
from tests import strategies
from video_translation_client import JobNotFound, JobResult, JobStatus, Outcome, StatusResponse
from vtpoll._jobfile import (
    JOB_ID_RE,
    InputError,
    ResultWriter,
    file_lines,
    id_sources,
    load_previous,
    open_results,
    read_ids,
    result_record,
)


def _result(job_id: str, outcome: Outcome = Outcome.COMPLETED) -> JobResult:
    status = StatusResponse(
        JobStatus.COMPLETED,
        job_id,
        1.5,
        checks=2,
        kept={"data.url": f"https://cdn.test/{job_id}.mp4"},
    )
    return JobResult(job_id, outcome, status, checks=2, elapsed_time=1.5)


def test_id_rule_is_the_servers():
    """The command line accepts exactly the IDs the API accepts."""
    assert f"^{JOB_ID_RE.pattern}$" == JOB_ID_PATTERN


def test_blank_lines_and_comments_are_ignored():
    """Blank lines, whole-line and trailing comments are not IDs."""
    lines = ["# my jobs", "", "a-1", "   ", "b.2  # the second", "  c:3  "]
    assert read_ids([("ids.txt", lines)]).ids == ["a-1", "b.2", "c:3"]


def test_duplicates_are_dropped_and_counted():
    """A repeated ID is polled once; the first repeat is named for the warning."""
    ids = read_ids([("argument", ["a", "b"]), ("ids.txt", ["b", "a", "c", "a"])])
    assert ids.ids == ["a", "b", "c"]
    assert ids.duplicates == 3
    assert ids.first_duplicate == ("ids.txt", 1, "b")


def test_every_invalid_line_is_reported_with_its_number():
    """All invalid lines are named together, so one run shows every mistake."""
    lines = ["good", "has space", "ok", "x/y", "", "é"]
    with pytest.raises(InputError) as info:
        read_ids([("ids.txt", lines)])
    message = str(info.value)
    assert message.startswith("3 invalid job IDs")
    assert "ids.txt:2 'has space'" in message
    assert "ids.txt:4 'x/y'" in message
    assert "ids.txt:6 'é'" in message
    assert "\n" not in message


def test_many_invalid_lines_are_summarised():
    """Past ten, invalid lines are counted rather than listed: the message stays one line."""
    with pytest.raises(InputError, match=r"25 invalid job IDs .* and 15 more$"):
        read_ids([("f", [f"bad id {i}" for i in range(25)])])


@given(st.lists(strategies.text(max_size=20), max_size=30))
def test_read_ids_accepts_only_valid_ids(lines: list[str]):
    """Whatever the lines, the result holds only IDs the API accepts, or it raises InputError."""
    try:
        ids = read_ids([("f", lines)]).ids
    except InputError:
        return
    assert all(JOB_ID_RE.fullmatch(i) for i in ids)
    assert len(ids) == len(set(ids))


def test_unreadable_files_are_named(tmp_path: Path):
    """A missing file, a directory and binary junk each get a message naming the file."""
    with pytest.raises(InputError, match=r"nope\.txt: no such file"):
        file_lines(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="is a directory"):
        file_lines(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"ok\n\xff\xfe")
    with pytest.raises(InputError, match=r"junk\.bin: not UTF-8 text \(byte 3\)"):
        file_lines(junk)


def test_record_has_what_a_script_needs():
    """A result line carries ID, outcome, final status, detection time, attempts, error and
    the fields the dialect keeps."""
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert result_record(_result("a"), now=now) == {
        "job_id": "a",
        "outcome": "completed",
        "status": "completed",
        "detected_at": "2026-01-02T03:04:05.678+00:00",
        "elapsed_s": 1.5,
        "checks": 2,
        "error": None,
        "kept": {"data.url": "https://cdn.test/a.mp4"},
    }
    failed = JobResult("b", Outcome.FAILED, None, JobNotFound("b"), checks=1)
    record = result_record(failed, now=now)
    assert record["status"] is None
    assert record["error"].startswith("JobNotFound: ")


def test_writer_flushes_each_line():
    """Each result is in the file the moment write() returns (it survives a SIGKILL)."""

    class Recording(StringIO):
        flushed: list[str]

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recording()
    out.flushed = []
    writer = ResultWriter(out)
    writer.write(_result("a"))
    writer.write(_result("b", Outcome.ERROR))
    assert [len(v.splitlines()) for v in out.flushed] == [1, 2]
    assert [json.loads(line)["job_id"] for line in out.getvalue().splitlines()] == ["a", "b"]


def _write_lines(path: Path, *ids: str) -> bytes:
    data = "".join(json.dumps(result_record(_result(i))) + "\n" for i in ids).encode()
    path.write_bytes(data)
    return data


def test_resume_reads_finished_jobs(tmp_path: Path):
    """--resume learns which jobs are done and with which outcome."""
    path = tmp_path / "out.jsonl"
    _write_lines(path, "a", "b")
    previous = load_previous(path)
    assert previous.outcomes == {"a": "completed", "b": "completed"}
    assert previous.repaired == 0
    assert load_previous(tmp_path / "missing.jsonl").outcomes == {}


def test_torn_last_line_is_cut_off(tmp_path: Path):
    """A half-written last line (a crash mid-write) is truncated, so it is never duplicated."""
    path = tmp_path / "out.jsonl"
    good = _write_lines(path, "a", "b")
    with path.open("ab") as f:
        f.write(b'{"job_id":"c","outc')
    previous = load_previous(path)
    assert previous.outcomes == {"a": "completed", "b": "completed"}
    assert previous.repaired == len(b'{"job_id":"c","outc')
    assert path.read_bytes() == good


def test_torn_line_that_got_its_newline_is_cut_off(tmp_path: Path):
    """A last line that is not a record, even ending in a newline, is a torn write too."""
    path = tmp_path / "out.jsonl"
    good = _write_lines(path, "a")
    with path.open("ab") as f:
        f.write(b'{"job_id":"b"\n')
    assert load_previous(path).outcomes == {"a": "completed"}
    assert path.read_bytes() == good


def test_a_foreign_file_is_refused_untouched(tmp_path: Path):
    """A bad line before the end means the file is not ours: refused, not rewritten."""
    path = tmp_path / "out.jsonl"
    _write_lines(path, "a", "b")
    data = b"hello\n" + path.read_bytes()
    path.write_bytes(data)
    with pytest.raises(InputError, match=r"out\.jsonl:1: not a vtpoll result line"):
        load_previous(path)
    assert path.read_bytes() == data


def test_existing_output_needs_resume(tmp_path: Path):
    """Without --resume a non-empty results file is never appended to or overwritten."""
    path = tmp_path / "out.jsonl"
    data = _write_lines(path, "a")
    with pytest.raises(InputError, match=r"out\.jsonl already exists; pass --resume"):
        open_results(path, resume=False)
    assert path.read_bytes() == data
    file, previous = open_results(path, resume=True)
    with file:
        assert set(previous.outcomes) == {"a"}
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    file, _ = open_results(empty, resume=False)
    file.close()


def test_create_specs_follow_the_options():
    """'create' draws durations in the range and outcomes at the rate, the same for a seed."""
    from vtpoll.create import job_specs

    specs = job_specs(200, duration=None, duration_range=(2.0, 5.0), error_rate=0.25, seed=3)
    assert all(2.0 <= s["duration"] <= 5.0 for s in specs)
    errors = sum(s["outcome"] == "error" for s in specs)
    assert 30 <= errors <= 70
    again = job_specs(200, duration=None, duration_range=(2.0, 5.0), error_rate=0.25, seed=3)
    assert specs == again
    assert job_specs(2, duration=1.5, duration_range=None, error_rate=None, seed=None) == [
        {"duration": 1.5},
        {"duration": 1.5},
    ]
    assert {
        s["outcome"]
        for s in job_specs(5, duration=None, duration_range=None, error_rate=1.0, seed=None)
    } == {"error"}


def _ours(*ids: str, outcome: str = "completed") -> bytes:
    """Records exactly as the writer writes them."""
    out = StringIO()
    writer = ResultWriter(out)
    for job_id in ids:
        writer.write(_result(job_id, Outcome(outcome)))
    return out.getvalue().encode()


@pytest.mark.parametrize(
    "content",
    [
        b'{"a": 1}',  # someone else's one-line JSON, no newline
        b'{"job_id": "x"}',  # complete JSON, not a record of ours
        b"hello world",  # a text file without a newline
        b'{"job_id": "x", "outc',  # torn, but not as the writer writes
    ],
)
def test_a_file_that_is_not_ours_is_refused_untouched(tmp_path: Path, content: bytes):
    """Only a fragment that demonstrably begins as one of our records is cut; any other last
    line means the file is someone else's: refused, byte for byte as it was."""
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"f\.json:1: not a vtpoll result line"):
        load_previous(path)
    assert path.read_bytes() == content


def test_a_first_record_torn_is_cut(tmp_path: Path):
    """A file holding only the start of its first record (killed during the first write)."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"job_id":"abc","outco')
    previous = load_previous(path)
    assert previous.outcomes == {}
    assert path.read_bytes() == b""


def test_a_last_record_without_its_newline_is_kept(tmp_path: Path):
    """A whole record missing only its newline counts, and appending starts a new line."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(_ours("a", "b").rstrip(b"\n"))
    file, previous = open_results(path, resume=True)
    with file:
        assert previous.outcomes == {"a": "completed", "b": "completed"}
        ResultWriter(file).write(_result("c"))
    assert [json.loads(line)["job_id"] for line in path.read_text().splitlines()] == [
        "a",
        "b",
        "c",
    ]


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/full", "directory"])
def test_resume_refuses_what_is_not_a_regular_file(tmp_path: Path, special: str):
    """--resume on a FIFO, /dev/zero or /dev/full would hang or read without end: refused."""
    if special == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif special == "directory":
        path = tmp_path
    else:
        path = Path(special)
    with pytest.raises(InputError, match="not a regular file"):
        load_previous(path)


def test_a_torn_line_that_cannot_be_cut_is_one_line(tmp_path: Path, monkeypatch):
    """A torn line in a file this user may not write: one line saying so, file untouched.
    (Simulated: the tests run as root, whom file modes do not stop.)"""
    path = tmp_path / "out.jsonl"
    data = _ours("a") + b'{"job_id":"b'
    path.write_bytes(data)
    real_open = Path.open

    def refusing_open(self: Path, mode: str = "r", *args, **kwargs):
        if self == path and "+" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(InputError, match=r"out\.jsonl: cannot cut its torn last line: Permission"):
        load_previous(path)
    assert path.read_bytes() == data


def test_duplicates_conflicts_and_unknown_outcomes_are_warned_of(tmp_path: Path):
    """Records kept but worth a word: each kind named, with the rule for which one counts."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        _ours("a", "b")
        + _ours("a")
        + _ours("b", outcome="error")
        + b'{"job_id":"c","outcome":"exploded"}\n'
    )
    previous = load_previous(path)
    assert previous.outcomes == {"a": "completed", "b": "error", "c": "exploded"}
    assert previous.warnings == [
        f"{path}: 1 jobs recorded twice with the same outcome: 'a' (lines 1 and 3)",
        f"{path}: 1 jobs recorded twice with different outcomes; the later record counts: "
        "'b' (line 2: 'completed', line 4: 'error')",
        f"{path}: 1 records with an unknown outcome, counted as not completed: "
        "line 5 ('c': 'exploded')",
    ]


def test_an_id_file_may_start_with_a_byte_order_mark(tmp_path: Path):
    """A UTF-8 BOM (as some editors write) is not part of the first ID."""
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeffjob-a\njob-b\n".encode())
    assert read_ids([("ids.txt", file_lines(path))]).ids == ["job-a", "job-b"]


def test_line_numbers_count_newlines_only(tmp_path: Path):
    """A form feed, U+2028 or a lone carriage return inside a line does not end it: the error
    names the line an editor and grep -n show."""
    path = tmp_path / "ids.txt"
    path.write_bytes("job-a\u2028x\njob-b\r\n\x0cjob c\njob-d\rjob-e\n".encode())
    lines = file_lines(path)
    assert len(lines) == 4
    with pytest.raises(InputError) as info:
        read_ids([("ids.txt", lines)])
    message = str(info.value)
    assert message.startswith("3 invalid job IDs")
    assert "ids.txt:1 'job-a\\u2028x'" in message
    assert "ids.txt:3 'job c'" in message
    assert "ids.txt:4 'job-d\\rjob-e'" in message


def test_standard_input_lines_count_newlines_only():
    """Standard input is cut at newlines only too, read as bytes (a BOM dropped)."""
    stdin = TextIOWrapper(BytesIO("\ufeffjob-a\n\x0cjob b\n".encode()), encoding="utf-8")
    with pytest.raises(InputError, match=r"<stdin>:2 'job b'$"):
        read_ids(id_sources(["-"], [], stdin))
    bad = TextIOWrapper(BytesIO(b"job-a\n\xff\n"), encoding="utf-8")
    with pytest.raises(InputError, match=r"<stdin>: not UTF-8 text \(byte 6\)"):
        id_sources(["-"], [], bad)
