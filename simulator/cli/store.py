"""`nextstep runs`, `show` and `export`: reading what the store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import simulator.api as api
from simulator.models.prices import money

from .options import Db
from .show import console, print_caution, print_result, print_turn
from .summary import print_summary

app = typer.Typer()


@app.command()
def runs(db: Db = Path("nextstep.db")) -> None:
    """List the runs in the database."""
    table = Table("run", "created", "episodes", "succeeded", "ungraded", "failed", "tokens", "cost", title_justify="left")
    for r in api.runs(db):
        table.add_row(r["id"], r["created_at"], str(r["episodes"]), str(r["succeeded"]), str(r["ungraded"]), str(r["failed"]),
                      "unknown" if r["tokens"] is None else f"{r['tokens']:,}", money(r["cost_usd"]))  # fmt: skip
    console.print(table)


@app.command()
def show(
    run_or_episode: Annotated[str, typer.Argument(help="A run id, or an episode id (or a unique prefix).")],
    db: Db = Path("nextstep.db"),
) -> None:
    """A run's summary, or one episode's transcript with its verdicts."""
    found = api.show(run_or_episode, db)
    if "episode" in found:
        record = found["episode"]
        console.print(f"[dim]{record.id} · {record.setting} · {record.persona} · {record.strategy} · seed {record.seed} · {record.status}[/]")
        print_caution(record.caution)
        for turn in record.turns:
            print_turn(turn)
        return print_result(record, None)
    spec = found["run"]["spec"]
    console.print(f"[bold]run {run_or_episode}[/]: {json.dumps(spec.experiment)}")
    console.print(f"models: {json.dumps(spec.models)} · backend {spec.backend}")
    print_summary(found["summary"], db)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl (full records), csv or parquet (one row per episode).")] = "jsonl",
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path("episodes.jsonl"),
    db: Db = Path("nextstep.db"),
) -> None:
    """Export a run's episodes."""
    n = api.export(run_id, output, fmt, db)
    console.print(f"wrote {n} episodes to {output}")
