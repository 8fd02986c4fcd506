"""``vtpoll``: the command line."""

from __future__ import annotations

import click

from sim_server._cli import serve


@click.group()
@click.version_option(package_name="video-translation-client")
def main() -> None:
    """Poll the status of many video translation jobs, and run the simulation server."""


main.add_command(serve)
