"""What every command shares: turning VimbenchError into one red line and exit code 2."""
from __future__ import annotations

import functools
from typing import Callable

import typer

from vimbench.errors import VimbenchError

USAGE_ERROR = 2


def user_errors(fn: Callable) -> Callable:
    """Decorator for command bodies: a VimbenchError, or an OSError about a named file, becomes one line on stderr
    and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VimbenchError as exc:
            from vimbench.render import error_line

            error_line(str(exc))
            raise typer.Exit(USAGE_ERROR) from None
        except OSError as exc:
            # A file the user named cannot be read or written (permissions, full disk, a folder given for a
            # file): one line naming it. OSErrors without a path are bugs and keep their traceback.
            if exc.filename is None:
                raise
            from vimbench.render import error_line

            error_line(f"cannot use {exc.filename}: {exc.strerror or exc}")
            raise typer.Exit(USAGE_ERROR) from None

    return wrapper
