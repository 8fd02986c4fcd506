"""How a command ends: its exit codes, the kinds of error a person is told of, and SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from ._launch import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._launch import EXIT_NOT_ALL_COMPLETED as EXIT_NOT_ALL_COMPLETED
from ._launch import EXIT_OK as EXIT_OK
from ._launch import EXIT_USAGE as EXIT_USAGE

#: The results could not be written (a full disk, a closed file): the run stopped there.
EXIT_WRITE_FAILED = 3
#: Standard output, where the results went, was closed by its reader (``| head``): 128 +
#: SIGPIPE, the status a shell reports for a pipeline's writer that SIGPIPE ended.
EXIT_BROKEN_PIPE = 141


class Problem(click.ClickException):
    """Bad input: one line naming it, exit code 2."""

    exit_code = EXIT_USAGE


class WriteFailed(click.ClickException):
    """The results cannot be written at all (standard output closed before the start)."""

    exit_code = EXIT_WRITE_FAILED


class Failure(click.ClickException):
    """The work could not be done (the server refused, could not be reached): exit code 1."""

    exit_code = EXIT_NOT_ALL_COMPLETED


class Terminated(Exception):
    """A signal (SIGTERM) ended a command before it had anything to save: one line, exit
    128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Terminations:
    """SIGTERM over a whole watch, so that it is always said. Before the polling it ends the
    command at once (:class:`Terminated`: nothing is known yet, nothing to save); once the
    polling begins it is noted (trio's receiver takes it while the polling runs), and the run
    ends as interrupted whenever it came, even after the last result. Once the command has
    said how it ended (:meth:`settle`), one still says so and ends the process at once:
    everything is written by then."""

    #: Leave the handler in place when the command returns, until the process ends: set by
    #: the installed script, whose process is the command's (not by a test's runner).
    keep = False
    #: A command of this process has settled (see :meth:`end_process`).
    some_settled = False

    def __init__(self) -> None:
        self.signum: int | None = None
        #: The polling has begun: note a signal, do not raise.
        self.deferred = False
        #: The command has said how it ended.
        self.settled = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.settled:
            os.write(2, b"vtpoll: interrupted after the run ended\n")
            os._exit(128 + signum)
        if self.signum is None:
            self.signum = signum
        if not self.deferred:
            raise Terminated(signum)

    def settle(self, signum: int | None) -> int | None:
        """From now on a signal is said by the handler itself. The signal that ended the run:
        ``signum`` (the one that stopped its polling), else one that came before now."""
        self.deferred = self.settled = Terminations.some_settled = True
        return signum if signum is not None else self.signum

    @contextmanager
    def noted_only(self) -> Iterator[None]:
        """A block in which a SIGTERM is noted, not raised, then raised as it ends (if the
        polling has not begun): a trio run before the polling, where an exception raised by
        the handler could land in trio's own loop rather than in the command's code."""
        deferred, self.deferred = self.deferred, True
        try:
            yield
        finally:
            self.deferred = deferred
        if self.signum is not None and not deferred:
            raise Terminated(self.signum)

    @classmethod
    def end_process(cls, code: int) -> NoReturn:
        """End the installed script's process now, once a watch has settled: everything is
        written and said. The interpreter's own teardown, a tenth of a second with trio,
        httpx and rich loaded, first puts SIGTERM back to its default, which would end the
        process in silence; ended here, no moment is left without the handler."""
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            # Gone (a closed pipe): nothing more can reach it.
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        os._exit(code)

    @contextmanager
    def installed(self) -> Iterator[Terminations]:
        """The handler for the block (only the main thread can set one)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield self
        finally:
            if not self.keep:
                signal.signal(signal.SIGTERM, previous)
            elif not self.settled:
                self.deferred = True  # ending on an error: a signal now changes nothing
