"""Fleet mode: jobs across worker processes on one Redis and on a 3-master Redis Cluster,
and chaos runs that must each end with every job's true result once.

    uv run python load/fleet.py [--jobs 100000] [--workers 1 2 4] [--backends single cluster]
                                [--chaos kill freeze-worker restart-worker freeze-redis
                                 restart-redis all] [--chaos-workers 4] [--redis-freeze 30]
                                [--chaos-on single cluster]
                                [--completion-time 10] [--lease 10] [--capacity 10000]
                                [--rate 2000] [--json PATH]

``single`` is one redis-server on a unix socket, with AOF (``appendfsync everysec``); a
fleet there has one shard. ``cluster`` is three redis-server masters on local ports, slots
split as ``redis-cli --cluster create`` does, each fleet of three shards (one a node, most
often); both started as the tests start theirs (``vtpoll.fleet._local``).
One ``vtpoll serve --auto-create --error-rate 0`` process answers (a job is made on first
sight, completing after 0.5-1.5 x ``--completion-time`` s). Each run is a fleet of its own: the
jobs submitted, then that many ``vtpoll fleet worker --rate`` processes (one fleet-wide rate,
so that its limiter's Redis calls are counted), until every result is recorded; then ``vtpoll
fleet results --ack`` writes them to a file and removes them from Redis. Measured: wall time
from the workers' start to the last result, jobs per second, status requests per job (the
server's count), Redis commands per job (INFO's total_commands_processed over the nodes, from
before the submit to before the results are read: submit, reads, records, leases, takeovers,
the limiter), Redis bytes per job once recorded and once acknowledged (INFO's used_memory over
the nodes, after minus before), each worker's peak RSS, and of the results file: how many,
duplicates, and whether every outcome is the server's (``true``: every job of ``--auto-create``
completes).

Chaos runs (on the single Redis, or the backends ``--chaos-on`` names, named in ``--backends``
or not; a cluster takes the workers' faults only; ``--chaos-workers`` workers),
each once 10% of the results are in: ``kill``, worker w0 killed with SIGKILL (takeover: from
the kill until none of its jobs is pending under its name); ``freeze-worker``, w0 stopped
(SIGSTOP) for two leases, then let go (fenced: its late results are dropped);
``restart-worker``, w0 stopped by SIGTERM (its jobs handed back) and started again under its
name; ``freeze-redis``, redis-server stopped for ``--redis-freeze`` s; ``restart-redis``,
redis-server killed (SIGKILL: up to the last second of writes lost) and started again on its
AOF. ``all`` strikes the five in one run, in that order, once 10, 25, 40, 55 and 70% of the
results are in, the workers' faults each on a worker of its own (w0, w1, w2; at least three
``--chaos-workers``). After a Redis restart its counters start again, so commands and bytes
per job are not given for that run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import metrics, print_table, server, spawn, stop, write_json

from vtpoll.fleet import _local
from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Fleet
from vtpoll.fleet._scripts import GROUP

COLUMNS = [
    ("backend", "Redis"),
    ("workers", "workers"),
    ("chaos", "chaos"),
    ("jobs", "jobs"),
    ("wall_s", "wall s"),
    ("jobs_per_s", "jobs/s"),
    ("requests_per_job", "req/job"),
    ("redis_commands_per_job", "Redis cmds/job"),
    ("redis_bytes_per_job", "bytes/job"),
    ("redis_bytes_per_job_acked", "bytes/job acked"),
    ("peak_rss_mib_per_worker", "peak RSS MiB"),
    ("takeover_s", "takeover s"),
    ("results", "results"),
    ("duplicates", "dup"),
    ("true", "true"),
]
CHAOS = ("kill", "freeze-worker", "restart-worker", "freeze-redis", "restart-redis")
#: The faults struck on a worker (the others strike Redis).
ON_A_WORKER = CHAOS[:3]
#: The share of the results in when a fault strikes, alone or in ``all`` (in CHAOS's order).
SHARES = (0.1, 0.25, 0.4, 0.55, 0.7)


class Fault(NamedTuple):
    """A fault of a chaos run: what, once which share of the results is in, on which worker
    (None: on Redis)."""

    kind: str
    share: float
    worker: int | None


def faults(chaos: str | None) -> list[Fault]:
    """What a run of ``chaos`` strikes, in order."""
    if chaos is None:
        return []
    if chaos != "all":
        return [Fault(chaos, SHARES[0], 0 if chaos in ON_A_WORKER else None)]
    return [
        Fault(kind, share, i if kind in ON_A_WORKER else None)
        for i, (kind, share) in enumerate(zip(CHAOS, SHARES, strict=True))
    ]


#: The single Redis's persistence: every write in the AOF, synced each second.
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


class Redis:
    """The Redis of the runs: one server with AOF on a unix socket, or a 3-master cluster."""

    def __init__(self, folder: Path, backend: str) -> None:
        self.folder, self.backend = folder, backend
        self.procs: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        if backend == "single":
            self.sock = folder / "redis.sock"
            self.url = f"unix://{self.sock}"
            self.start_single()
        else:
            self.start_cluster()

    @property
    def shards(self) -> int:
        return 1 if self.backend == "single" else 3

    def start_single(self) -> None:
        self.procs = [_local.start_redis(self.folder, *AOF, spawn=spawn)[0]]

    def start_cluster(self) -> None:
        self.procs, self.ports = _local.start_cluster(self.folder, spawn=spawn)
        self.url = f"redis://127.0.0.1:{self.ports[0]}"

    def _cli(self, args: list[str]) -> str:
        done = subprocess.run(
            [_local.redis_binary("redis-cli"), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def _info(self, field: str) -> int:
        """A counter of INFO summed over the nodes."""
        wheres = (
            [["-s", str(self.sock)]]
            if self.backend == "single"
            else [["-p", str(port)] for port in self.ports]
        )
        total = 0
        for where in wheres:
            for line in self._cli([*where, "info"]).splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split(":", 1)[1])
        return total

    def commands(self) -> int:
        return self._info("total_commands_processed")

    def memory(self) -> int:
        return self._info("used_memory")

    def freeze(self, seconds: float) -> None:
        self.procs[0].send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        self.procs[0].send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Killed (what the last second wrote may be lost) and started again on its AOF."""
        self.procs[0].kill()
        self.procs[0].wait()
        self.start_single()

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)


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


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def vtpoll_process(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``vtpoll ARGS``, a process of the script's (its smoke test forks these from one that
    imported vtpoll already: tests/_zygote.py)."""
    return spawn([sys.executable, "-m", "vtpoll", *args], **kwargs)


def ended_early(workers: list[subprocess.Popen[str]], logs: Path, chaos: str | None) -> list[str]:
    """A line for each worker (``w{i}``, its stderr in ``logs/w{i}.log``) that has ended
    while the run was still going, but the one the kill chaos ended: its exit code, its last
    words and where the rest is."""
    killed = {f.worker for f in faults(chaos) if f.kind == "kill"}
    out = []
    for i, each in enumerate(workers):
        if each.poll() is None or i in killed:
            continue
        log = logs / f"w{i}.log"
        last = log.read_text().strip().splitlines()[-3:]
        said = " | ".join(last) or "it said nothing"
        out.append(f"worker w{i} ended before the run, exit {each.returncode}: {said} ({log})")
    return out


class Watch:
    """A run's progress, read on a fleet connection until every result is in; each fault of
    the chaos struck once its share of them is in (on a worker: while it holds some); the
    takeover of a killed worker timed."""

    def __init__(
        self,
        name: str,
        args: argparse.Namespace,
        chaos: str | None,
        redis: Redis,
        workers: list[subprocess.Popen[str]],
        worker: Callable[[int], subprocess.Popen[str]],
        started: float,
    ) -> None:
        self.name, self.args, self.redis = name, args, redis
        self.workers, self.worker = workers, worker
        #: When the workers started (``time.monotonic()``).
        self.started = started
        #: The faults still to strike, the next first.
        self.faults = faults(chaos)
        #: The worker killed, and when.
        self.killed: tuple[int, float] | None = None
        self.takeover: float | None = None
        self.restarted = False
        self.wall = math.nan

    async def until_done_or_chaos(self, fleet: Fleet) -> bool:
        """Look at the progress every 0.2 s until every result is in (False), or the chaos is
        due (True: the caller strikes, with this connection closed, which a Redis restarted or
        frozen would break)."""
        jobs = self.args.jobs
        while True:
            done, pending = await _progress(fleet)
            now = time.monotonic()
            if self.faults:
                due, on = self.faults[0], self.faults[0].worker
                if done > jobs * due.share and (on is None or pending.get(f"w{on}", 0) > 0):
                    return True
            if self.killed is not None and self.takeover is None:
                i, at = self.killed
                if pending.get(f"w{i}", 0) == 0:
                    self.takeover = now - at
            if done >= jobs:
                self.wall = now - self.started
                return False
            if now - self.started > self.args.timeout:
                raise SystemExit(
                    f"{self.name}: {done} of {jobs} results after {self.args.timeout} s"
                )
            if all(w.poll() is not None for w in self.workers):  # none left to finish: said now
                codes = [w.returncode for w in self.workers]
                raise SystemExit(
                    f"{self.name}: {done} of {jobs} results, every worker ended {codes}"
                )
            await trio.sleep(0.2)

    def strike(self) -> None:
        """The next fault, on its worker or on Redis."""
        fault = self.faults.pop(0)
        i = fault.worker or 0
        on = self.workers[i]
        on_whom = f" w{i}" if fault.worker is not None else ""
        since = time.monotonic() - self.started
        print(f"{self.name}: {fault.kind}{on_whom} at {since:.0f} s", file=sys.stderr)
        if fault.kind == "kill":
            on.send_signal(signal.SIGKILL)
            self.killed = (i, time.monotonic())
        elif fault.kind == "freeze-worker":
            on.send_signal(signal.SIGSTOP)
            time.sleep(2 * self.args.lease)
            on.send_signal(signal.SIGCONT)
        elif fault.kind == "restart-worker":
            on.send_signal(signal.SIGTERM)
            on.wait(timeout=60)
            self.workers[i] = self.worker(i)
        elif fault.kind == "freeze-redis":
            self.redis.freeze(self.args.redis_freeze)
        else:
            self.redis.restart()
            self.restarted = True


def run(
    n: int, args: argparse.Namespace, redis: Redis, url: str, chaos: str | None
) -> dict[str, Any]:
    name = f"bench-{redis.backend}-{n}-{chaos or 'none'}-{int(time.time())}"
    ids = [f"{name}-{i}" for i in range(args.jobs)]
    memory0, commands0 = redis.memory(), redis.commands()
    with_fleet(redis.url, name, lambda fleet: _submit(fleet, ids, redis.shards))
    requests0 = metrics(url)["status_requests"]
    fleet_args = ("--redis", redis.url, "--fleet", name)
    # What a worker says is kept: one that ends before the run does is reported with it.
    logs = Path(tempfile.mkdtemp(prefix=f"{name}-"))

    def worker(i: int) -> subprocess.Popen[str]:
        with (logs / f"w{i}.log").open("a") as log:
            return vtpoll_process(
                [
                    *("fleet", "worker", *fleet_args, "--base-url", url, "--name", f"w{i}"),
                    *("--lease", str(args.lease), "--capacity", str(args.capacity)),
                    *("--rate", str(args.rate)),
                ],
                stderr=log,
            )

    started = time.monotonic()
    workers = [worker(i) for i in range(n)]
    watch = Watch(name, args, chaos, redis, workers, worker, started)
    try:
        # One connection up to the chaos, one after it: opened anew for each look at the
        # progress, five times a second, they cost the script most of its CPU (a cluster's
        # the most: its discovery).
        while with_fleet(redis.url, name, watch.until_done_or_chaos):
            watch.strike()
        wall = watch.wall
        rss = [peak_rss_mib(w.pid) for w in workers if w.poll() is None]
        early = ended_early(workers, logs, chaos)
        for said in early:
            print(f"{name}: {said}", file=sys.stderr)
    finally:
        for each in workers:
            if each.poll() is None:
                each.send_signal(signal.SIGCONT)
            stop(each)
    if not early:
        shutil.rmtree(logs, ignore_errors=True)
    commands = redis.commands() - commands0
    memory = redis.memory() - memory0
    requests = metrics(url)["status_requests"] - requests0
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        writer = vtpoll_process(
            ["fleet", "results", *fleet_args, "--ack", "--output", out.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _, said = writer.communicate(timeout=600)
        finally:
            stop(writer)
        if writer.returncode != 0:
            raise SystemExit(f"{name}: fleet results exited {writer.returncode}: {said}")
        records = [json.loads(line) for line in out]
    acked = redis.memory() - memory0
    outcomes = {record["job_id"]: record["outcome"] for record in records}
    counted = not watch.restarted  # a restarted Redis counts from 0 again
    return {
        "backend": redis.backend,
        "shards": redis.shards,
        "workers": n,
        "chaos": chaos or "-",
        "jobs": args.jobs,
        "wall_s": round(wall, 1),
        "jobs_per_s": round(args.jobs / wall, 1),
        "requests_per_job": round(requests / args.jobs, 3),
        "redis_commands_per_job": round(commands / args.jobs, 2) if counted else None,
        "redis_bytes_per_job": round(memory / args.jobs) if counted else None,
        "redis_bytes_per_job_acked": round(acked / args.jobs) if counted else None,
        "peak_rss_mib_per_worker": round(max(rss), 1) if rss else None,
        "takeover_s": round(watch.takeover, 1) if watch.takeover is not None else None,
        "results": len(records),
        "duplicates": len(records) - len(outcomes),
        "true": set(outcomes) == set(ids) and set(outcomes.values()) == {"completed"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument(
        "--backends", nargs="*", choices=("single", "cluster"), default=["single", "cluster"]
    )
    parser.add_argument("--chaos", nargs="*", choices=[*CHAOS, "all"], default=list(CHAOS))
    parser.add_argument("--chaos-workers", type=int, default=4)
    parser.add_argument("--chaos-on", nargs="*", choices=("single", "cluster"), default=["single"])
    parser.add_argument("--redis-freeze", type=float, default=30.0)
    parser.add_argument("--completion-time", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="the fleet-wide rate")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    args = parser.parse_args(argv)
    if "all" in args.chaos and args.chaos_workers < len(ON_A_WORKER):
        parser.error(f"--chaos all strikes {len(ON_A_WORKER)} workers: --chaos-workers too few")
    if "cluster" in args.chaos_on and not set(args.chaos) <= set(ON_A_WORKER):
        parser.error(
            "--chaos-on cluster: only the workers' faults strike it: " + ", ".join(ON_A_WORKER)
        )
    rows = []
    serve = ["--auto-create", "--error-rate", "0", "--seed", "1"]
    serve += ["--completion-time", str(args.completion_time)]
    with server(*serve) as (url, _):
        # The chaos runs are --chaos-on's backends', whether or not --backends names them.
        backends = [*args.backends, *(args.chaos_on if args.chaos else [])]
        for backend in dict.fromkeys(sorted(backends, key=("single", "cluster").index)):
            runs: list[tuple[int, str | None]] = []
            if backend in args.backends:
                runs += [(n, None) for n in args.workers]
            if backend in args.chaos_on:
                runs += [(args.chaos_workers, chaos) for chaos in args.chaos]
            with tempfile.TemporaryDirectory() as folder:
                redis = Redis(Path(folder), backend)
                try:
                    for n, chaos in runs:
                        rows.append(run(n, args, redis, url, chaos))
                        row = rows[-1]
                        print(
                            f"{backend}, {n} workers, {chaos or 'no chaos'}: {row['wall_s']} s",
                            file=sys.stderr,
                        )
                finally:
                    redis.close()
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
