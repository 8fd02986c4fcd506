"""Reading an answer's body within a size limit.

A status is a few hundred bytes, a batch of 100 a few dozen kilobytes. A server may instead send
an endless body, or 4 MB of gzip that inflates to 4 GiB. The body is read chunk by chunk and
decoded here, not by httpx, so that the limit counts decoded bytes and decoding stops as soon as
it is passed: memory stays within the limit (plus one network chunk) whatever arrives.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import httpx

#: What the client asks for: encodings it decodes itself within the limit.
ACCEPT_ENCODING = "gzip, deflate"


class BodyError(Exception):
    """The body cannot be read: over the limit, in an encoding the client did not ask for,
    or corrupt."""


class _Decoder(Protocol):
    def decode(self, data: bytes, room: int) -> bytes: ...

    def flush(self, room: int) -> bytes: ...


class _Identity:
    def decode(self, data: bytes, room: int) -> bytes:
        return data[:room]

    def flush(self, room: int) -> bytes:
        return b""


class _Inflate:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it), never inflating more
    than ``room`` bytes at a time."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._zlib = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes, room: int) -> bytes:
        try:
            out = self._zlib.decompress(data, room)
        except zlib.error:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise
            # "deflate" without the zlib header: start again as raw deflate.
            self._wbits = -zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(self._wbits)
            out = self._zlib.decompress(data, room)
        self._started = True
        # Output stops at ``room`` bytes (what is left of the input waits in unconsumed_tail):
        # reaching it means the body is over the limit, and the rest is never inflated.
        return out

    def flush(self, room: int) -> bytes:
        return self._zlib.flush(room) if room > 0 else b""


def _decoder(encoding: str) -> _Decoder:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if not codings or codings == ["identity"]:
        return _Identity()
    if codings == ["gzip"] or codings == ["x-gzip"]:
        return _Inflate(zlib.MAX_WBITS | 16)
    if codings == ["deflate"]:
        return _Inflate(zlib.MAX_WBITS)
    raise BodyError(f"an answer in content-encoding {encoding[:40]!r}, which was not asked for")


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The decoded body of a streamed ``response``; :class:`BodyError` past ``limit`` bytes."""
    if response.is_stream_consumed:
        # Made in memory (a mock transport, an event hook that read it): httpx has read and
        # decoded it already, so there is nothing left to bound but its length.
        if len(response.content) > limit:
            raise BodyError(_over(limit))
        return response.content
    declared = response.headers.get("content-length", "")
    if (
        declared.isdigit()
        and len(declared) < 20
        and int(declared) > limit
        and ("content-encoding" not in response.headers)
    ):
        raise BodyError(
            f"an answer of {int(declared):,} bytes, over the limit of {limit:,}"
            " (max_response_bytes)"
        )
    decoder = _decoder(response.headers.get("content-encoding", ""))
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("an httpx.AsyncClient's response has an async stream")
    body = bytearray()
    # The stream is iterated here, not through aiter_raw(), so that the iterator can be closed
    # when reading stops early: trio warns of async generators left to the collector.
    chunks = stream.__aiter__()
    try:
        async for chunk in chunks:
            body += decoder.decode(chunk, limit - len(body) + 1)
            if len(body) > limit:
                break
        else:
            body += decoder.flush(limit - len(body) + 1)
    except zlib.error as exc:
        raise BodyError(f"a corrupt compressed answer ({exc})") from None
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    if len(body) > limit:
        raise BodyError(_over(limit))
    return bytes(body)


def _over(limit: int) -> str:
    return f"an answer of more than {limit:,} bytes once decoded (max_response_bytes)"
