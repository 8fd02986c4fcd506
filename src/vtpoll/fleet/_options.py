"""Options every fleet command takes, and how a fleet command reaches Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import trio

from .._errors import Problem
from ._redis import Fleet, FleetError, open_fleet

T = TypeVar("T")


def fleet_options(func: Any) -> Any:
    func = click.option(
        "--fleet",
        "fleet_name",
        default="default",
        show_default=True,
        help="The fleet's name: one Redis may hold several fleets. Not '{', '}' or ':' (its"
        " keys' hash tags are made of it).",
    )(func)
    return click.option(
        "--redis",
        "redis_url",
        envvar="VTPOLL_REDIS",
        show_envvar=True,
        required=True,
        help="The fleet's Redis: redis://HOST:PORT[/DB], rediss://..., or unix:///PATH.",
    )(func)


def with_fleet(url: str, name: str, body: Callable[[Fleet], Awaitable[T]]) -> T:
    """Run ``body`` on the fleet; a Redis that cannot be used is a usage error (exit 2)."""

    async def main() -> T:
        async with open_fleet(url, name) as fleet:
            return await body(fleet)

    try:
        return trio.run(main)
    except FleetError as exc:
        raise Problem(str(exc)) from None
