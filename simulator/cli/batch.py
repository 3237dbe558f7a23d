"""`nextstep batch`: a grid of episodes run concurrently into the store, resumable, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

import simulator.api as api
from simulator.models.local import DEFAULT_SLOTS
from simulator.models.prices import money

from .options import ENDPOINT, FILES, ROLES, Actors, Db, GridMaxTurns, Judges, Ray, RubricFile, Temperature, config_options
from .progress import progress_bar
from .show import console
from .grade import print_differences
from .summary import print_session, print_summary

app = typer.Typer()


def print_plan(grid, cells: list, e: dict) -> None:
    """The dry run: the bound on calls first, the settings that shape an episode, then the cells with their seeds."""
    console.print(f"{e['episodes']} episodes; at most {e['calls_at_most']:,} LLM calls (every possible re-ask counted, and "
                  f"{e['test_calls']} test call(s), one per distinct model), roughly {e['tokens_roughly']:,} tokens")
    judge = f" and {e['judge_call_tokens']:,} a judge's, its rubric included" if e["judge_call_tokens"] else ""
    console.print(f"cost: at most {money(e['cost_at_most'])} if every re-ask happens, typically {money(e['cost_roughly'])} "
                  f"(at roughly {e['talk_call_tokens'] or 0:,} tokens a conversation call{judge}, none from a cache; "
                  "unknown: a model has no price, see --prices)")
    console.print(f"max_turns {grid.max_turns} · temperature {grid.temperature} · judges {grid.judges} · reasks {e['reasks']}")
    table = Table(title="cells", title_justify="left")
    for column in ("cell", "reps", "seeds"):
        table.add_column(column, overflow="fold")
    for key in dict.fromkeys(c.key for c in cells):
        seeds = [c.seed for c in cells if c.key == key]
        table.add_row(key, str(len(seeds)), ", ".join(map(str, seeds[:5])) + (" …" if len(seeds) > 5 else ""))
    console.print(table)


@app.command()
@config_options(*ENDPOINT, *ROLES, *FILES)
def batch(
    settings: Annotated[Optional[str], typer.Option(help="Comma list or 'all' [default: supermarket].")] = None,
    personas: Annotated[Optional[str], typer.Option(help="Comma list or 'all' [default: all].")] = None,
    strategies: Annotated[Optional[str], typer.Option(help="Comma list or 'all' [default: common_interest].")] = None,
    profiles: Annotated[Optional[str], typer.Option(help="Practitioner-persona gender pairs, e.g. man-woman,woman-man.")] = None,
    reps: Annotated[Optional[int], typer.Option(help="Repetitions per cell [default: 1].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run seed; each cell's seed derives from it [default: 0].")] = None,
    max_turns: GridMaxTurns = None, temperature: Temperature = None, judges: Judges = None,
    experiment: Annotated[Optional[Path], typer.Option(help="Experiment YAML with the same fields; flags override it.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue RUN_ID with its stored grid and settings (flags given override "
                                                       "the settings): skip succeeded episodes, retry failed ones, grade "
                                                       "ungraded ones again.")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Name the run [default: a hash of grid, prompts and models].")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, help="Requests in flight to the endpoint, judges' included (so "
                                                                   "also episodes); on the local engine also its parallel "
                                                                   f"slots [default: {DEFAULT_SLOTS} local, 8 otherwise].")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Stop scheduling episodes once this many tokens are spent "
                                                                  "(counting the calls whose endpoint reports usage).")] = None,
    max_failures: Annotated[Optional[int], typer.Option(min=1, help="Stop scheduling episodes after this many failures.")] = None,
    fail_fast: Annotated[int, typer.Option(min=0, help="Stop when the first N episodes to end all failed with the same "
                                                       "error (0: never).")] = api.FAIL_FAST,
    max_cost: Annotated[Optional[float], typer.Option(min=0, help="Stop scheduling episodes once this many US dollars are "
                                                                  "spent (every model needs a known price).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the cells and an upper bound on calls, run nothing.")] = False,
    replay: Annotated[Optional[Path], typer.Option(help="Make a bundled run (`export --bundle`) again from the bundle alone: "
                                                        "no endpoint, no key.")] = None,
    ray: Ray = None, actors: Actors = None,
    db: Db = Path("nextstep.db"), rubric_file: RubricFile = None, *, config: dict,
) -> None:
    """Run a grid of episodes concurrently into the SQLite store (resumable)."""
    grid = api.grid(experiment, settings=settings, personas=personas, strategies=strategies, profiles=profiles, reps=reps,
                    seed=seed, max_turns=max_turns, temperature=temperature, judges=judges)  # fmt: skip
    if dry_run:
        return print_plan(*api.plan_batch(grid, resume=resume, db=db, rubric_file=rubric_file, **config))
    seen: list[api.Progress] = []  # the batch's counters, to say after Ctrl-C what was stored and how to go on
    try:
        with progress_bar(console, "episodes") as show:
            def report(p: api.Progress) -> None:
                seen[:] = [p]
                show(p.ended, p.total, f"done {p.done} · ungraded {p.ungraded} · failed {p.failed} · running {p.running} · "
                                       f"{p.per_minute:.1f}/min · {p.tokens:,} tokens · {money(p.cost)}"
                                       + (f" · {p.saved_tokens:,} saved" if p.cache_hits else ""))  # fmt: skip

            result = api.run_batch(grid, resume=resume, db=db, run_id=run_id, concurrency=concurrency, max_tokens=max_tokens,
                                   max_failures=max_failures, max_cost=max_cost, fail_fast=fail_fast, rubric_file=rubric_file,
                                   on_progress=report, replay=replay, ray=ray, actors=actors, **config)  # fmt: skip
    except KeyboardInterrupt:
        if seen:  # the episodes that were in flight run again on resume
            seen[0].stopped = "interrupted"
            print_session(seen[0].run_id, db, seen[0])
        raise
    print_summary(api.summarize(result.run_id, db), db, result.progress)
    p = result.progress
    if p.fault or ((p.failed or p.ungraded) and not p.done):  # something broke, or no episode of this session succeeded
        raise typer.Exit(1)
    if replay is not None:
        print_differences(result.differences, replay)
