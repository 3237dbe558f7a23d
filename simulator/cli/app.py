"""The `nextstep` command line: every command parses its flags, calls `simulator.api`, and prints."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer

from simulator.core.errors import UserError
from simulator.core.redact import RedactingFilter, redact

from . import batch, branch, cache, compare, fitness, grade, play, run, serve, store, view
from .options import ray_address

app = typer.Typer(help="Simulate the step from a pleasant chat to swapping contact details, and grade it.",
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
for group in (run, grade, batch, store, serve, compare, branch, play, cache, view, fitness):
    app.add_typer(group.app)


def _version(given: bool) -> None:
    if given:
        from simulator.core.records import package_version

        typer.echo(f"nextstep {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:  # fmt: skip
    """Simulate the step from a pleasant chat to swapping contact details, and grade it."""


def main() -> None:
    """Entry point: user errors are one line on stderr and exit 2; interruption exits 130."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # no credential in any log line, whichever module logs it
        handler.addFilter(RedactingFilter())
    logging.getLogger("asyncio").addFilter(_not_the_interrupt)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind (and stop servers) on SIGTERM too
    command = typer.main.get_command(app)
    try:
        code = command.main(ray_address(sys.argv[1:]) or ["--help"], standalone_mode=False, prog_name="nextstep")
    except UserError as e:
        _fail(str(e), 2)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.TyperException as e:  # usage errors from the command-line parser
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path.removeprefix("nextstep").strip() if ctx else ""  # 'nextstep: error:' says the rest
        _fail(f"{command}: {e.format_message()}" if command else e.format_message(), getattr(e, "exit_code", 2))
    if code == 130:  # typer returns 130 for a KeyboardInterrupt inside a command
        _fail("interrupted", 130)
    _exit(code if isinstance(code, int) else 0)


def _not_the_interrupt(record: logging.LogRecord) -> bool:
    """An interrupt that lands while a task runs ends the task awaiting it too, which asyncio logs as an exception
    'never retrieved' once that task is collected; the command has said "interrupted" already."""
    return not (record.exc_info and issubclass(record.exc_info[0], KeyboardInterrupt))


def _fail(message: str, code: int) -> None:
    message = redact(message)  # a flag's value may hold a password (a URL's) or a key
    print(f"nextstep: error: {message}" if code == 2 else f"nextstep: {message}", file=sys.stderr)
    _exit(code)


def _exit(code: int) -> None:
    # CPython marks a KeyboardInterrupt that leaves a string exec (dataclasses build their methods with one, so an
    # interrupt during an import can) as unhandled even when it is caught, and `python -m` then ends the process by
    # SIGINT instead of with `code`. A string exec clears the mark at its start.
    exec("pass", {})
    sys.exit(code)
