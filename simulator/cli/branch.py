"""`nextstep branch`: continue stored prefixes under a change and unchanged, into a branch run of the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

import simulator.api as api
from simulator.core.records import Episode

from .options import Actors, Db, Judges, PromptsDir, Ray, RoleModel, config_options
from .progress import progress_bar
from .show import console

app = typer.Typer()


@app.command()
@config_options("base_url", "api_key_env", "timeout")
def branch(
    source: Annotated[str, typer.Argument(help="An episode id (or unique prefix), or a run id: every episode of it.")],
    at: Annotated[str, typer.Option(help="Where to fork: a turn index (the turns before it are kept), first-ask (just "
                                         "before the practitioner's first ask) or peak (just after the persona's "
                                         "interest peak).")],
    strategy: Annotated[Optional[str], typer.Option(help="Treatment: another strategy from the fork on.")] = None,
    persona: Annotated[Optional[str], typer.Option(help="Treatment: another persona from the fork on.")] = None,
    prompts_dir: PromptsDir = None, practitioner_model: RoleModel = None, persona_model: RoleModel = None,
    reps: Annotated[int, typer.Option(min=1, help="Continuations per prefix in each arm (treatment and control).")] = 4,
    judges: Judges = 1,
    max_turns: Annotated[Optional[int], typer.Option(min=1, help="Most rounds in all [default: the parent's].")] = None,
    base_prompts: Annotated[Optional[Path], typer.Option(help="The prompt directory the parents were made with, if "
                                                              "their run did not record it.")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Name the branch run [default: a hash of what it does].")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, help="Requests in flight to the endpoint, judges' included "
                                                                   "(so also continuations).")] = None,
    ray: Ray = None, actors: Actors = None, db: Db = Path("nextstep.db"), *, config: dict,
) -> None:
    """Continue stored episodes from an identical prefix, under a change and unchanged (the control), paired.

    The treatment is any of --strategy, --persona, --prompts-dir, --practitioner-model, --persona-model; the endpoint
    and the other settings are the parent run's unless given.
    """
    plan = api.plan_branch(source, at=at, strategy=strategy, persona=persona, prompts_dir=prompts_dir,
                           practitioner_model=practitioner_model, persona_model=persona_model, reps=reps, db=db)  # fmt: skip
    for warning in plan["warnings"]:  # said before the first call is spent
        console.print(f"[bold yellow]warning[/]: {escape(warning)}")
    counts: dict[str, list[int]] = {}
    failed = 0
    with progress_bar(console, "continuations") as show:
        def saved(record: Episode) -> None:
            nonlocal failed
            failed += record.status == "failed"
            arm, exchanged = record.branch.arm, record.outcome and record.outcome.exchanged
            k, n = counts.setdefault(arm, [0, 0])
            counts[arm] = [k + (exchanged not in (None, "none")), n + 1]
            done = sum(n for _, n in counts.values())
            show(done, plan["continuations"], " · ".join(f"{a} {n} done, {k} exchanged" for a, (k, n) in sorted(counts.items())))

        run, skipped, treatment = api.branch(source, at=at, strategy=strategy, persona=persona, prompts_dir=prompts_dir,
                                             practitioner_model=practitioner_model, persona_model=persona_model, reps=reps,
                                             judges=judges, max_turns=max_turns, base_prompts=base_prompts, run_id=run_id,
                                             concurrency=concurrency, db=db, on_saved=saved, ray=ray, actors=actors,
                                             **config)  # fmt: skip
    for line in skipped:
        console.print(f"[yellow]left out[/] {escape(line)}")
    for arm, (k, n) in sorted(counts.items()):
        console.print(f"{arm}: {n} continuations this session, {k} ended in an exchange")
    console.print(f"branch run {run} ({escape(treatment.label())} vs control)\n"
                  f"see more: nextstep compare {run} --db {db}\n          nextstep report {run} --db {db} -o {run}.html")
    if failed and failed == sum(n for _, n in counts.values()):  # every continuation of this session failed
        raise typer.Exit(1)
