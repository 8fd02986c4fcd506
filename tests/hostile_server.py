"""A server of the test's own on 127.0.0.1:0 that answers whatever the test says, for the rows
where the client's own connection pool or the command line must meet it over a real socket."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: (path, request headers) -> (status code, response headers, body)
Handler = Callable[[str, dict[str, str]], tuple[int, list[tuple[str, str]], bytes]]


@contextmanager
def hostile_server(answer: Handler) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Serve ``answer`` on 127.0.0.1:0; yields the base URL and the headers of each request."""
    seen: list[dict[str, str]] = []

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append(headers)
            code, extra, body = answer(self.path, headers)
            self.send_response(code)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test reads what it needs from ``seen``

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    # shutdown() returns when serve_forever next wakes: by default every 0.5 s, which each test
    # using this server waited out.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="hostile server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
