"""Start the viewer: loopback by default; any other host needs the token printed with its address."""

from __future__ import annotations

import secrets
import webbrowser
from pathlib import Path

from simulator.core.errors import UserError
from simulator.storage.store import Store

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def address(host: str, port: int, token: str | None) -> str:
    """The URL to open: `address('127.0.0.1', 8765, None)` -> 'http://127.0.0.1:8765/'."""
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def serve(db: Path, *, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True, say=None, label=None,
          rubric=None, agree=None) -> None:
    """Serve the viewer over `db` until interrupted; with a `label` session, start on its Label page; with `rubric`
    (anchors and flags), run pages offer to label a sample (the labels saved in the working directory); with `agree`,
    the Label pages compare the labeller with the others (`create_app`)."""
    import uvicorn

    from .app import create_app

    Store.reader(db).close()  # a missing, foreign or older file is one line now, not an error on every page
    token = None if host in LOOPBACK else secrets.token_urlsafe(24)
    url = address(host, port, token)
    if label is not None:
        url = url.replace("/?", "/label?") if token else url + "label"
    (say or (lambda line: print(line, flush=True)))(f"nextstep view: {url} (Ctrl-C to stop)")
    if open_browser:
        webbrowser.open(url)
    try:
        uvicorn.run(create_app(Path(db), token=token, label=label, rubric=rubric, agree=agree), host=host, port=port, log_level="warning")
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port}: {e}") from None
