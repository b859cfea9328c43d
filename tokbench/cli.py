"""The `tokbench` command: a thin shell over the Python API.

Each command group lives in tokbench/commands/<group>.py; this file only assembles them and turns
every error into one line on stderr with exit code 2: a TokbenchError as it is; a missing optional
package, an OS error, a file that is not UTF-8 or JSON, or memory running out as a specific message;
anything else as one line naming the command and asking for a bug report (TOKBENCH_TRACEBACK=1 shows
the traceback instead).
"""
from __future__ import annotations

import json
import os
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
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("TOKBENCH_TRACEBACK"):
                raise
            click.echo(f"tokbench: error: {one_line(exc, _command_path(exc, ctx))}", err=True)
            sys.exit(TokbenchError.exit_code)


def _command_path(exc: BaseException, ctx: click.Context) -> str:
    """`tokbench vocab align`: the innermost command whose invoke() the error passed through."""
    path = ctx.command_path
    tb = exc.__traceback__
    while tb is not None:
        inner = tb.tb_frame.f_locals.get("ctx")
        if isinstance(inner, click.Context):
            path = inner.command_path
        tb = tb.tb_next
    return " ".join(["tokbench"] + path.split()[1:])  # the program name, however it was started


def one_line(exc: BaseException, command: str = "tokbench") -> str:
    """The one-line message for an error that is not a TokbenchError."""
    from tokbench.extras import EXTRA_OF, missing_message

    def where(e) -> str:
        name = getattr(e, "filename", None)
        return f"{name}: " if name else ""

    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRA_OF:
        return str(missing_message([exc.name.split(".")[0]], command))
    if isinstance(exc, MemoryError):
        return f"{command} ran out of memory; give it less input (e.g. --max-chars / --limit-bytes) or more memory"
    if isinstance(exc, UnicodeDecodeError):
        return f"{command}: an input is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"{command}: an input is not valid JSON ({exc.msg}, line {exc.lineno}); fix or replace that file"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{where(exc)}{exc.strerror}; check the path and its permissions"
    text = " ".join(str(exc).split()) or "no message"
    if len(text) > 300:
        text = text[:297] + "..."
    return (f"{command} failed unexpectedly ({type(exc).__name__}: {text}); this is a bug in tokbench: "
            "please report it with the command line and the traceback that TOKBENCH_TRACEBACK=1 prints")


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
