"""A worker's Prometheus endpoint (``vtpoll fleet worker --metrics-port``): what it holds, what
it recorded, dropped and took over, and its client's requests, as counters and gauges.

prometheus_client serves from a thread of its own; the worker's figures are read there from a
snapshot the worker takes in its own loop every second (the library's counters are not made
to be read from another thread while they change)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from video_translation_client import ClientStatistics

#: Seconds between two snapshots.
EVERY = 1.0


class Snapshot(NamedTuple):
    #: The worker's own counters (a ``WorkerStats`` as a dict), jobs it holds, its client's,
    #: and how many of the fleet's shards it reads new jobs from.
    worker: dict[str, int]
    held: int
    client: ClientStatistics
    shards_read: int


#: (metric, help) of each worker counter.
WORKER_COUNTERS = {
    "recorded": ("vtpoll_fleet_results_recorded", "Results this worker recorded."),
    "stale": (
        "vtpoll_fleet_results_stale",
        "Results dropped: their jobs were no longer this worker's (fenced, or cancelled).",
    ),
    "claimed": ("vtpoll_fleet_jobs_taken_over", "Jobs taken over from workers that stopped."),
    "resumed": ("vtpoll_fleet_jobs_resumed", "Jobs this worker's name held when it started."),
    "dead_letters": (
        "vtpoll_fleet_jobs_dead_lettered",
        "Jobs recorded failed for having been delivered too often.",
    ),
    "paused_waits": ("vtpoll_fleet_paused_waits", "Seconds-long waits while the fleet paused."),
    "stolen": (
        "vtpoll_fleet_jobs_stolen",
        "New jobs taken from shards other workers read, this worker's own having none left.",
    ),
    "adopted": (
        "vtpoll_fleet_jobs_adopted",
        "Jobs found held by this worker unknown to it (a call that ran, its reply lost).",
    ),
}
#: (metric, help) of each client counter.
CLIENT_COUNTERS = {
    "requests": ("vtpoll_client_requests", "HTTP requests sent to the status API."),
    "status_checks": ("vtpoll_client_status_checks", "Answers about one job each."),
    "retries": ("vtpoll_client_retries", "Requests that retried a transient failure."),
    "throttled": ("vtpoll_client_throttled", "Answers with status 429."),
}


class WorkerMetrics(Collector):
    """The collector: the last snapshot, as metrics labelled with the worker's name."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.snapshot: Snapshot | None = None

    def take(self, stats: object, held: int, client: ClientStatistics, shards_read: int) -> None:
        assert dataclasses.is_dataclass(stats)
        counters = dataclasses.asdict(stats)  # type: ignore[arg-type]
        self.snapshot = Snapshot(counters, held, client, shards_read)

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        for field, (name, about) in WORKER_COUNTERS.items():
            yield self._one(
                CounterMetricFamily(name, about, labels=["worker"]), snapshot.worker[field]
            )
        for field, (name, about) in CLIENT_COUNTERS.items():
            value = getattr(snapshot.client, field)
            yield self._one(CounterMetricFamily(name, about, labels=["worker"]), value)
        held = GaugeMetricFamily(
            "vtpoll_fleet_jobs_held", "Jobs this worker polls now.", labels=["worker"]
        )
        yield self._one(held, snapshot.held)
        shards = GaugeMetricFamily(
            "vtpoll_fleet_shards_read",
            "The fleet's shards this worker reads new jobs from (it takes over in all).",
            labels=["worker"],
        )
        yield self._one(shards, snapshot.shards_read)

    def _one(self, family: CounterMetricFamily | GaugeMetricFamily, value: float) -> Metric:
        family.add_metric([self.worker], value)
        return family


@contextlib.contextmanager
def serving(metrics: WorkerMetrics, host: str, port: int) -> Iterator[str]:
    """Serve ``metrics`` on http://host:port/metrics (port 0: a free one) while in the block;
    yields the URL."""
    registry = CollectorRegistry()
    registry.register(metrics)
    server, thread = start_http_server(port, addr=host, registry=registry)
    try:
        bound = server.server_address[1]
        yield f"http://{host}:{bound}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
