"""The public surface is exactly what __all__ says, and nothing private leaks into it."""

from __future__ import annotations

import sim_server
import video_translation_client


def test_client_all_is_the_public_surface():
    """Every public name of the package is in __all__, every name in __all__ exists."""
    public = {n for n in dir(video_translation_client) if not n.startswith("_")}
    assert public == set(video_translation_client.__all__)
    assert video_translation_client.__all__ == sorted(video_translation_client.__all__)
    for name in video_translation_client.__all__:
        assert getattr(video_translation_client, name).__module__.startswith(
            "video_translation_client."
        )


def test_server_all_is_the_public_surface():
    """The server package exports what its __all__ lists (plus the testing helper module)."""
    public = {n for n in dir(sim_server) if not n.startswith("_")} - {"testing"}
    assert public == set(sim_server.__all__)
