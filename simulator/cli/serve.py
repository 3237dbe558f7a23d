"""`nextstep serve`: the embedded model's OpenAI-compatible server in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

import simulator.api as api
from simulator.models.local import DEFAULT_SLOTS

from .show import console

app = typer.Typer()


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    slots: Annotated[int, typer.Option(min=1, help="Parallel slots (requests answered at once).")] = DEFAULT_SLOTS,
) -> None:
    """Run the embedded model's OpenAI-compatible server in the foreground (127.0.0.1 only)."""
    console.print(f"serving the embedded model at http://127.0.0.1:{port}/v1 (Ctrl-C to stop)")
    raise typer.Exit(api.serve(port, slots))
