"""JSON bodies for the errors hypercorn answers itself.

A request hypercorn cannot parse (a request line or headers over its 16 KiB limit: 431; a
malformed one: 400) never reaches the app: hypercorn answers it with an empty body. Every other
4xx of this server is JSON naming the problem, so these are made JSON too, by replacing the
method of hypercorn's HTTP/1.1 protocol that sends them. It is hypercorn's internal API: a test
(``test_e2e.py``) sends such a request to a real server, so an upgrade that moves it fails there.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from itertools import chain
from typing import Any

import h11
from hypercorn.protocol.h11 import H11Protocol


def install() -> None:
    """Make hypercorn's own error answers JSON (idempotent)."""
    if getattr(H11Protocol._send_error_response, "_json", False):
        return

    async def send_json_error(self: Any, status_code: int) -> None:
        try:
            phrase = HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "Error"
        body = json.dumps(
            {
                "error": phrase.lower().replace(" ", "_"),
                "detail": f"{phrase}: the request could not be read (request line and headers"
                " are limited to 16 KiB; a batch takes at most 100 IDs)",
            },
            separators=(",", ":"),
        ).encode()
        headers = chain(
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
            self.config.response_headers("h11"),
        )
        await self._send_h11_event(h11.Response(status_code=status_code, headers=list(headers)))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    send_json_error._json = True  # type: ignore[attr-defined]
    H11Protocol._send_error_response = send_json_error  # type: ignore[method-assign]
