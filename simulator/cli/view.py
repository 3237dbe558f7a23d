"""`nextstep view`: browse a store in a web browser, live while a batch writes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulator.core.errors import UserError

from .options import Db

app = typer.Typer()


@app.command()
def view(
    db: Db = Path("nextstep.db"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback requires the printed token in the URL.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the address only.")] = False,
) -> None:
    """Serve a web viewer of the store's runs and episodes (read-only; pages update while a batch writes)."""
    try:
        from simulator.view import serve
    except ImportError as e:
        raise UserError(f"nextstep view needs the 'view' extra ({e.name} is missing): pip install 'nextstep[view]'") from None
    serve(db, host=host, port=port, open_browser=not no_browser)
