"""What a client needs to drive the simulation server: create jobs, wait until it is healthy,
and reach the app in process (no sockets, virtual time welcome).

Importing this does not import Quart or hypercorn: load scripts and the command line use it
without paying for the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx

from ._asgi import ASGIApp, Message, Receive, Scope, Send
from ._settings import MAX_BATCH


def tls(url: str) -> bool:
    """httpx's ``verify`` for ``url``: certificates checked over https; none loaded for
    plain http, where they are never used and loading them costs 70 ms of CPU a client
    (httpx loads them for every client it makes, whatever the scheme)."""
    return url.startswith("https:")


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    """Block until ``url``'s ``/healthz`` answers 200 (a server process, or its workers, may
    still be importing the app); ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0, verify=tls(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy within {timeout} s")
        time.sleep(0.05)


#: What ``POST /jobs`` is sent for one job: a body, or a function that makes it when it is sent
#: (a job whose duration counts from a planned instant needs to know when that is).
JobSpec = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
#: Creations in flight at once.
CREATORS = 8
#: 429 answers in a row one creation waits out before giving up.
THROTTLE_RETRIES = 20


class CreationFailed(Exception):
    """A job could not be created; ``created`` holds the IDs of those that were, by index."""

    def __init__(self, message: str, created: dict[int, str]) -> None:
        super().__init__(message)
        self.created = created


async def create_jobs(
    server: str | httpx.AsyncClient,
    specs: Sequence[JobSpec],
    *,
    api_key: str | None = None,
    on_created: Callable[[str], None] | None = None,
    creators: int = CREATORS,
) -> list[str]:
    """``POST /jobs`` for each spec, ``creators`` at a time; returns the IDs in spec order.

    ``server`` is a base URL or an httpx client already pointed at the server. ``on_created``
    sees each ID the moment it exists, so a failure later loses none of them. A 429 is waited
    out as its ``Retry-After`` says; any other refusal or a network error stops the creation
    and raises :class:`CreationFailed` naming it.
    """
    created: dict[int, str] = {}
    work: Iterator[tuple[int, JobSpec]] = iter(enumerate(specs))
    async with AsyncExitStack() as stack:
        if isinstance(server, str):
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server, headers=headers, timeout=30.0, verify=tls(server)
                )
            )
        else:
            http = server
        where = str(http.base_url).rstrip("/")

        async def creator() -> None:
            for index, spec in work:
                body = spec() if callable(spec) else spec
                job_id = await _create_one(http, where, body)
                created[index] = job_id
                if on_created is not None:
                    on_created(job_id)

        try:
            async with anyio.create_task_group() as group:
                for _ in range(creators):
                    group.start_soon(creator)
        except* _Refused as failures:
            first = failures.exceptions[0]
            message = f"{first} ({len(created)} of {len(specs)} jobs created)"
            raise CreationFailed(message, created) from None
    return [created[index] for index in range(len(specs))]


class _Refused(Exception):
    pass


async def _create_one(http: httpx.AsyncClient, where: str, body: Mapping[str, Any]) -> str:
    for _ in range(THROTTLE_RETRIES):
        try:
            response = await http.post("/jobs", json=dict(body))
        except httpx.HTTPError as exc:
            raise _Refused(f"cannot create jobs at {where}: {exc!r}") from None
        if response.status_code != 429:
            break
        await anyio.sleep(_retry_after(response))
    if response.status_code != 201:
        raise _Refused(
            f"POST {where}/jobs answered {response.status_code}: {response.text[:200].strip()}"
        )
    return str(response.json()["job_id"])


def _retry_after(response: httpx.Response) -> float:
    """The server's own hint, in the format it writes (milliseconds, or whole seconds)."""
    for header, unit in (("Retry-After-Ms", 0.001), ("Retry-After", 1.0)):
        try:
            return max(0.0, float(response.headers.get(header, "")) * unit)
        except ValueError:
            continue
    return 1.0


def recorded_results(url: str, ids: list[str], *, attempts: int = 50) -> dict[str, str]:
    """Each job's result as the server records it, read in batches of 100; an answer that is
    not a batch (a fault, a 429) is asked again, ``attempts`` times at most per batch."""
    out: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=30, verify=tls(url)) as http:
        for start in range(0, len(ids), MAX_BATCH):
            batch = ids[start : start + MAX_BATCH]
            query = {"ids": ",".join(batch)}
            for _ in range(attempts):
                try:
                    response = http.get("/jobs", params=query)
                    if response.status_code == 200:
                        out.update({j["job_id"]: j["result"] for j in response.json()["jobs"]})
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{url} did not answer a batch of {len(batch)} IDs")
    return out


class SimTransport(httpx.ASGITransport):
    """``httpx.ASGITransport`` that turns a response cut short into what a socket would give.

    Over a real socket, the ``drop`` fault closes the connection mid-body and httpx raises
    ``RemoteProtocolError``; ASGITransport would instead trip an assertion. This raises the
    same error as the real thing, so clients see identical failures in process and on the wire.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__(app=_CutShortAware(app), client=client)


class _CutShortAware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = finished = False

        async def watching_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        await self.app(scope, receive, watching_send)
        if started and not finished:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
