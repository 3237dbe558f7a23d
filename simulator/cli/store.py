"""`nextstep runs`, `show` and `export`: reading what the store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.measure import Measurement
from rich.table import Table

import simulator.api as api
from simulator.models.prices import money

from .options import Db, config_options
from .show import console, print_caution, print_result, print_turn
from .summary import print_summary

app = typer.Typer()


@app.command()
def runs(db: Db = Path("nextstep.db")) -> None:
    """List the runs in the database."""
    found = api.runs(db)
    count = lambda n: "unknown" if n is None else f"{n:,}"  # noqa: E731
    table = Table("run", "created", "episodes", "succeeded", "ungraded", "failed", "tokens spent", "tokens saved", "cost",
                  title_justify="left", caption="tokens saved: what the calls the response cache answered had cost")  # fmt: skip
    rows = [(r["id"], r["created_at"], str(r["episodes"]), str(r["succeeded"]), str(r["ungraded"]), str(r["failed"]),
             count(r["tokens"]), count(r["saved_tokens"]), money(r["cost_usd"])) for r in found]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        return console.print(table)
    for run, created, episodes, succeeded, ungraded, failed, spent, saved, cost in rows:  # too narrow: one block per run, ids whole
        console.print(f"[bold]{run}[/]  created {created}\n  episodes {episodes} · succeeded {succeeded} · ungraded {ungraded} "
                      f"· failed {failed}\n  tokens spent {spent} · saved by the response cache {saved} · cost {cost}")  # fmt: skip


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
@config_options("cache_dir")
def export(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    fmt: Annotated[Optional[str], typer.Option("--format", show_default=False, help="jsonl (full records), csv or parquet "
                                               "(one row per episode) [default: from the -o name, else jsonl].")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", show_default=False,
                                                   help="File to write [default: RUN_ID.FORMAT].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
    db: Db = Path("nextstep.db"),
    bundle: Annotated[Optional[Path], typer.Option(help="Write a replay bundle instead: the records and every response the run "
                                                        "used (from the response cache), no secret; `batch --replay` makes the "
                                                        "run again from it. A name ending in .gz is compressed.")] = None,
    *, config: dict,
) -> None:
    """Export a run's episodes (the format follows the file name), or its replay bundle."""
    if bundle is not None:
        done = api.export_bundle(run_id, bundle, db=db, force=force, **config)
        return console.print(f"wrote {done['episodes']} episodes and {done['responses']} responses to {bundle}", soft_wrap=True)
    n, output = api.export(run_id, output, fmt, db, force=force)
    console.print(f"wrote {n} episodes to {output}")
