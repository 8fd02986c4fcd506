from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from hypothesis import settings

from sim_server import ServerSettings, create_app
from sim_server._app import SimState, sim_state
from sim_server.testing import SimTransport

# The suite must give the same verdict on every run: hypothesis explores the same examples
# each time, and keeps no database of past failures between runs.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


class Sim:
    """The app in process on trio's clock, with an httpx client over it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.app = create_app(settings, backend="trio", clock=trio.current_time)
        self.state: SimState = sim_state(self.app)
        self.client = httpx.AsyncClient(transport=SimTransport(self.app), base_url="http://sim")

    async def create(self, job_id: str, duration: float, outcome: str = "completed") -> None:
        r = await self.client.post(
            "/jobs", json={"job_id": job_id, "duration": duration, "outcome": outcome}
        )
        assert r.status_code == 201, r.text


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Sim]]:
    made: list[Sim] = []

    def make(**settings: Any) -> Sim:
        settings.setdefault("error_rate", 0.0)
        sim = Sim(ServerSettings(**settings))
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.client.aclose()
        sim.state.store.close()
