"""Settings are validated at construction with messages naming the field and the value."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from sim_server import ServerSettings, TranslationServer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_rate": 1.5}, "error_rate must be a probability in [0, 1], got 1.5"),
        ({"fault_503": -0.1}, "fault_503 must be a probability in [0, 1], got -0.1"),
        ({"completion_time": -1}, "completion_time must be a finite number >= 0, got -1"),
        (
            {"completion_time": float("inf")},
            "completion_time must be a finite number >= 0, got inf",
        ),
        ({"max_wait": float("nan")}, "max_wait must be a finite number >= 0, got nan"),
        ({"port": 70000}, "port must be an integer in [0, 65535], got 70000"),
        ({"rate_limit": 0}, "rate_limit must be a finite number > 0, got 0"),
        ({"rate_limit": 5, "burst": 0}, "burst must be an integer >= 1, got 0"),
        ({"burst": 5}, "burst needs rate_limit to be set"),
        ({"api_key": ""}, "api_key must be a non-empty string of visible ASCII characters"),
        ({"api_key": "clé"}, "api_key must be a non-empty string of visible ASCII characters"),
        (
            {"db": Path("/no/such/dir/jobs.db")},
            "db must be in an existing directory, got '/no/such/dir/jobs.db'",
        ),
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
        (
            {"fault_500": 0.6, "fault_drop": 0.6},
            "the fault probabilities add up to 1.2, more than 1",
        ),
    ],
)
def test_invalid_settings_name_the_field(kwargs, message):
    """Each bad setting is a ValueError naming the field and the bad value."""
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ServerSettings(**kwargs)


def test_api_key_hidden_from_repr():
    """The API key is not in the settings' repr."""
    settings = ServerSettings(api_key="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(TranslationServer(settings))


def test_round_trip_through_dict():
    """Settings survive the trip to worker processes unchanged."""
    from pathlib import Path

    settings = ServerSettings(rate_limit=3.5, burst=4, db=Path("/tmp/x.db"), fault_slow=0.1)
    assert ServerSettings.from_dict(settings.to_dict()) == settings


def test_server_takes_settings_or_keywords_not_both():
    """TranslationServer refuses an ambiguous mix of a settings object and keywords."""
    with pytest.raises(TypeError, match="either settings or keyword arguments"):
        TranslationServer(ServerSettings(), error_rate=0.5)


async def test_completion_time_and_error_rate_change_a_running_server():
    """As the original design's tests do: setting error_rate or completion_time on a running
    TranslationServer takes effect (the default job is made again with them); any other
    setting raises rather than being ignored; a bad value is refused as at construction."""
    with trio.fail_after(20):
        async with (
            TranslationServer(completion_time=0.1, error_rate=0.0) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            server.error_rate = 1.0
            server.completion_time = 3600.0
            assert (server.error_rate, server.completion_time) == (1.0, 3600.0)
            assert (await http.get("/status")).json() == {"result": "pending"}
            # The default job's clock starts with the server: asked at least this long after
            # the change, it has ended, however slow the machine (a sleep is a lower bound).
            server.completion_time = 0.05
            await trio.sleep(0.05)
            assert (await http.get("/status")).json() == {"result": "error"}
            server.completion_time = 3600.0
            assert (await http.get("/status")).json() == {"result": "pending"}
            with pytest.raises(AttributeError, match="max_wait cannot be changed"):
                server.max_wait = 5
            with pytest.raises(ValueError, match="error_rate must be a probability"):
                server.error_rate = 2.0
            assert server.error_rate == 1.0


def test_without_a_seed_each_server_draws_afresh():
    """No seed: a new one each run (the original drew outcomes afresh); a seed fixes them."""
    from sim_server._state import SimState

    def seed_of(settings: ServerSettings) -> int:
        state = SimState(settings, lambda: 0.0)
        state.store.close()
        return state.seed

    assert seed_of(ServerSettings()) != seed_of(ServerSettings())
    assert seed_of(ServerSettings(seed=5)) == seed_of(ServerSettings(seed=5)) == 5
