"""The simulation app in process, for the tests that poll it on trio's virtual clock."""

from __future__ import annotations

import httpx
import trio

from sim_server import ServerSettings, create_app
from sim_server._state import SimState, sim_state
from sim_server.testing import SimTransport, create_jobs


class Sim:
    """The app in process on trio's clock, with an httpx client over it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.app = create_app(settings, backend="trio", clock=trio.current_time)
        self.state: SimState = sim_state(self.app)
        self.client = httpx.AsyncClient(transport=SimTransport(self.app), base_url="http://sim")

    def metric(self, name: str) -> float:
        """A sample of the server's Prometheus registry, through prometheus_client's API."""
        value = self.state.metrics.registry.get_sample_value(name)
        assert value is not None, name
        return value

    async def create(self, job_id: str, duration: float, outcome: str = "completed") -> None:
        spec = {"job_id": job_id, "duration": duration, "outcome": outcome}
        await create_jobs(self.client, [spec], creators=1)
