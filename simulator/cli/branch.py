"""`nextstep branch`: continue stored prefixes under a change and unchanged, into a branch run of the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

Db = Annotated[Path, typer.Option(help="SQLite database of runs.")]


def register(app: typer.Typer, console) -> None:
    """Add `branch` to the nextstep app."""

    @app.command()
    def branch(
        source: Annotated[str, typer.Argument(help="An episode id (or unique prefix), or a run id: every episode of it.")],
        at: Annotated[str, typer.Option(help="Where to fork: a turn index (the turns before it are kept), first-ask (just "
                                             "before the practitioner's first ask) or peak (just after the persona's "
                                             "interest peak).")],
        strategy: Annotated[Optional[str], typer.Option(help="Treatment: another strategy from the fork on.")] = None,
        persona: Annotated[Optional[str], typer.Option(help="Treatment: another persona from the fork on.")] = None,
        prompts_dir: Annotated[Optional[Path], typer.Option("--prompts-dir", help="Treatment: another prompt directory.")] = None,
        practitioner_model: Annotated[Optional[str], typer.Option(help="Treatment: another practitioner model.")] = None,
        persona_model: Annotated[Optional[str], typer.Option(help="Treatment: another persona model.")] = None,
        reps: Annotated[int, typer.Option(min=1, help="Continuations per prefix in each arm (treatment and control).")] = 4,
        judges: Annotated[int, typer.Option(min=0, help="Judges per continuation, 0 for none.")] = 1,
        max_turns: Annotated[Optional[int], typer.Option(min=1, help="Most rounds in all \\[default: the parent's].")] = None,
        base_prompts: Annotated[Optional[Path], typer.Option(help="The prompt directory the parents were made with, if "
                                                                  "their run did not record it.")] = None,
        run_id: Annotated[Optional[str], typer.Option(help="Name the branch run \\[default: a hash of what it does].")] = None,
        concurrency: Annotated[Optional[int], typer.Option(min=1, help="Continuations in flight.")] = None,
        base_url: Annotated[Optional[str], typer.Option(help="Endpoint \\[default: the parent run's].")] = None,
        db: Db = Path("nextstep.db"),
        config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML config file.")] = None,
    ) -> None:
        """Continue stored episodes from an identical prefix, under a change and unchanged (the control), paired."""
        from simulator.runs.branch import Treatment, run_branches
        from simulator.core.errors import UserError

        if not db.is_file():
            raise UserError(f"{db}: no such database (run a batch first, or pass --db)")
        treatment = Treatment(strategy=strategy, persona=persona, prompts_dir=prompts_dir,
                              practitioner_model=practitioner_model, persona_model=persona_model)  # fmt: skip
        counts: dict[str, list[int]] = {}

        def saved(record) -> None:
            arm, exchanged = record.branch.arm, record.outcome and record.outcome.exchanged
            k, n = counts.setdefault(arm, [0, 0])
            counts[arm] = [k + (exchanged not in (None, "none")), n + 1]
            console.print(f"[dim]{record.branch.prefix} {arm} rep {record.rep}: {record.status}, exchanged {exchanged}[/]")

        run, skipped = asyncio.run(run_branches(source, at=at, treatment=treatment, reps=reps, db=db, judges=judges,
                                                run_id=run_id, max_turns=max_turns, concurrency=concurrency,
                                                config_file=config_file, on_saved=saved, base_url=base_url,
                                                prompts_dir=base_prompts))  # fmt: skip
        for line in skipped:
            console.print(f"[yellow]left out[/] {escape(line)}")
        for arm, (k, n) in sorted(counts.items()):
            console.print(f"{arm}: {n} continuations this session, {k} ended in an exchange")
        console.print(f"branch run {run} ({escape(treatment.label())} vs control)\n"
                      f"see more: nextstep compare {run} --db {db}\n          nextstep report {run} --db {db} -o {run}.html")
