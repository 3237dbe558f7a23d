"""`nextstep runs`, `show`, `episodes` and `export`: reading what the store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.measure import Measurement
from rich.table import Table

import simulator.api as api
from simulator.core.errors import UserError
from simulator.models.prices import money

from .options import Db, Format, config_options
from .show import console, print_caution, print_result, print_turn
from .summary import print_summary

app = typer.Typer()


FORMATS = ("text", "json")


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")


def _emit(value) -> None:
    """JSON for scripts: records as their JSON, everything else as is."""
    plain = lambda v: v.model_dump(mode="json") if hasattr(v, "model_dump") else str(v)  # noqa: E731
    typer.echo(json.dumps(value, indent=1, ensure_ascii=False, default=plain))


def _id_column(table: Table, name: str, ids: list[str]) -> None:
    """A column that never cuts an id: as wide as the longest, never wrapped; the other columns give way."""
    table.add_column(name, no_wrap=True, min_width=max(map(len, ids), default=len(name)))


@app.command()
def runs(db: Db = Path("nextstep.db"), fmt: Format = "text") -> None:
    """List the runs in the database: episodes done of planned, failures, tokens spent and saved, cost."""
    _check(fmt)
    found = api.runs(db)
    if fmt == "json":
        return _emit(found)
    count = lambda n: "unknown" if n is None else f"{n:,}"  # noqa: E731
    table = Table(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    _id_column(table, "run", [r["id"] for r in found])
    table.add_column("created")
    for column in ("done", "failed", "ungraded", "spent", "saved", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = [(r["id"], r["created_at"][:16].replace("T", " "), f"{r['done']}/{r['planned']}" if r["planned"] is not None
             else str(r["done"]), str(r["failed"]), str(r["ungraded"]), count(r["tokens"]), count(r["saved_tokens"]),
             money(r["cost_usd"])) for r in found]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width:
        console.print(table)
    else:
        for run, created, done, failed, ungraded, spent, saved, cost in rows:  # too narrow: one block per run, ids whole
            console.print(f"[bold]{run}[/]  created {created}\n  done {done} · failed {failed} · ungraded {ungraded}\n"
                          f"  tokens spent {spent} · saved {saved} · cost {cost}")  # fmt: skip
    console.print("[dim]created: UTC; done: succeeded episodes of those planned (a played or watched run plans none); "
                  "tokens spent at the endpoint, and saved: what the calls the response cache answered had cost; cost in US dollars "
                  "(unknown: a model has no price)[/]")
    for r in found:
        if r["complete"] is False and r["resume"]:
            console.print(f"[yellow]incomplete[/] {r['id']}: {r['resume']}")


@app.command()
def show(
    run_or_episode: Annotated[str, typer.Argument(help="A run id, or an episode id (or a unique prefix).")],
    db: Db = Path("nextstep.db"), fmt: Format = "text",
) -> None:
    """A run's summary, or one episode's transcript with its verdicts."""
    _check(fmt)
    found = api.show(run_or_episode, db)
    if fmt == "json":
        return _emit(found)
    if "episode" in found:
        record = found["episode"]
        console.print(f"[dim]{record.id} · {record.setting} · {record.persona} · {record.strategy} · seed {record.seed} · {record.status}[/]")
        print_caution(record.caution)
        for turn in record.turns:
            print_turn(turn)
        return print_result(record, None)
    spec = found["run"]["spec"]
    console.print(f"[bold]run {found['run']['id']}[/]: {json.dumps(spec.experiment)}")
    console.print(f"models: {json.dumps(spec.models)} · backend {spec.backend}")
    print_summary(found["summary"], db)


@app.command()
def episodes(
    run_id: Annotated[str, typer.Argument(help="The run (or a unique prefix of its id).")],
    persona: Annotated[Optional[str], typer.Option(help="Only this persona.")] = None,
    setting: Annotated[Optional[str], typer.Option(help="Only this setting.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="Only this strategy.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only succeeded, ungraded or failed episodes.")] = None,
    contact: Annotated[Optional[bool], typer.Option("--contact/--no-contact", show_default=False,
                                                    help="Only those that ended in contact (number or email), or not.")] = None,
    unusable: Annotated[bool, typer.Option("--unusable", help="Only those the statistics leave out (failed, ungraded, out "
                                                              "of character).")] = False,
    db: Db = Path("nextstep.db"), fmt: Format = "text",
) -> None:
    """List a run's episodes, filtered; `nextstep show EPISODE_ID` shows one."""
    _check(fmt)
    rows = api.episodes(run_id, db, persona=persona, setting=setting, strategy=strategy, status=status, contact=contact,
                        unusable=unusable)  # fmt: skip
    if fmt == "json":
        return _emit(rows)
    # A factor every listed episode shares goes in the title, so the table keeps to the columns that differ.
    shared = {c: rows[0][c] for c in ("setting", "persona", "strategy") if rows and len({r[c] for r in rows}) == 1}
    table = Table(title=" · ".join([f"{len(rows)} episodes", *shared.values()]), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))  # fmt: skip
    _id_column(table, "episode", [r["episode_id"] for r in rows])
    columns = [c for c in ("setting", "persona", "strategy") if c not in shared] + ["rep", "status", "exchanged", "turns"]
    for column in columns:  # the end reason and error are in --format json and `nextstep show`
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["episode_id"], *("" if r[c] is None else str(r[c]) for c in columns))
    console.print(table)
    if any(not r["usable"] for r in rows):
        console.print(f"[dim]{sum(not r['usable'] for r in rows)} of them left out of the statistics (failed, ungraded or "
                      "out of character): --unusable lists them[/]")


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
