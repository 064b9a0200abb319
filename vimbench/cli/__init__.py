"""The Typer app. Each command module parses options, calls the library and renders; no math here.

Heavy imports (torch, timm, triton) happen inside command bodies so `vimbench --help` is instant."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="vimbench",
    help="Efficiency benchmark for Vision Mamba (Vim) against DeiT: sweeps, kernels, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app) and owns its commands.
_COMMAND_MODULES = ("sweep", "kernels", "report", "profile", "compare")
for _name in _COMMAND_MODULES:
    importlib.import_module(f"vimbench.cli.{_name}").register(app)


def main() -> None:
    app()
