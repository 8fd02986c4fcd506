"""Connections split over several small pools: where requests go, and when slots free up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from video_translation_client._pool import (
    SHARD_SIZE,
    ShardedTransport,
    new_http_client,
    sharded_transport,
)


def _shard(name: str, log: list[str]) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"result": "pending"}'

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(name)
        # A streamed body, as a real transport's: read only when the caller reads it.
        return httpx.Response(200, content=body())

    return httpx.MockTransport(handler)


async def test_requests_go_to_the_least_busy_shard():
    """Open responses keep their shard busy; closing one frees it for the next request."""
    log: list[str] = []
    transport = ShardedTransport([_shard(n, log) for n in "abc"])
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
        streams = []
        for _ in range(3):
            request = http.build_request("GET", "/jobs/j")
            streams.append(await http.send(request, stream=True))
        assert log == ["a", "b", "c"]
        assert transport.active == [1, 1, 1]
        await streams[1].aclose()
        assert transport.active == [1, 0, 1]
        await http.get("/jobs/j")  # read and closed at once
        assert log[-1] == "b"
        assert transport.active == [1, 0, 1]
        for stream in streams:
            await stream.aclose()  # closing twice releases once
        assert transport.active == [0, 0, 0]


def test_pool_sizes():
    """A big pool is split into pools of at most SHARD_SIZE; a small one is not."""
    transport = sharded_transport(1000)
    assert len(transport.active) == 32
    assert isinstance(new_http_client(1000, 10)._transport, ShardedTransport)
    assert not isinstance(new_http_client(SHARD_SIZE, 10)._transport, ShardedTransport)
