"""What hostile answers cost the client: peak memory for a gzip bomb and an endless body.

    uv run python load/hostile.py [--bomb-mib 4096] [--endless-mib 200] [--json PATH]

A server of the script's own, on 127.0.0.1 in a thread, answers every status request with the
hostile body: ``bomb``, gzip that inflates to ``--bomb-mib`` MiB of zeros (4 MB of gzip for the
default 4 GiB); ``endless``, ``--endless-mib`` MiB of plain body, sent as fast as the client
reads. For each case a fresh client process polls one job with the library's defaults (but
``--max-retries``, 2) and reports its resident memory before the first request and its peak after,
how the job ended, and how many bytes the server got to send. The client reads at most
``max_response_bytes`` (1 MiB) of each answer, decoded, so its peak should stay a few MiB above
where it started whatever the body.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    client_process,
    client_report,
    print_table,
    report,
    write_json,
)

CASES = ("bomb", "endless")
CHUNK = 64 * 1024
MIB = 1 << 20
COLUMNS = [
    ("case", "case"),
    ("body_mib", "body MiB (decoded)"),
    ("sent_mib", "sent MiB"),
    ("outcome", "outcome"),
    ("requests", "requests"),
    ("rss_before_mib", "RSS before MiB"),
    ("rss_peak_mib", "RSS peak MiB"),
    ("error", "error"),
]


def gzip_bomb(inflated_mib: int) -> bytes:
    """gzip of ``inflated_mib`` MiB of zeros (about 1 KiB of gzip per MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MIB)
    return b"".join(packer.compress(zeros) for _ in range(inflated_mib)) + packer.flush()


class Hostile(ThreadingHTTPServer):
    """Answers every GET with one case's body; counts the bytes it got to send."""

    daemon_threads = True

    def __init__(self, case: str, args: argparse.Namespace) -> None:
        self.case = case
        self.sent = 0
        self.bomb = gzip_bomb(args.bomb_mib) if case == "bomb" else b""
        self.endless_mib = args.endless_mib
        super().__init__(("127.0.0.1", 0), _Answer)

    def chunks(self) -> Iterator[bytes]:
        if self.case == "bomb":
            for start in range(0, len(self.bomb), CHUNK):
                yield self.bomb[start : start + CHUNK]
        else:
            filler = b'{"result": "pending", "padding": "' + b"x" * CHUNK
            for _ in range(self.endless_mib * MIB // len(filler)):
                yield filler


class _Answer(BaseHTTPRequestHandler):
    server: Hostile

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.case == "bomb":
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(self.server.bomb)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in self.server.chunks():
                self.wfile.write(chunk)
                self.server.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def log_message(self, format: str, *args: object) -> None:
        pass


def client_main(url: str, max_retries: int) -> None:
    """Runs in its own process: poll one job, print one JSON line."""
    import trio

    from video_translation_client import StatusPollingConfig, VideoTranslationClient

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def main() -> dict[str, Any]:
        config = StatusPollingConfig(max_retries=max_retries, timeout=120)
        client = VideoTranslationClient(url, config)
        async with client:
            before = rss_mib()
            [result] = await client.poll_many(["hostile-1"])
        return {
            "outcome": result.outcome.value,
            "error": f"{type(result.error).__name__}: {result.error.__cause__ or result.error}"
            if result.error
            else None,
            "requests": client.statistics().requests,
            "rss_before_mib": round(before, 1),
            "rss_peak_mib": round(rss_mib(), 1),
        }

    report(trio.run(main))


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    server = Hostile(case, args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = client_process(
            __file__, f"http://127.0.0.1:{server.server_port}", f"--max-retries={args.max_retries}"
        )
        out = client_report(client, case, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    body = args.bomb_mib if case == "bomb" else args.endless_mib
    return {"case": case, "body_mib": body, "sent_mib": round(server.sent / MIB, 2), **out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-mib", type=int, default=4096, help="inflated size (4096)")
    parser.add_argument("--endless-mib", type=int, default=200, help="plain body size (200)")
    parser.add_argument("--max-retries", type=int, default=2, help="the client's (2)")
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client, args.max_retries)
        return
    rows = [run_case(case, args) for case in CASES]
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
