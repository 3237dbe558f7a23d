"""`nextstep catalog` and `nextstep run`: what there is to simulate, and one episode watched turn by turn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

import simulator.api as api
from simulator.conversation.catalog import Gender

from .options import ENDPOINT, FILES, ROLES, FidelityJudge, Judges, Persona, PersonaGender, PractitionerGender, RubricFile, Seed, Setting, Strategy, config_options
from .show import console, print_caution, print_result, print_turn

app = typer.Typer()


@app.command()
@config_options(*FILES)
def catalog(config: dict) -> None:
    """List the settings, personas, strategies and profile factors."""
    cat = api.catalog(**config)
    for kind, entries in (("settings", cat.settings), ("personas", cat.personas), ("strategies", cat.strategies)):
        table = Table(title=kind, title_justify="left", show_header=False, box=None)
        for name, entry in entries.items():
            baseline = " [dim](baseline)[/]" if getattr(entry, "baseline", False) is True else ""
            caution = f"\n[yellow]{escape(entry.caution)}[/]" if getattr(entry, "caution", None) else ""
            table.add_row(f"[bold]{name}[/]", escape(entry.summary) + baseline + caution)
        console.print(table, "")
    genders = ", ".join(Gender.__args__)
    console.print(f"[bold]profile[/]: --practitioner-gender and --persona-gender, each one of {genders}")


def print_start(about: dict) -> None:
    """The line above an episode: what runs where, and a negative baseline's caution."""
    console.print(f"[dim]{about['setting']} · {about['persona']} · {about['strategy']} · {about['profile']} · "
                  f"seed {about['seed']} · {about['backend']}[/]")  # fmt: skip
    print_caution(about["caution"])


@app.command()
@config_options(*ENDPOINT, *ROLES, *FILES, "temperature", "max_turns")
def run(
    setting: Setting = "supermarket", persona: Persona = "unsure", strategy: Strategy = "common_interest",
    practitioner_gender: PractitionerGender = "man", persona_gender: PersonaGender = "woman", seed: Seed = 0,
    out: Annotated[Path, typer.Option(help="Directory for the episode JSON.")] = Path("episodes"),
    judges: Judges = 1, rubric_file: RubricFile = None, fidelity_judge: FidelityJudge = False,
    db: Annotated[Path, typer.Option(help="SQLite database the episode is stored in too, in run 'watch'.")] = Path("nextstep.db"),
    *, config: dict,
) -> None:
    """Simulate one episode, print it turn by turn, grade it, and save it (JSON, and run 'watch' of the database)."""
    record = api.run_episode(setting, persona, strategy, practitioner_gender=practitioner_gender, persona_gender=persona_gender,
                             seed=seed, judges=judges, rubric_file=rubric_file, fidelity_judge=fidelity_judge, db=db,
                             on_start=print_start, on_turn=print_turn, **config)  # fmt: skip
    print_result(record, api.save_episode(record, out))
    console.print(f"[bold]stored[/]: episode {record.id} in run watch of {db} (nextstep show {record.id} --db {db})")
    if record.status != "succeeded":
        raise typer.Exit(1)
