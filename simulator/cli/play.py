"""`nextstep play`: a person takes one role, the model the other; graded and stored like any episode."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def register(app: typer.Typer, console) -> None:
    """Add `play` to the nextstep app."""

    @app.command()
    def play(
        role: Annotated[str, typer.Option("--as", help="The role you take: practitioner or persona.")],
        setting: Annotated[str, typer.Option(help="Where you meet.")] = "supermarket",
        persona: Annotated[str, typer.Option(help="Who the other person is (or whom you play, as the persona).")] = "unsure",
        strategy: Annotated[str, typer.Option(help="The practitioner's strategy (yours to follow, as the practitioner).")] = "common_interest",
        practitioner_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "man",
        persona_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "woman",
        seed: Annotated[int, typer.Option(help="Seed for the model's requests.")] = 0,
        judges: Annotated[int, typer.Option(min=0, help="Judges grading the episode at the end, 0 for none.")] = 1,
        max_turns: Annotated[Optional[int], typer.Option(min=1, help="Most rounds \\[default: 8].")] = None,
        base_url: Annotated[Optional[str], typer.Option(help="Any OpenAI-compatible endpoint.")] = None,
        backend: Annotated[Optional[str], typer.Option(help="local (default) or openai.")] = None,
        model: Annotated[Optional[str], typer.Option(help="Model for every role.")] = None,
        db: Annotated[Path, typer.Option(help="SQLite database the episode is stored in (run play-ROLE).")] = Path("nextstep.db"),
        config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML config file.")] = None,
    ) -> None:
        """Take one role yourself: the model plays the other; an empty line or Ctrl-C ends the episode."""
        from evaluations.judge.evaluator import make_evaluator

        from simulator.models.backends import endpoint
        from .app import RUN_MAX_TURNS, _catalog, _judges, _profile
        from simulator.models.config import load_config
        from simulator.core.errors import UserError
        from simulator.conversation.graph import Context, Scenario
        from simulator.conversation.play import ROLES, Person
        from simulator.runs.played import save_played
        from simulator.conversation.prompts import Prompts
        from simulator.conversation.runner import run_episode
        from .show import print_result, print_turn

        if role not in ROLES:
            raise UserError(f"--as {role!r}: choose practitioner or persona")
        config = load_config(config_file, backend=backend, base_url=base_url, model=model, max_turns=max_turns)
        cat = _catalog(config)
        for kind, name in (("settings", setting), ("personas", persona), ("strategies", strategy)):
            cat.pick(kind, name)
        scenario = Scenario(setting, persona, strategy, _profile(practitioner_gender, persona_gender))
        other = "persona" if role == "practitioner" else "practitioner"
        brief = cat.strategies[strategy].summary if role == "practitioner" else cat.personas[persona].summary
        console.print(f"[bold]you play the {role}[/] · {setting} · {escape(brief)}\n[dim]the {other} is the model; "
                      "an empty line or Ctrl-C ends the episode[/]")  # fmt: skip

        def heard(turn) -> None:  # what the person sees: the model's lines, never its private state
            if turn.speaker == other:
                console.print(f"[magenta]them[/]: {escape(turn.text)}", soft_wrap=True)

        with endpoint(config, concurrency=1) as ep:

            async def go():
                async with ep.models(config) as models:
                    evaluate = make_evaluator(_judges(models["evaluators"], cat, config, judges, None, seed), cat) if judges else None
                    ctx = Context(models["practitioner"], models["persona"], cat, Prompts(cat.prompt_dirs), scenario, seed,
                                  temperature=config.temperature, max_turns=config.max_turns or RUN_MAX_TURNS,
                                  reasks=config.reasks, evaluate=evaluate, person=role)  # fmt: skip
                    return await run_episode(ctx, backend=ep.backend, on_turn=heard, answer=Person(say=console.print).answer)

            # asyncio.run swaps in its own Ctrl-C handler (cancel the task) unless one is set: this one makes Ctrl-C at a
            # prompt reach input() as KeyboardInterrupt, which ends the episode cleanly.
            previous = signal.signal(signal.SIGINT, _interrupt)
            try:
                record = asyncio.run(go())
            finally:
                signal.signal(signal.SIGINT, previous)
        console.print("\n[bold]the whole episode[/], with the persona's private state and the practitioner's intent:")
        for turn in record.turns:
            print_turn(turn)
        run_id = save_played(db, record, role)
        print_result(record, None)
        console.print(f"[bold]saved[/]: episode {record.id} in run {run_id} of {db}")
        if record.status == "failed":
            raise typer.Exit(1)
