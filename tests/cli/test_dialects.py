"""``vtpoll`` in each vendor's dialect, against a real server speaking it.

The server runs embedded (hypercorn on 127.0.0.1, in a thread of this process) with the settings
``vtpoll serve`` makes of its options: the same app on a real socket as that command serves,
without the second of CPU a process of its own spends importing it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

import sim_server._cli
from sim_server import ServerSettings, TranslationServer
from sim_server.testing import create_jobs
from vtpoll import cli

#: A file spelling HeyGen's API out, as a user with a service of their own would.
HEYGEN_FILE = """
status_url = "/v2/video_translate/{id}"
status_field = "data.status"
pending = ["pending", "running"]
completed = ["success"]
error = ["failed"]
auth_header = "X-Api-Key"
auth_scheme = ""
keep = ["data.url"]
"""
#: Faults that cost no wait of a second (a 429's Retry-After: 1): ElevenLabs' bare 429s are
#: tested in process (tests/client/test_dialects.py).
FAULTS = ("--fault-500", "0.03", "--fault-garbage", "0.03", "--seed", "7")


@pytest.fixture(scope="module", params=["elevenlabs", "heygen"])
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A server speaking the vendor's API, with 3% of two faults and a key: (dialect, URL)."""
    dialect = request.param
    settings = served("--dialect", dialect, "--api-key", "k3y", *FAULTS)
    assert (settings.dialect, settings.api_key, settings.fault_500) == (dialect, "k3y", 0.03)
    server = TranslationServer(settings)
    url = trio.run(server.start)
    try:
        yield dialect, url
    finally:
        trio.run(server.stop)


def served(*args: str) -> ServerSettings:
    """The settings ``vtpoll serve --host 127.0.0.1 --port 0 ARGS`` runs its server with."""
    seen: list[ServerSettings] = []

    def run_server(settings: ServerSettings) -> int:
        seen.append(settings)
        return 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sim_server._cli, "run_server", run_server)
        code, stderr = run("serve", "--host", "127.0.0.1", "--port", "0", *args)
    assert code == 0, stderr
    [settings] = seen
    return settings


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"NO_COLOR": "1"}, catch_exceptions=False)
    return result.exit_code, result.stderr


def test_watch_speaks_the_vendors_dialect(vendor, tmp_path: Path):
    """Every job its true outcome through faults, the dialect's kept fields in each line."""
    dialect, url = vendor
    _watch_and_check(dialect, url, ["--dialect", dialect], _named(url, "name", 8), tmp_path)


@pytest.mark.parametrize("vendor", ["heygen"], indirect=True)
def test_watch_speaks_a_dialect_file(vendor, tmp_path: Path):
    """The same through a TOML file spelling HeyGen's API out, as a user's own would."""
    dialect, url = vendor
    spec = tmp_path / "heygen.toml"
    spec.write_text(HEYGEN_FILE)
    choice = ["--dialect-file", str(spec)]
    _watch_and_check(dialect, url, choice, _named(url, "file", 8), tmp_path)


def _watch_and_check(
    dialect: str, url: str, choice: list[str], truth: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    code, stderr = run(
        "watch",
        *truth,
        *choice,
        "--base-url",
        url,
        "--api-key",
        "k3y",
        "--max-retries",
        "10",
        "--initial-delay",
        "0.1",
        "--max-delay",
        "0.4",
        "-o",
        str(out),
        "--quiet",
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["job_id"]: r["outcome"] for r in rows} == truth, stderr
    assert code == 1  # some jobs end in error, as they should
    done = [r for r in rows if r["outcome"] == "completed"]
    if dialect == "heygen":
        assert all(r["kept"]["data.url"].endswith(f"/{r['job_id']}.mp4") for r in done)
    else:
        assert all(r["kept"]["target_languages"] == ["es", "de"] for r in done)


def _named(url: str, prefix: str, count: int) -> dict[str, str]:
    truth = {f"{prefix}-{i}": "error" if i % 4 == 0 else "completed" for i in range(count)}
    bodies = [
        {"job_id": job_id, "duration": 0.1 + (n % 3) / 10, "outcome": outcome}
        for n, (job_id, outcome) in enumerate(truth.items())
    ]
    trio.run(partial(create_jobs, url, bodies, api_key="k3y"))
    return truth


def test_status_speaks_the_vendors_dialect(vendor):
    dialect, url = vendor
    [job] = _named(url, "status", 1)
    code, _ = run("status", job, "--dialect", dialect, "--base-url", url, "--api-key", "k3y")
    assert code == 0


def test_a_bad_dialect_file_is_one_line_before_any_request(tmp_path: Path):
    """Refused with the file, the key and what is wrong, exit 2, no server needed."""
    spec = tmp_path / "bad.toml"
    spec.write_text(HEYGEN_FILE.replace('completed = ["success"]', "completed = []"))
    code, stderr = run(
        "watch", "a", "--dialect-file", str(spec), "--base-url", "http://127.0.0.1:9"
    )
    assert code == 2
    assert stderr == (
        f"vtpoll: error: {spec}: completed must be a non-empty list of strings or integers,"
        " got ()\n"
    )
