"""``python -m tests.cli.prepared SETUP ARGS``: ``vtpoll ARGS`` in a process that SETUP
prepared first, for the tests that need a process set up in a way of their own: forked from
the suite's zygote (``tests._zygote``), which imported vtpoll already, it costs them no
interpreter's start."""

from __future__ import annotations

import os
import resource
import signal
import sys
from typing import NoReturn

from vtpoll import main
from vtpoll._errors import Terminations

#: Bytes a file of a process prepared with ``file-size-limit`` can grow to.
FILE_SIZE_LIMIT = 600


def limit_file_size() -> None:
    """A write past :data:`FILE_SIZE_LIMIT` bytes of a file fails (EFBIG), as on a system
    that refuses to grow it, rather than kill the process (SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def sigterm_at_the_end() -> None:
    """A SIGTERM at the very end of the process, once all is said."""
    end = Terminations.end_process

    def late(code: int) -> NoReturn:
        os.kill(os.getpid(), signal.SIGTERM)
        end(code)

    Terminations.end_process = staticmethod(late)  # type: ignore[method-assign]


SETUPS = {"file-size-limit": limit_file_size, "sigterm-at-the-end": sigterm_at_the_end}

if __name__ == "__main__":
    SETUPS[sys.argv[1]]()
    sys.argv[:2] = ["vtpoll"]
    main()
