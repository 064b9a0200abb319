"""The Typer app. Each command module parses options, calls the library and renders; no math here.

Heavy imports (torch, timm, triton) happen inside command bodies so `vimbench --help` is instant."""
from __future__ import annotations

import importlib
import inspect

import typer

from vimbench.cli.common import OneLineErrorsGroup

app = typer.Typer(
    name="vimbench",
    cls=OneLineErrorsGroup,
    # Examples sit in a ``` fence: typer dedents the text after the first paragraph a second time, which turns an
    # indented block right after "Examples:" into one plain paragraph (the lines run together).
    help=inspect.cleandoc("""Efficiency benchmark for Vision Mamba (Vim) against DeiT and any timm model: sweeps,
    kernels, reports.

    Examples:

    ```
    vimbench sweep --models vim_t,deit_t --res 224..1248 --batch 64 --dtype bf16 --backend triton
    vimbench report results/ -o reports/all
    ```
    """),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Each module defines register(app) and owns its commands.
_COMMAND_MODULES = ("sweep", "kernels", "report", "profile", "compare")
for _name in _COMMAND_MODULES:
    importlib.import_module(f"vimbench.cli.{_name}").register(app)


def _version(value: bool) -> None:
    if value:
        from vimbench import __version__

        typer.echo(f"vimbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the vimbench version and exit.")) -> None:
    """The options every command shares (only --version)."""


def main() -> None:
    app()
