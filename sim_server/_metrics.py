"""Prometheus metrics, one registry per app so that several servers in one process stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ._asgi import ASGIApp, Message, Receive, Scope, Send


def route_of(method: str, path: str) -> str:
    """The route template a path belongs to: the label must not grow with the number of jobs."""
    if path.startswith("/jobs/"):
        return "/jobs/{id}/status" if path.endswith("/status") else "/jobs/{id}"
    if path in ("/jobs", "/status", "/metrics", "/healthz", "/openapi.json"):
        return path
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sim_requests",
            "HTTP requests by route and status code",
            ["route", "method", "code"],
            registry=r,
        )
        self.status_checks = Counter(
            "sim_status_checks", "Job status checks (a batch counts one per job)", registry=r
        )
        self.checks_per_job = Histogram(
            "sim_status_checks_per_job",
            "Status checks a job received up to the first answer that showed its final state",
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100),
            registry=r,
        )
        self.faults = Counter(
            "sim_faults_injected", "Faults injected by kind", ["kind"], registry=r
        )
        self.throttled = Counter(
            "sim_rate_limited",
            "Requests refused with 429 by the server-side rate limit",
            registry=r,
        )
        self.long_polls_held = Gauge(
            "sim_long_polls_held", "Long-poll requests being held right now", registry=r
        )
        self.long_polls = Counter("sim_long_polls", "Long-poll requests held", registry=r)
        self.jobs_created = Counter("sim_jobs_created", "Jobs created", ["how"], registry=r)
        self._checks: dict[str, int] = {}

    def record_check(self, job_id: str, *, final: bool) -> None:
        self.status_checks.inc()
        n = self._checks.get(job_id, 0)
        if n < 0:  # final state already reported for this job
            return
        if final:
            self.checks_per_job.observe(n + 1)
            self._checks[job_id] = -1
        else:
            self._checks[job_id] = n + 1


class MetricsMiddleware:
    """Counts every response, including those that injected faults make before the app runs."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = route_of(scope["method"], scope["path"])
            self.metrics.requests.labels(route, scope["method"], str(status or "dropped")).inc()
