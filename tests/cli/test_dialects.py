"""``vtpoll`` in each vendor's dialect, against a real server process speaking it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from sim_server.testing import create_jobs
from tests.helpers import server_process
from vtpoll import cli

#: Files spelling the vendors' APIs out, as a user with a service of their own would.
ELEVENLABS_FILE = """
status_url = "/v1/dubbing/{id}"
status_field = "status"
pending = ["dubbing"]
completed = ["dubbed"]
error = ["failed"]
auth_header = "xi-api-key"
auth_scheme = ""
keep = ["target_languages"]
"""
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
FAULTS = ("--fault-500", "0.03", "--fault-429", "0.03", "--fault-garbage", "0.03", "--seed", "7")


@pytest.fixture(scope="module", params=["elevenlabs", "heygen"])
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A server speaking the vendor's API, with 3% of each fault and a key: (dialect, URL)."""
    dialect = request.param
    with server_process("--dialect", dialect, "--api-key", "k3y", *FAULTS) as url:
        yield dialect, url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"NO_COLOR": "1"}, catch_exceptions=False)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("how", ["name", "file"])
def test_watch_speaks_the_vendors_dialect(vendor, how: str, tmp_path: Path):
    """Every job its true outcome through 3% faults and 429s (ElevenLabs' with no
    Retry-After), the dialect's kept fields in each line, a few requests per job."""
    dialect, url = vendor
    truth = _named(url, how, 12)
    choice = ["--dialect", dialect]
    if how == "file":
        spec = tmp_path / f"{dialect}.toml"
        spec.write_text(HEYGEN_FILE if dialect == "heygen" else ELEVENLABS_FILE)
        choice = ["--dialect-file", str(spec)]
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
