"""``vtpoll`` against a real server on 127.0.0.1 port 0.

Commands run in process through click's ``CliRunner`` (with their real exit codes: every
command ends through ``ctx.exit``); a process of its own only where a real process is the
point: signals, kill -9, pipes, two writers of one file, a terminal, a file-size limit,
forked from the suite's zygote (``tests._zygote``); started afresh where the start itself
matters: the installed script, a closed standard output set before it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner

import vtpoll.demo as vtpoll_demo
import vtpoll.watch as vtpoll_watch
from sim_server import TranslationServer
from sim_server.testing import create_jobs, tls
from tests._zygote import Zygote
from tests.cli.prepared import FILE_SIZE_LIMIT
from tests.helpers import (
    fill_up_after,
    head_1,
    metric,
    read_until,
    stop,
    wait_for,
)
from tests.hostile_server import hostile_server
from vtpoll import _watching as vtpoll_watching
from vtpoll import cli
from vtpoll._display import summary_table
from vtpoll._options import given_job_ids

VTPOLL = str(Path(sys.executable).with_name("vtpoll"))
#: No test waits longer than this for one vtpoll run.
RUN_TIMEOUT = 60.0


def vtpoll(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VTPOLL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        check=False,
    )


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run():
    """``run(*args, stdin=...)``: vtpoll in this process, as ``CliRunner`` runs it."""

    def run(*args: str, stdin: str = "") -> Done:
        result = CliRunner().invoke(
            cli, list(args), input=stdin, env={"NO_COLOR": "1"}, catch_exceptions=False
        )
        return Done(result.exit_code, result.stdout, result.stderr)

    return run


def prepared(zygote: Zygote, setup: str, *args: str) -> Done:
    """``vtpoll ARGS`` run to its end in a process of its own prepared by ``setup`` (see
    ``tests.cli.prepared``), forked from the zygote."""
    proc = zygote.python(
        ["-m", "tests.cli.prepared", setup, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        stop(proc)
    return Done(proc.returncode, stdout, stderr)


def start_vtpoll(zygote: Zygote, *args: str) -> subprocess.Popen[str]:
    """``vtpoll ARGS`` as a process of its own, forked from the zygote: signals, pipes and
    exit codes are a process's, without its 0.5 s of CPU importing (the installed script's
    own start has a test of its own)."""
    return zygote.spawn(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """The server the commands poll, embedded (hypercorn on 127.0.0.1, in a thread of this
    process): a process of its own spent a second of CPU importing the app again."""
    server = TranslationServer()
    url = trio.run(server.start)
    try:
        yield url
    finally:
        trio.run(server.stop)


def create(url: str, count: int = 1, *, duration: float, outcome: str = "completed") -> list[str]:
    """Jobs made with the one creation helper (``vtpoll create`` has tests of its own)."""
    bodies = [{"duration": duration, "outcome": outcome} for _ in range(count)]
    return trio.run(create_jobs, url, bodies)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str]) -> None:
    """Until the results file has ``count`` lines (the process must still be running)."""
    wait_for(
        lambda: path.exists() and len(path.read_text().splitlines()) >= count,
        f"{count} results",
        timeout=20,
        alive=proc,
    )


def test_watch_a_file_writes_every_result(url: str, tmp_path: Path, run):
    """Happy path: exit 0, one valid JSON line per job, one plain line per job on stderr."""
    ids = create(url, 5, duration=0.3)
    id_file = tmp_path / "ids.txt"
    id_file.write_text("# today's jobs\n\n" + "\n".join(ids) + "\n")
    out = tmp_path / "out.jsonl"
    done = run("watch", "--file", str(id_file), "-o", str(out), "--base-url", url)
    assert done.returncode == 0, done.stderr
    rows = records(out)
    assert sorted(r["job_id"] for r in rows) == sorted(ids)
    assert {(r["outcome"], r["status"], r["error"]) for r in rows} == {
        ("completed", "completed", None)
    }
    assert all(isinstance(r["checks"], int) and r["checks"] >= 1 for r in rows)
    finished = [line for line in done.stderr.splitlines() if " completed after " in line]
    assert len(finished) == 5
    assert "requests per job" in done.stderr


def test_a_job_in_error_gives_exit_1(url: str, tmp_path: Path, run):
    """One job ending in error makes the exit status 1; its line says error."""
    [ok] = create(url, duration=0.2)
    [bad] = create(url, duration=0.2, outcome="error")
    out = tmp_path / "out.jsonl"
    done = run("watch", ok, bad, "-o", str(out), "--base-url", url)
    assert done.returncode == 1, done.stderr
    outcomes = {r["job_id"]: (r["outcome"], r["status"]) for r in records(out)}
    assert outcomes == {ok: ("completed", "completed"), bad: ("error", "error")}


def test_unknown_job_gives_exit_1_and_names_it(url: str, tmp_path: Path, run):
    """A job the server does not know, while others answer, ends as failed with
    JobNotFound."""
    out = tmp_path / "out.jsonl"
    [known] = create(url, 1, duration=0.2)
    done = run("watch", known, "no-such-job", "-o", str(out), "--base-url", url)
    assert done.returncode == 1
    rows = {row["job_id"]: row for row in records(out)}
    assert rows[known]["outcome"] == "completed"
    assert rows["no-such-job"]["outcome"] == "failed"
    assert str(rows["no-such-job"]["error"]).startswith("JobNotFound")


def test_a_wrong_route_is_one_line_and_exit_2(url: str, tmp_path: Path, run):
    """Every job answered 404 (a base URL missing a part of its path): within seconds, one
    line naming the URL asked and the dialect, exit 2, nothing written."""
    out = tmp_path / "out.jsonl"
    done = run("watch", "abc", "def", "-o", str(out), "--base-url", url + "/v1")
    assert done.returncode == 2
    line = done.stderr.splitlines()[-1]
    assert re.fullmatch(
        rf"vtpoll: error: GET {re.escape(url)}/v1/jobs/(abc|def) answered 404 for every job "
        r"\(dialect sim\): is --base-url or --dialect right\?",
        line,
    ), line
    assert records(out) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_exits_128_plus_signal_with_every_finished_job_saved(
    url: str, tmp_path: Path, signum: int, code: int, zygote: Zygote
):
    """Ctrl-C (or SIGTERM): exit 130 (143), every finished job saved, and how to resume."""
    short = create(url, 3, duration=0.2)
    long = create(url, 3, duration=120)
    out = tmp_path / "out.jsonl"
    proc = start_vtpoll(zygote, "watch", *short, *long, "-o", str(out), "--base-url", url)
    try:
        wait_for_lines(out, 3, proc)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
    finally:
        stop(proc)
    assert proc.returncode == code, stderr
    assert sorted(r["job_id"] for r in records(out)) == sorted(short)
    assert "run the same command with --resume to poll the other 3 jobs" in stderr


def test_sigkill_then_resume_gives_each_job_once(url: str, tmp_path: Path, run, zygote: Zygote):
    """Killed mid-run (and mid-write), --resume repairs the file and finishes each job once."""
    short = create(url, 3, duration=0.2)
    # Pending until long after the test, however slow the machine: the resumed runs end them
    # as timeouts (--timeout 1) rather than wait for them, so nothing hangs on a race between
    # their end and the kill.
    later = create(url, 3, duration=600)
    out = tmp_path / "out.jsonl"
    args = ["watch", *short, *later, "-o", str(out), "--base-url", url]
    proc = start_vtpoll(zygote, *args)
    try:
        wait_for_lines(out, 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        stop(proc)
    written = {r["job_id"] for r in records(out)}
    assert written == set(short)
    # What a kill in the middle of a write leaves behind.
    with out.open("a") as f:
        f.write('{"job_id":"' + later[0])
    done = run(*args, "--resume", "--timeout", "1")
    assert done.returncode == 1, done.stderr  # the later jobs timed out
    assert "cut a torn last line" in done.stderr
    assert "3 of 6 jobs already in" in done.stderr
    rows = records(out)
    assert sorted(r["job_id"] for r in rows) == sorted(short + later)
    assert {r["job_id"]: r["outcome"] for r in rows} == {
        **dict.fromkeys(short, "completed"),
        **dict.fromkeys(later, "timeout"),
    }
    again = run(*args, "--resume", "--timeout", "1")
    assert again.returncode == 1
    assert "6 of 6 jobs already in" in again.stderr
    assert len(records(out)) == 6


def test_create_output_read_by_watch_from_stdin(url: str, tmp_path: Path, run):
    """What 'vtpoll create' prints, 'vtpoll watch -' reads from standard input and watches."""
    out = tmp_path / "out.jsonl"
    created = run(
        *("create", "-n", "4", "--duration-range", "0.1", "0.4", "--error-rate", "0"),
        *("--base-url", url),
    )
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.splitlines()) == 4
    watched = run("watch", "-", "-o", str(out), "--base-url", url, stdin=created.stdout)
    assert watched.returncode == 0, watched.stderr
    rows = records(out)
    assert sorted(r["job_id"] for r in rows) == sorted(created.stdout.split())
    assert {r["outcome"] for r in rows} == {"completed"}


def test_bad_ids_are_refused_before_any_request(url: str, tmp_path: Path, run):
    """Invalid lines are all reported with their numbers, exit 2, and nothing is polled."""
    id_file = tmp_path / "ids.txt"
    id_file.write_text("good-1\nhas space\ngood-2\nx/y\n")
    before = metric(url, "sim_status_checks_total")
    done = run("watch", "--file", str(id_file), "--base-url", url)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{id_file}:2 'has space'" in done.stderr
    assert f"{id_file}:4 'x/y'" in done.stderr
    assert metric(url, "sim_status_checks_total") == before


BAD_INPUTS = [
    (["watch", "--file", "nope.txt"], "nope.txt: no such file"),
    (["watch"], "no job IDs given"),
    (["watch", "a", "--rate", "-1"], "--rate must be a finite number > 0"),
    (["watch", "a", "--rate", "abc"], "Invalid value for '--rate'"),
    (["watch", "a", "--initial-delay", "0"], "--initial-delay must be"),
    (["watch", "a", "--max-delay", "0.5"], "--max-delay must be >= initial_delay"),
    (["watch", "a", "--jitter", "some"], "Invalid value for '--jitter'"),
    (["watch", "a", "--in-flight", "0"], "--in-flight must be an integer >= 1"),
    (["watch", "a", "--base-url", "ftp://x"], "--base-url must be an http"),
    (["watch", "a", "--api-key", ""], "--api-key must be a non-empty string"),
    (["watch", "a", "--resume"], "--resume needs --output"),
    (["watch", "a", "--output", "-", "--resume"], "--resume cannot continue standard output"),
    (["watch", "a", "--output", "exists.jsonl"], "exists.jsonl already exists"),
    (["status", "a b"], "1 invalid job ID"),
    (["create", "--duration", "1", "--duration-range", "1", "2"], "cannot be used together"),
    (["create", "--duration-range", "3", "1"], "needs A <= B, got 3 1"),
    (["create", "--error-rate", "2"], "Invalid value for '--error-rate'"),
    (["serve", "--error-rate", "2"], "--error-rate must be"),
    (["serve", "--db", "/no/such/dir/jobs.db"], "--db must be in an existing directory"),
    (["serve", "--api-key", "clé"], "--api-key must be a non-empty string of visible ASCII"),
    (["watch", "a", "--base-url", "http://[::1"], "--base-url must be a valid URL"),
    (["watch", "a", "--api-key", "clé"], "--api-key must be visible ASCII characters"),
    (["frobnicate"], "No such command 'frobnicate'"),
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a results file that bad input must leave alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.jsonl").write_text('{"job_id":"a","outcome":"completed"}\n')
    # A closed port: if validation were skipped, the run would fail differently.
    monkeypatch.setenv("VTPOLL_BASE_URL", "http://127.0.0.1:9")
    return tmp_path


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, in_tmp: Path, run):
    """Each usage or input error is one line on stderr naming what was wrong, exit 2."""
    done = run(*args)
    stderr = done.stderr
    assert done.returncode == 2, stderr
    assert message in stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("vtpoll: error: ")
    assert (in_tmp / "exists.jsonl").read_text().count("\n") == 1


def test_bad_input_exits_2_from_the_real_command(in_tmp: Path):
    """The installed vtpoll script gives the same one line and exit status 2."""
    # serve's case: its checks import no more than click, where watch's import the client,
    # trio and rich first (0.65 s of CPU a start against 0.15 s).
    [(args, message)] = [case for case in BAD_INPUTS if case[0][:2] == ["serve", "--error-rate"]]
    done = vtpoll(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"vtpoll: error: {done.stderr.removeprefix('vtpoll: error: ')}"
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


def test_status_as_json_and_table(url: str, run, monkeypatch: pytest.MonkeyPatch):
    """'vtpoll status' shows each job once; an unknown job makes the exit status 1."""
    [job] = create(url, duration=30)
    done = run("status", job, "missing-1", "--json", "--base-url", url)
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    assert [r["job_id"] for r in rows] == [job, "missing-1"]
    assert rows[0]["status"] == "pending"
    assert 0 < rows[0]["eta_s"] <= 30
    assert rows[1]["status"] is None
    assert rows[1]["error"].startswith("JobNotFound")
    monkeypatch.setenv("COLUMNS", "120")
    table = run("status", job, "--base-url", url)
    assert table.returncode == 0, table.stderr
    assert job in table.stdout
    assert "pending" in table.stdout


def test_create_with_unreachable_server_fails_with_exit_1(run):
    """A server that cannot be reached is a failure of the work (1), not of the input (2)."""
    done = run("create", "-n", "2", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "cannot create jobs at http://127.0.0.1:9" in done.stderr
    assert "(0 of 2 jobs created)" in done.stderr


def test_demo_runs_to_the_end(tmp_path: Path, run):
    """The demo starts its own server, watches its jobs and checks every outcome."""
    out = tmp_path / "demo.jsonl"
    done = run("demo", "--jobs", "8", "--time-scale", "0.05", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "Every outcome matches the server's" in done.stderr
    assert len(records(out)) == 8


def test_live_display_on_a_terminal(url: str, zygote: Zygote):
    """On a terminal the progress bar, counts, rates and times are drawn."""
    ids = create(url, 3, duration=0.5)
    main, secondary = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = zygote.spawn(
        ["watch", *ids, "--base-url", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "100"},
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)
        os.close(main)
    text = screen.decode(errors="replace")
    for piece in ("polling", "3/3", "req/s", "limit none", "elapsed", "3 completed"):
        assert piece in text, piece


@pytest.mark.parametrize("where", ["busy port", "address not on this machine"])
def test_serve_that_cannot_listen_says_why_in_one_line(where: str, run):
    """A port already taken, or an address this machine does not have: one line, exit 1.
    (Binding sends nothing: no other address is contacted.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--port", str(port)] if where == "busy port" else ["--host", "::2", "--port", "0"]
        done = run("serve", *args)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("vtpoll: error: cannot serve on ")
    assert done.stderr.count("\n") == 1, done.stderr


def test_watch_never_shows_the_password_of_its_url(url: str, run):
    """A password in --base-url is used but never printed."""
    authority = url.removeprefix("http://")
    done = run("watch", "no-such-job", "--base-url", f"http://ann:s3cret-pw@{authority}")
    assert done.returncode == 2  # the one job's 404: a wrong route, as far as anyone can tell
    assert f"watching 1 job on http://ann:***@{authority}" in done.stderr
    assert f"GET http://ann:***@{authority}/jobs/no-such-job answered 404" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout


def test_serve_plain_is_a_backend_like_the_original(run, monkeypatch: pytest.MonkeyPatch):
    """'serve --plain' turns hints, the batch route and long-poll off, nothing else."""
    import sim_server._cli

    served: list[Any] = []

    def run_server(settings: Any) -> int:
        served.append(settings)
        return 0

    monkeypatch.setattr(sim_server._cli, "run_server", run_server)
    done = run("serve", "--plain", "--port", "0", "--seed", "3")
    assert done.returncode == 0, done.stderr
    [settings] = served
    assert (settings.hints, settings.batch, settings.max_wait) == (False, False, 0)
    assert settings.seed == 3


def test_status_says_at_once_that_the_server_does_not_answer(run):
    """With no server at the URL, 'status' says so on stderr before its retries run out."""
    done = run("status", "job-1", "--base-url", "http://127.0.0.1:9", "--timeout", "0.2")
    assert done.returncode == 1
    assert "vtpoll: no answer from http://127.0.0.1:9; retrying for up to 0.2 s" in done.stderr
    assert "ServerUnreachable" in done.stdout


def test_watch_says_at_once_that_the_server_does_not_answer(run):
    """With no server at the URL, 'watch' says so before any job fails."""
    done = run("watch", "job-1", "--base-url", "http://127.0.0.1:9", "--timeout", "0.4", "-q")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    said = next(i for i, line in enumerate(lines) if "no answer from the server since" in line)
    failed = next(i for i, line in enumerate(lines) if line.startswith("job-1 failed"))
    assert said < failed, done.stderr


def test_status_shows_the_servers_reason_for_a_refusal(run):
    """A 4xx's reason, as the server gave it, is in the command's line for the job."""

    def refuse(path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        body = {"error": "invalid_job_id", "detail": "this backend wants UUIDs"}
        return 400, [("Content-Type", "application/json")], json.dumps(body).encode()

    with hostile_server(refuse) as (base, _):
        done = run("status", "job-1", "--json", "--base-url", base)
    assert done.returncode == 1, done.stderr
    [row] = json.loads(done.stdout)
    assert row["error"] == (
        "RequestRejected: the server rejected the request for job 'job-1' (400): "
        "this backend wants UUIDs"
    )


def test_status_with_nothing_listening_says_so_naming_the_url(run):
    """A port nothing listens on: 'status' ends on the refusals, not after its retries run
    out (bounded here by --timeout 8), naming the URL; what it says while it waits is what
    it does."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed on leaving: refused
    started = time.monotonic()
    done = run("status", "job-1", "--json", "--timeout", "8", "--base-url", base)
    assert time.monotonic() - started < 5
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"vtpoll: no answer from {base}; retrying for up to 2 s if it refuses connections, "
        "else up to 8 s (--timeout)\n"
    )
    [row] = json.loads(done.stdout)
    assert row["error"].startswith(
        f"ServerUnreachable: job 'job-1': the server at {base} refused every connection"
    )


def test_watch_with_nothing_listening_writes_nothing_and_says_so(run, tmp_path: Path):
    """A port nothing listens on: no job's outcome is known, so none is recorded as failed
    (a later --resume would skip it); one line names the URL, exit 2, as for a wrong route."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed on leaving: refused
    out = tmp_path / "out.jsonl"
    done = run("watch", "job-1", "job-2", "-o", str(out), "--timeout", "8", "--base-url", base)
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("vtpoll: error:")]
    assert line.startswith(f"vtpoll: error: the server at {base} refused every connection")
    assert line.endswith("(no result written)")
    assert not out.exists() or out.read_text() == ""


# -- the edges of a watch: results that cannot be written, a reader gone -------------------


def test_a_full_disk_ends_in_one_line_the_summary_and_how_to_resume(
    url: str, tmp_path: Path, run, monkeypatch: pytest.MonkeyPatch
):
    """Results that cannot be written stop the run with exit 3: one line naming the file and
    the system's error, the summary, how to resume; no traceback. Every result it wrote is
    kept, and --resume finishes the others, each job once."""
    jobs = create(url, 5, duration=0.1)
    out = tmp_path / "out.jsonl"
    fill_up_after(monkeypatch, room=2)
    args = ["watch", *jobs, "-o", str(out), "-q", "--base-url", url]
    done = run(*args)
    assert done.returncode == 3, done.stderr
    assert f"vtpoll: error: cannot write {out}: No space left on device\n" in done.stderr
    assert "vtpoll summary" in done.stderr
    assert (
        f"2 results are in {out}; once it can be written, run the same command with --resume "
        "to poll the other 3 jobs" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert len(records(out)) == 2
    monkeypatch.undo()
    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["job_id"] for r in records(out)) == sorted(jobs)


def test_a_file_the_system_refuses_to_grow_is_a_write_failure(
    url: str, tmp_path: Path, zygote: Zygote
):
    """The same through the operating system: a file size limit (EFBIG at the limit) in a
    real process: exit 3, one line with the system's words, the results before it kept."""
    jobs = create(url, 8, duration=0.1)
    out = tmp_path / "out.jsonl"
    done = prepared(
        zygote, "file-size-limit", "watch", *jobs, "-o", str(out), "-q", "--base-url", url
    )
    assert done.returncode == 3, done.stderr
    assert f"vtpoll: error: cannot write {out}: File too large\n" in done.stderr
    assert "vtpoll summary" in done.stderr
    assert "run the same command with --resume" in done.stderr
    assert "Traceback" not in done.stderr
    # The records written before the limit are whole; the last, cut at the limit, is not.
    *whole, _ = out.read_text().split("\n")
    assert whole
    assert {json.loads(line)["job_id"] for line in whole} < set(jobs)
    assert out.stat().st_size == FILE_SIZE_LIMIT


def test_standard_output_closed_from_the_start_is_a_write_failure(url: str):
    """'-o -' with standard output closed: exit 3 and one line, before any request."""
    done = subprocess.run(
        [VTPOLL, "watch", "job-1", "-o", "-", "--base-url", url],
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=RUN_TIMEOUT,
        preexec_fn=lambda: os.close(1),
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == "vtpoll: error: cannot write standard output: it is closed\n"


@pytest.mark.long
def test_a_reader_closing_standard_output_ends_the_run_quietly(url: str, zygote: Zygote):
    """'watch -o - | head -1': once the reader has gone, the next result ends the run with
    141 (128 + SIGPIPE) and nothing more on stderr: no traceback, no summary."""
    first = create(url, 1, duration=0.1)
    # Their results come --timeout after the polling began, the first one's at once: however
    # slow this process's start, the reader has gone before them.
    later = create(url, 3, duration=600)
    proc = start_vtpoll(
        zygote, *("watch", *first, *later, "-o", "-", "-q", "--timeout", "3", "--base-url", url)
    )
    try:
        line, stderr = head_1(proc, timeout=RUN_TIMEOUT)
    finally:
        stop(proc)
    assert json.loads(line)["job_id"] == first[0]
    assert proc.returncode == 141, stderr
    assert "Traceback" not in stderr
    assert "Error" not in stderr
    assert "summary" not in stderr


# -- SIGTERM, whenever it comes --------------------------------------------------------------


def three_jobs(command: str, url: str) -> list[str]:
    """The arguments of a run of ``command`` (watch, or the demo with its own server) whose 3
    jobs end within a second."""
    if command == "demo":
        return ["demo", "--jobs", "3", "--time-scale", "0.05"]
    return ["watch", *create(url, 3, duration=0.1), "--base-url", url]


@contextmanager
def sigterm_not_seen_here() -> Iterator[list[int]]:
    """SIGTERMs that reach this process's own handler, not the command's (which must take
    them): with none of its own, the command would be killed with the test."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("command", ["watch", "demo"])
def test_sigterm_right_after_the_last_result_is_said(
    url: str, tmp_path: Path, run, monkeypatch: pytest.MonkeyPatch, command: str
):
    """A SIGTERM after the polling has ended (here: while the summary is made) still ends the
    run with 143 and its line, every result in the file."""
    args = three_jobs(command, url)
    out = tmp_path / "out.jsonl"
    table = summary_table

    def terminated_meanwhile(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        return table(*args, **kwargs)

    monkeypatch.setattr(vtpoll_watching, "summary_table", terminated_meanwhile)
    with sigterm_not_seen_here() as caught:
        done = run(*args, "-o", str(out), "-q")
    assert done.returncode == 143, done.stderr
    assert f"interrupted after the last job ended; all 3 results are in {out}" in done.stderr
    assert caught == []
    assert len(records(out)) == 3


def test_sigterm_before_the_polling_ends_the_command_at_once(
    tmp_path: Path, run, monkeypatch: pytest.MonkeyPatch
):
    """A SIGTERM while the IDs are still being read (a pipe that has not closed, say): the
    command ends at once with 143 and one line, nothing polled."""
    read = given_job_ids

    def terminated_while_reading(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        return read(*args, **kwargs)

    monkeypatch.setattr(vtpoll_watch, "given_job_ids", terminated_while_reading)
    with sigterm_not_seen_here() as caught:
        done = run("watch", "job-1", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 143, done.stderr
    assert done.stderr == "vtpoll: terminated\n"
    assert caught == []


def test_sigterm_while_the_demo_makes_its_jobs_ends_it_at_once(
    tmp_path: Path, run, monkeypatch: pytest.MonkeyPatch
):
    """A SIGTERM while the demo starts its server and makes its jobs: it ends then, with 143
    and one line, nothing polled, and its server stopped."""
    make = create_jobs
    servers: list[str] = []

    async def terminated_while_making(url: str, specs: list[dict[str, Any]]) -> list[str]:
        servers.append(url)
        os.kill(os.getpid(), signal.SIGTERM)
        return await make(url, specs)

    monkeypatch.setattr(vtpoll_demo, "create_jobs", terminated_while_making)
    out = tmp_path / "out.jsonl"
    with sigterm_not_seen_here() as caught:
        done = run("demo", "--jobs", "3", "--time-scale", "0.05", "-o", str(out))
    assert done.returncode == 143, done.stderr
    assert done.stderr == "vtpoll: terminated\n"
    assert caught == []
    assert not out.exists()
    [url] = servers
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=5, verify=tls(url))


def test_sigterm_as_the_process_ends_is_said(url: str, zygote: Zygote):
    """A SIGTERM at the very end of a watch's process, once all is said: its line, exit 143
    (the interpreter's teardown, which resets the handler, is never reached)."""
    [job] = create(url, 1, duration=0.1)
    done = prepared(zygote, "sigterm-at-the-end", "watch", job, "-q", "--base-url", url)
    assert done.returncode == 143, done.stderr
    assert done.stderr.endswith("vtpoll: interrupted after the run ended\n")


# -- the results file another watch is writing ---------------------------------------------


def test_a_results_file_another_watch_is_writing_is_refused(url: str, tmp_path: Path, run):
    """A second watch on a results file a running one holds (its lock): exit 2, one line,
    the file untouched; once the first has ended, --resume continues it."""
    jobs = create(url, 2, duration=0.1)
    out = tmp_path / "out.jsonl"
    args = ["watch", *jobs, "-o", str(out), "-q", "--base-url", url]
    with out.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the running one does
        for resume in ([], ["--resume"]):
            done = run(*args, *resume)
            assert done.returncode == 2, done.stderr
            assert done.stderr == (
                f"vtpoll: error: {out} is being written by another vtpoll still running; wait "
                "for it to end, or choose another file\n"
            )
    assert out.read_bytes() == b""
    done = run(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert len(records(out)) == 2


def test_two_watches_at_once_on_one_results_file_write_each_job_once(
    url: str, tmp_path: Path, zygote: Zygote
):
    """Two real processes on one results file, the second started while the first is known
    to hold it (it has written to it, and its other jobs last minutes): the second is refused
    in one line, exit 2, writing nothing; the first's jobs are each in the file once."""
    short = create(url, 2, duration=0.1)
    # Pending for longer than any test: the first holds the file until it is told to stop.
    long = create(url, 2, duration=600)
    out = tmp_path / "out.jsonl"
    args = ["watch", *short, *long, "-o", str(out), "--resume", "-q", "--base-url", url]
    first = start_vtpoll(zygote, *args)
    try:
        assert first.stderr is not None
        # Said once each result is written: the file is open and locked until the run ends.
        said = read_until(first.stderr, " completed after ", 2, timeout=RUN_TIMEOUT)
        # Were it let in, it would end the long jobs as timeouts at once, and write them.
        second = start_vtpoll(zygote, *args, "--timeout", "1")
        try:
            _, refused = second.communicate(timeout=RUN_TIMEOUT)
        finally:
            stop(second)
        assert first.poll() is None, said  # it held the file all through the second's run
        first.send_signal(signal.SIGTERM)
        _, rest = first.communicate(timeout=RUN_TIMEOUT)
    finally:
        stop(first)
    assert second.returncode == 2, refused
    assert refused == (
        f"vtpoll: error: {out} is being written by another vtpoll still running; wait for it "
        "to end, or choose another file\n"
    )
    assert first.returncode == 143, said + rest
    assert sorted(r["job_id"] for r in records(out)) == sorted(short)
