"""`nextstep view`: browse a store in a web browser, live while a batch writes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    import simulator.api as api

    try:
        from simulator.view import serve
    except ImportError as e:
        raise UserError(f"nextstep view needs the 'view' extra ({e.name} is missing): pip install 'nextstep[view]'") from None
    serve(db, host=host, port=port, open_browser=not no_browser, rubric=api.rubric_anchors(), agree=api.labellers_agreement)


@app.command()
def label(
    run_id: Annotated[str, typer.Argument(help="The run whose episodes to label.")],
    sample: Annotated[int, typer.Option(min=1, help="How many episodes, spread over persona x strategy.")] = 30,
    labeller: Annotated[str, typer.Option(help="Your name, kept with every label.")] = "me",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Gold-set JSONL to save to (default RUN-labels-LABELLER.jsonl); "
                                                   "an existing one is carried on.")] = None,
    seed: Annotated[int, typer.Option(help="Sample seed: two labellers with the same seed label the same episodes.")] = 0,
    db: Db = Path("nextstep.db"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8765,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the address only.")] = False,
) -> None:
    """Label a stratified sample of a run's episodes in the browser, blind to the judges; each entry is saved at once
    as a gold-set line (`nextstep calibrate FILE` reads it)."""
    import simulator.api as api

    try:
        from simulator.view import default_output, labeller_name, new_session, serve
    except ImportError as e:
        raise UserError(f"nextstep label needs the 'view' extra ({e.name} is missing): pip install 'nextstep[view]'") from None
    try:
        labeller = labeller_name(labeller)
    except ValueError as e:
        raise UserError(f"--labeller: {e}") from None
    output = output or default_output(run_id, labeller)
    if not output.parent.is_dir():
        raise UserError(f"-o {output}: no such directory {output.parent}")
    anchors, flags = api.rubric_anchors()
    session = new_session(db, run_id, sample=sample, seed=seed, labeller=labeller, output=output, anchors=anchors, flags=flags)
    print(f"labelling {len(session.ids)} episodes of {run_id} as {labeller} into {output}", flush=True)
    serve(db, port=port, open_browser=not no_browser, label=session, rubric=(anchors, flags), agree=api.labellers_agreement)
