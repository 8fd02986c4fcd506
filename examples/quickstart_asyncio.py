"""The original quick start: an asyncio program polling one job on the embedded server.

Needs the ``server`` extra, for the embedded simulation server (the library alone needs none):
``pip install "video-translation-client[server]"``; in a clone of this repository ``uv run``
installs it.
"""

import asyncio

from sim_server import TranslationServer
from video_translation_client import StatusPollingConfig, StatusResponse, VideoTranslationClient


def on_status_change(status: StatusResponse) -> None:
    print(f"status: {status.status.value} after {status.elapsed_time:.2f} s")


async def main() -> None:
    async with TranslationServer(completion_time=2.0, error_rate=0.0) as server:
        client = VideoTranslationClient(
            server.url,
            config=StatusPollingConfig(
                initial_delay=1.0, max_delay=8.0, backoff_factor=3.0, timeout=60.0
            ),
            on_status_change=on_status_change,
        )
        async with client:
            final = await client.poll_until_complete()
        print(f"final: {final.status.value} in {final.elapsed_time:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
