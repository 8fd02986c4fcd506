"""The public surface is exactly what __all__ says, and nothing private leaks into it."""

from __future__ import annotations

import subprocess
import sys

import sim_server
import video_translation_client


def test_client_all_is_the_public_surface():
    """Every public name of the package is in __all__, every name in __all__ exists."""
    public = {n for n in dir(video_translation_client) if not n.startswith("_")}
    assert public == set(video_translation_client.__all__)

    # Sorted as ruff's RUF022 keeps it: constants, then classes, then functions.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert video_translation_client.__all__ == sorted(video_translation_client.__all__, key=kind)
    for name in video_translation_client.__all__:
        assert getattr(video_translation_client, name).__module__.startswith(
            "video_translation_client."
        )


def test_server_all_is_the_public_surface():
    """The server package exports what its __all__ lists (plus the testing helper module)."""
    public = {n for n in dir(sim_server) if not n.startswith("_")} - {"testing"}
    assert public == set(sim_server.__all__)


def test_the_servers_light_parts_import_no_server():
    """Reading the settings and driving a server (sim_server.testing) import neither Quart nor
    hypercorn: the command line and the load scripts' clients use them without that cost."""
    probe = (
        "import sys; import sim_server.testing; from sim_server import ServerSettings;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'quart', 'hypercorn'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[]"


def test_the_server_without_its_extra_names_the_extra():
    """`from sim_server import TranslationServer` without hypercorn names the server extra."""
    probe = (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'hypercorn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "from sim_server import TranslationServer\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=30
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        'ModuleNotFoundError: sim_server.TranslationServer needs the "server" extra, which brings '
        'hypercorn: pip install "video-translation-client[server]"'
    )
