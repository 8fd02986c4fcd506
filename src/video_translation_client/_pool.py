"""The one place that builds the client's own httpx clients, and the split of large pools.

httpcore's connection pool looks at every connection, for every request, each time a request
is queued or a connection freed, so its cost per request grows with its size: with 1,000
connections (one per held long-poll) the client spent 23 ms of CPU per request (see
``load/README.md``). Split into pools of at most ``SHARD_SIZE`` connections, each request goes to
the pool with the fewest requests in flight, and each pool's scans stay short.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator
from http.cookiejar import DefaultCookiePolicy

# httpx imports its transport, httpcore (h11, h2 and trio's pieces with it), only when its first
# client is made: the first client of a process paid it after entering, 45-60 ms of the first
# answers (100 jobs already finished: 84-101 ms after entering, 38-45 ms for a third client).
# Imported with the library, where a program expects to pay for its imports.
import httpcore  # noqa: F401
import httpx

#: Connections per pool. Small enough that a pool's scans cost little, large enough that few
#: pools are needed (a client's in-flight cap is usually 16).
SHARD_SIZE = 32


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every pool of the process: making one loads the CA bundle (20-60 ms),
    which every session (two pools each) would otherwise pay again."""
    return httpx.create_ssl_context()


def new_http_client(connections: int, timeout: float, scheme: str = "https") -> httpx.AsyncClient:
    """An httpx client for status checks: ``connections`` at most, no redirects followed (the
    caller follows same-origin ones itself), no cookies kept. For an ``http://`` server no
    CA bundle is loaded (the client follows no redirect to another origin, https included)."""
    verify = tls_context() if scheme == "https" else False
    if connections > SHARD_SIZE:
        http = httpx.AsyncClient(
            transport=sharded_transport(connections, verify=verify),
            timeout=timeout,
            follow_redirects=False,
        )
    else:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        http = httpx.AsyncClient(
            limits=limits, timeout=timeout, follow_redirects=False, verify=verify
        )
    # A status client has no use for cookies, and a server setting new ones on every answer
    # would grow the jar (and each request's Cookie header) without end.
    http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return http


def sharded_transport(
    connections: int, shard_size: int = SHARD_SIZE, *, verify: ssl.SSLContext | bool = True
) -> ShardedTransport:
    """``connections`` connections in as few pools of at most ``shard_size`` as will do."""
    if verify is True:
        verify = tls_context()
    count = math.ceil(connections / shard_size)
    size = math.ceil(connections / count)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    return ShardedTransport(
        [httpx.AsyncHTTPTransport(limits=limits, verify=verify) for _ in range(count)]
    )


class ShardedTransport(httpx.AsyncBaseTransport):
    """Sends each request through the shard with the fewest requests in flight."""

    def __init__(self, shards: list[httpx.AsyncBaseTransport]) -> None:
        self._shards = shards
        self._active = [0] * len(shards)

    @property
    def active(self) -> list[int]:
        return list(self._active)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._shards)), key=self._active.__getitem__)
        self._active[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._active[index] -= 1
            raise
        response.stream = _Releasing(response.stream, self, index)
        return response

    def _release(self, index: int) -> None:
        self._active[index] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _Releasing(httpx.AsyncByteStream):
    """The response body; closing it frees its connection, and so its pool's slot."""

    def __init__(self, stream: object, owner: ShardedTransport, index: int) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._owner = owner
        self._index: int | None = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._index is not None:
                self._owner._release(self._index)
                self._index = None
