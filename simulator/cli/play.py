"""`nextstep play`: a person takes one role, the model the other; graded and stored like any episode."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

import simulator.api as api
from simulator.core.records import Turn

from .options import ENDPOINT, FILES, ROLES, Db, Judges, Persona, PersonaGender, PractitionerGender, Seed, Setting, Strategy, config_options
from .show import console, print_result, print_turn, shown

app = typer.Typer()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@app.command()
@config_options(*ENDPOINT, *ROLES, *FILES, "max_turns")
def play(
    role: Annotated[str, typer.Option("--as", help="The role you take: practitioner or persona.")],
    setting: Setting = "supermarket", persona: Persona = "unsure", strategy: Strategy = "common_interest",
    practitioner_gender: PractitionerGender = "man", persona_gender: PersonaGender = "woman", seed: Seed = 0,
    judges: Judges = 1, db: Db = Path("nextstep.db"), *, config: dict,
) -> None:
    """Take one role yourself: the model plays the other; an empty line or Ctrl-C ends the episode (stored in run play-ROLE)."""
    other = "persona" if role == "practitioner" else "practitioner"

    def start(about: dict) -> None:
        brief = about["strategy_summary"] if role == "practitioner" else about["persona_summary"]
        console.print(f"[bold]you play the {role}[/] · {about['setting']} · {escape(brief)}\n[dim]the {other} is the model; "
                      "an empty line or Ctrl-C ends the episode[/]")  # fmt: skip

    def heard(turn: Turn) -> None:  # what the person sees: the model's lines, never its private state
        if turn.speaker == other:
            console.print(f"[magenta]them[/]: {shown(turn.text)}", soft_wrap=True)

    # asyncio.run swaps in its own Ctrl-C handler (cancel the task) unless one is set: this one makes Ctrl-C at a
    # prompt reach input() as KeyboardInterrupt, which ends the episode cleanly.
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        record, run_id = api.play(role, setting, persona, strategy, practitioner_gender=practitioner_gender,
                                  persona_gender=persona_gender, seed=seed, judges=judges, db=db, say=console.print,
                                  on_start=start, on_turn=heard, **config)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print("\n[bold]the whole episode[/], with the persona's private state and the practitioner's intent:")
    for turn in record.turns:
        print_turn(turn)
    print_result(record, None)
    console.print(f"[bold]saved[/]: episode {record.id} in run {run_id} of {db}")
    if record.status == "failed":
        raise typer.Exit(1)
