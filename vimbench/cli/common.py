"""What every command shares: turning VimbenchError, and typer's own usage errors, into one red line and exit
code 2."""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable

import typer
from typer.core import TyperGroup

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


@contextmanager
def _one_line_usage_errors():
    """A usage error found by typer itself (an option value of the wrong type or out of range, an unknown option or
    command, a missing argument) as one line and its exit code (2), instead of usage, hint and a boxed panel."""
    try:
        yield
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `vimbench`: the help is the answer
            raise
        from vimbench.render import error_line

        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        error_line(exc.format_message() + hint)
        raise typer.Exit(exc.exit_code) from None


class OneLineErrorsGroup(TyperGroup):
    """The app's click group: parsing (its own and, through invoke, every subcommand's) reports usage errors in one
    line, the way user_errors reports VimbenchError."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)
