"""The options a polling command takes, generated from the library's own settings.

Each field of :class:`StatusPollingConfig` and each keyword argument of
:class:`VideoTranslationClient` that a command line can spell (a number, a switch, a choice)
becomes an option: its flag from its name, its type and default from the library, its help
from the library's docstring. A setting added to the library is an option here with no
change to this module; a value the library refuses is reported with the flag the user typed.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import click

from video_translation_client import (
    DIALECTS,
    Dialect,
    InvalidArgument,
    Limiter,
    StatusPollingConfig,
    VideoTranslationClient,
    load_dialect,
)

from ._errors import Problem
from ._jobfile import IdList, InputError, id_sources, read_ids

DEFAULT_BASE_URL = "http://localhost:8000"
#: Flags that read better than the library's names; every other flag is the name, dashed.
FLAG_NAMES = {"rate_limit": "--rate", "max_in_flight": "--in-flight"}
#: Settings that are numbers with an "off" value also get a ``--no-<flag>`` switch for it.
OFF_SWITCHES = {"long_poll": 0.0}
#: Client arguments that are not polling settings: the connection options carry them.
CONNECTION = ("base_url", "api_key", "dialect")


@dataclass(frozen=True, slots=True)
class Setting:
    """One library setting as an option."""

    name: str
    #: "config" for a StatusPollingConfig field, "client" for a client keyword argument.
    home: Literal["config", "client"]
    kind: Any
    default: Any
    #: None is a valid value; on the command line it is written 0.
    optional: bool
    help: str

    @property
    def flag(self) -> str:
        return FLAG_NAMES.get(self.name, "--" + self.name.replace("_", "-"))

    def option(self) -> Callable[[Any], Any]:
        text = self.help
        if self.optional:
            # The library's None is written 0 on the command line; a switch is left out.
            text = text.replace("None =", "neither flag =" if self.kind is bool else "0 =")
        if self.kind is bool:
            return click.option(
                f"{self.flag}/--no-{self.flag[2:]}",
                self.name,
                default=self.default,
                show_default=self.default is not None,
                help=text,
            )
        kind = click.Choice(typing.get_args(self.kind)) if _is_literal(self.kind) else self.kind
        default = 0 if self.default is None else self.default
        if self.name in OFF_SWITCHES:
            # The bare flag keeps meaning "on, as by default", as it did when it was a switch.
            return click.option(
                self.flag,
                self.name,
                type=kind,
                default=default,
                is_flag=False,
                flag_value=default,
                show_default=True,
                help=text,
            )
        return click.option(
            self.flag, self.name, type=kind, default=default, show_default=True, help=text
        )

    def value(self, given: Any) -> Any:
        """The library value of what was typed (0 for None, where None is allowed)."""
        zero = given == 0 and not isinstance(given, bool)  # False == 0 in Python
        return None if self.optional and zero else given


def _is_literal(kind: Any) -> bool:
    return typing.get_origin(kind) is Literal


def _spelled(hint: Any) -> tuple[Any, bool] | None:
    """(type, optional) of a setting a command line can spell, or None."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(args) == len(typing.get_args(hint)):
            return None
        hint, optional = args[0], True
    if hint in (bool, int, float) or _is_literal(hint):
        return hint, optional
    return None


def documented(obj: Any) -> dict[str, str]:
    """``name: text`` entries of the ``Args:`` or ``Attributes:`` section of a docstring."""
    docs: dict[str, str] = {}
    section = False
    name = ""
    for line in inspect.cleandoc(obj.__doc__ or "").splitlines():
        if line in ("Args:", "Attributes:"):
            section = True
        elif section and (entry := re.fullmatch(r"    (\w+): (.*)", line)):
            name = entry[1]
            docs[name] = entry[2]
        elif section and name and line.startswith("        "):
            docs[name] += " " + line.strip()
        elif section and line.strip():
            section, name = False, ""
    return docs


def _settings() -> Iterator[Setting]:
    config_docs = documented(StatusPollingConfig)
    config_hints = typing.get_type_hints(StatusPollingConfig)
    defaults = StatusPollingConfig()
    for f in fields(StatusPollingConfig):
        spelled = _spelled(config_hints[f.name])
        if spelled is not None:
            kind, optional = spelled
            default = getattr(defaults, f.name)
            yield Setting(f.name, "config", kind, default, optional, config_docs.get(f.name, ""))
    init = VideoTranslationClient.__init__
    client_docs = documented(VideoTranslationClient)
    client_hints = typing.get_type_hints(init)
    for name, parameter in inspect.signature(init).parameters.items():
        spelled = _spelled(client_hints.get(name))
        if parameter.kind is parameter.KEYWORD_ONLY and name not in CONNECTION and spelled:
            kind, optional = spelled
            help_text = client_docs.get(name, "")
            yield Setting(name, "client", kind, parameter.default, optional, help_text)


#: Every setting a polling command offers, in the library's order.
SETTINGS: tuple[Setting, ...] = tuple(_settings())
_BY_NAME = {setting.name: setting for setting in SETTINGS}


