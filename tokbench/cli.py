"""The `tokbench` command: a thin shell over the Python API.

Each command group lives in tokbench/commands/<group>.py; this file only assembles them and turns
TokbenchError into one line on stderr with exit code 2.
"""
from __future__ import annotations

import signal
import sys

import click

from tokbench import __version__
from tokbench.errors import TokbenchError


def _terminated(signum, frame):
    # `kill` (SIGTERM) unwinds like Ctrl-C, so every command's cleanup runs and no partial output is left
    raise KeyboardInterrupt


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # not the main thread (an embedding application): leave its handlers alone
            pass
        try:
            return super().invoke(ctx)
        except TokbenchError as exc:
            click.echo(f"tokbench: error: {exc}", err=True)
            sys.exit(TokbenchError.exit_code)
        except KeyboardInterrupt:
            click.echo("tokbench: interrupted; no output was written", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokbench")
def main() -> None:
    """tokbench: tokenizer engineering workbench."""


def _register() -> None:
    from tokbench.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
