"""`nextstep fitness`: is a model fit to run the study? The protocol's verdict per criterion, at 80 columns or as JSON."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Optional

import typer

from simulator.core.files import output_file, write_atomic

from .options import ENDPOINT, FILES, ROLES, Db, config_options

app = typer.Typer()
WIDTH = 80
SHIPPED = "simulator/fitness/protocol.yaml"  # how a verdict names the protocol in the package


@app.command()
@config_options(*ENDPOINT, *ROLES, *FILES)
def fitness(
    dry_run: Annotated[bool, typer.Option(help="Say how many episodes and calls the protocol will spend, run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also write the verdict as JSON to this file.")] = None,
    reps: Annotated[Optional[int], typer.Option(min=1, help="Repetitions per cell instead of the protocol's (the verdict "
                                                            "says it was reduced).")] = None,
    budget: Annotated[Optional[int], typer.Option(min=1, help="Most LLM calls it may spend (every re-ask counted): "
                                                              "refused if the persona grid may spend more, and a later "
                                                              "stage that could pass it is not run.")] = None,
    db: Db = Path("nextstep.db"), *, config: dict,
) -> None:
    """Run the fixed fitness protocol and print a verdict per criterion (exit 1 when one fails)."""
    import simulator.fitness as _fitness  # here, not at startup: it brings the statistics stack

    if dry_run:
        return _print_plan(_fitness.plan(db=db, reps=reps, **config))
    if output is not None:
        output_file(output, "-o")
    verdict = _fitness.fitness(db=db, reps=reps, budget=budget, **config)
    if output is not None:
        write_atomic(output, json.dumps(verdict, indent=1, allow_nan=False))
    if as_json:
        typer.echo(json.dumps(verdict, indent=1, allow_nan=False))
    else:
        typer.echo(render(verdict))
    if verdict["overall"] == "fail":
        raise typer.Exit(1)


def _print_plan(p: dict) -> None:
    typer.echo(f"fitness protocol v{p['protocol']} (sha256 {p['hash']})")
    for s in p["stages"]:
        if "grid" not in s:
            typer.echo(_wrap(f"{s['stage']}: {s['items']} gold transcripts, at most {s['calls_at_most']:,} LLM calls"))
            continue
        g = s["grid"]
        typer.echo(_wrap(f"{s['stage']}: {', '.join(g['personas'])} x {', '.join(g['strategies'])} in "
                         f"{', '.join(g['settings'])}, {g['reps']} reps, up to {g['max_turns']} rounds, "
                         f"{g['judges']} judge: {s['episodes']} episodes, at most {s['calls_at_most']:,} LLM calls "
                         f"(every re-ask counted), roughly {s['tokens_roughly']:,} tokens"))
    typer.echo(f"in all: {p['episodes']} episodes, at most {p['calls_at_most']:,} LLM calls")


def render(verdict: dict) -> str:
    """The one-page verdict, every line within 80 columns, ids whole."""
    p, m = verdict["protocol"], verdict["model"]
    reduced = "" if not p["reduced"] else f", reduced to {p['reps']} reps" if p["file"] == SHIPPED else f", from {p['file']}"
    reduced += ": not the shipped protocol's verdict" if p["reduced"] else ""
    lines = [f"fitness: {verdict['overall'].upper()}",
             _wrap(f"protocol v{p['version']} (sha256 {p['hash']}){reduced}"),
             _wrap(f"models: practitioner {m.get('practitioner')}, persona {m.get('persona')}, judges "
                   f"{', '.join(m.get('evaluators') or []) or 'none'} ({m.get('backend')})"),
             _wrap(f"stored run: {verdict['runs']['grid']} in {verdict['db']} ({verdict['episodes']} episodes)")]  # fmt: skip
    if "ablation" in verdict["runs"]:
        lines.append(_wrap(f"without the article's rules: {verdict['runs']['ablation']}"))
    for c in verdict["criteria"]:
        lines += ["", f"{c['criterion']}. {c['name']}: {c['status'].upper()}"]
        if c.get("note"):
            lines.append(_wrap(c["note"], "   "))
        for k in c["checks"]:
            figure = "" if k["figure"] is None else f"{_num(k['figure'])}"
            ci = f" [{_num(k['ci'][0])}, {_num(k['ci'][1])}]" if k.get("ci") else ""
            lines.append(_wrap(f"{k['status']}: {k['check']}", "   ", "     "))
            lines.append(_wrap(f"{figure}{ci}{'; ' if figure else ''}{k['of']}", "     "))
            lines += [_wrap(d, "     - ", "       ") for d in k.get("details", [])]
            lines.append(_wrap(f"threshold: {k['threshold']}", "     "))
            lines.append(_wrap(f"why: {k['why']}", "     "))
    return "\n".join(lines)


def _wrap(text: str, first: str = "", rest: str | None = None) -> str:
    return textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=first, subsequent_indent=first if rest is None else rest,
                         break_long_words=False, break_on_hyphens=False)  # fmt: skip


def _num(x) -> str:
    return "n/a" if x is None else str(x) if isinstance(x, int) else f"{x:.2f}"