def job_id_options(func: Any) -> Any:
    """Job IDs as arguments, from files, or from standard input ('-')."""
    func = click.option(
        "--file",
        "-f",
        "files",
        multiple=True,
        type=click.Path(dir_okay=True, path_type=Path, allow_dash=True),
        help="File of job IDs, one per line ('#' starts a comment); '-' reads standard input.",
    )(func)
    return click.argument("ids", nargs=-1)(func)


def results_file_options(*, default: str | None = None) -> Callable[[Any], Any]:
    """``--output`` (JSON Lines, ``-`` for stdout) and ``--resume``, as ``watch`` and ``fleet
    results`` both write them."""

    def decorate(func: Any) -> Any:
        func = click.option(
            "--resume",
            is_flag=True,
            help="Skip the jobs already in --output and append the rest (repairs a torn last"
            " line).",
        )(func)
        return click.option(
            "--output",
            "-o",
            type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
            default=default,
            show_default=default is not None,
            help="Write one JSON line per finished job here, as each one ends ('-' = stdout).",
        )(func)

    return decorate


def given_job_ids(ids: tuple[str, ...], files: tuple[Path, ...]) -> IdList:
    """The IDs :func:`job_id_options` collected, read and checked: :class:`Problem` naming
    every invalid one, or saying none was given."""
    try:
        id_list = read_ids(id_sources(ids, files, sys.stdin))
    except InputError as exc:
        raise Problem(str(exc)) from None
    if not id_list.ids:
        raise Problem("no job IDs given: pass IDs, --file FILE, or '-' to read standard input")
    return id_list


def connection_options(func: Any) -> Any:
    func = click.option(
        "--api-key",
        envvar="VTPOLL_API_KEY",
        show_envvar=True,
        help="API key, sent in the dialect's header ('Authorization: Bearer KEY' for sim; the"
        " variable keeps it out of ps).",
    )(func)
    return click.option(
        "--base-url",
        envvar="VTPOLL_BASE_URL",
        show_envvar=True,
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="The server's base URL.",
    )(func)


def dialect_options(func: Any) -> Any:
    """How the server is asked and read: a built-in dialect, or one from a TOML file."""
    func = click.option(
        "--dialect-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A dialect of your own, from a TOML file (see 'Poll your own backend' in the docs).",
    )(func)
    return click.option(
        "--dialect",
        type=click.Choice(list(DIALECTS)),
        default="sim",
        show_default=True,
        help="How the server is asked and its answers read: this project's server (sim), the"
        " original design's routes, ElevenLabs dubbing or HeyGen video translate.",
    )(func)


def chosen_dialect(dialect: str = "sim", dialect_file: Path | None = None) -> Dialect:
    """The dialect the options name, or :class:`Problem` saying in one line what is wrong
    with the file (before any request)."""
    if dialect_file is None:
        return DIALECTS[dialect]
    if dialect != "sim":
        raise Problem("--dialect and --dialect-file cannot be used together")
    try:
        return load_dialect(dialect_file)
    except InvalidArgument as exc:
        raise Problem(f"{dialect_file}: {exc}") from None


def polling_options(func: Any) -> Any:
    """Every setting's option, then the connection's and the dialect's."""
    for setting in reversed(SETTINGS):
        if setting.name in OFF_SWITCHES:
            func = click.option(
                f"--no-{setting.flag[2:]}",
                f"no_{setting.name}",
                is_flag=True,
                help=f"The same as {setting.flag} {OFF_SWITCHES[setting.name]:g}.",
            )(func)
        func = setting.option()(func)
    return connection_options(dialect_options(func))


def make_client(
    *,
    base_url: str,
    api_key: str | None,
    rate_limiter: Limiter | None = None,
    dialect: str = "sim",
    dialect_file: Path | None = None,
    **options: Any,
) -> VideoTranslationClient:
    """The client the options describe (the library's default for any not given), or
    :class:`Problem` naming the option the user typed. With ``rate_limiter`` (a fleet's),
    the rate options go to that limiter, not to the client."""
    config: dict[str, Any] = {}
    client: dict[str, Any] = {"dialect": chosen_dialect(dialect, dialect_file)}
    for name, given in options.items():
        if name.startswith("no_"):
            if given:
                config[name[3:]] = OFF_SWITCHES[name[3:]]
            continue
        setting = _BY_NAME[name]
        target = config if setting.home == "config" else client
        target.setdefault(name, setting.value(given))
    if rate_limiter is not None:
        client = {k: v for k, v in client.items() if k not in ("rate_limit", "burst")}
        client["rate_limiter"] = rate_limiter
    try:
        return VideoTranslationClient(
            base_url, StatusPollingConfig(**config), api_key=api_key, **client
        )
    except InvalidArgument as exc:
        raise Problem(as_option(exc)) from None


def as_option(exc: InvalidArgument) -> str:
    """The library's complaint in the command line's terms."""
    setting = _BY_NAME.get(exc.name)
    flag = setting.flag if setting is not None else "--" + exc.name.replace("_", "-")
    either = " or 0" if exc.optional and setting is not None else ""
    shown = f", got {exc.value!r}" if exc.shown else ""
    return f"{flag} must be {exc.requirement}{either}{shown}"
