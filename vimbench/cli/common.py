"""What every command shares: turning VimbenchError into one red line and exit code 2."""
from __future__ import annotations

import functools
from typing import Callable

import typer

from vimbench.errors import VimbenchError

USAGE_ERROR = 2


def user_errors(fn: Callable) -> Callable:
    """Decorator for command bodies: a VimbenchError (or a bad value) becomes one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VimbenchError as exc:
            from vimbench.render import error_line

            error_line(str(exc))
            raise typer.Exit(USAGE_ERROR) from None

    return wrapper
