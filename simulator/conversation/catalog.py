"""The catalog drawn from the article: settings, personas, strategies, practitioner profiles."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from simulator.core.errors import UserError
from simulator.core.files import data_dir, read_yaml, validate
from simulator.core.records import Gender, Profile

Rating = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # an enum: small models' grammars ignore min/max


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Setting(_Strict):
    summary: str = Field(description="One line for `nextstep catalog`.")
    place: str = Field(description="Where the two people are, as a noun phrase.")
    assumption: str = Field(description="What a swap of contact details is taken to mean here.")
    moment: str = Field(description="When the swap naturally happens here.")


class Strategy(_Strict):
    summary: str
    baseline: bool = Field(description="A baseline a good evaluator should score lower.")
    instructions: str = Field(description="What the practitioner is told to do.")
    situation: str | None = Field(None, description="A fact about the practitioner's circumstances, true in this scenario.")
    parting: str | None = Field(None, description="What to do with the one more line the practitioner gets at the parting.")
    caution: str | None = Field(None, description="Shown wherever its transcripts are, e.g. a negative baseline's.")


class Baseline(_Strict):
    interest: Rating
    comfort: Rating


class FirstTurn(_Strict):
    """Inclusive ranges the persona's first private state should fall in, e.g. aloof interest [0, 5]."""

    interest: tuple[Rating, Rating]
    comfort: tuple[Rating, Rating]


class Persona(_Strict):
    id: str
    summary: str
    temperament: str
    # The decision rules; null in the ablation set (personas/ablation/), which leaves the article's rules out.
    on_agendas: str | None
    on_ambiguity: str | None
    on_pressure: str | None
    baseline: Baseline
    expected_first_turn: FirstTurn


def profile_of(practitioner_gender: str, persona_gender: str, flags=("--practitioner-gender", "--persona-gender")) -> Profile:
    """A Profile, or a UserError naming the flag of a gender not in `Gender`: `profile_of('man', 'woman').id` -> 'man-woman'."""
    for flag, value in zip(flags, (practitioner_gender, persona_gender)):
        if value not in Gender.__args__:
            raise UserError(f"{flag} {value!r}: choose from {', '.join(Gender.__args__)}")
    return Profile(practitioner_gender=practitioner_gender, persona_gender=persona_gender)


class _Settings(RootModel[dict[str, Setting]]):
    pass


class _Strategies(RootModel[dict[str, Strategy]]):
    pass


def entry_hash(entry: BaseModel) -> str:
    """A short, stable hash of one catalog entry, e.g. 'c0ffee12…' (16 hex digits)."""
    return hashlib.sha256(entry.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Catalog:
    settings: dict[str, Setting]
    personas: dict[str, Persona]
    strategies: dict[str, Strategy]
    prompt_dirs: tuple[Path, ...] = field(default=())

    def pick(self, kind: str, name: str):
        """The entry `name` of `kind`, or a UserError listing the valid names."""
        entries = getattr(self, kind)
        if name not in entries:
            raise UserError(f"unknown {_SINGULAR[kind]} {name!r}; choose from: {', '.join(entries)}")
        return entries[name]

    def names(self, kind: str, spec: str) -> list[str]:
        """Names from a comma list or 'all', each checked: `names('personas', 'aloof,unsure')`."""
        if spec.strip() == "all":
            return list(getattr(self, kind))
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise UserError(f"no {kind} given")
        for name in names:
            self.pick(kind, name)
        return names


_SINGULAR = {"settings": "setting", "personas": "persona", "strategies": "strategy"}


def _layered(name: str, user_dir: Path | None) -> Path:
    """The user's copy of a data file if it has one, else the shipped one."""
    if user_dir is not None and (user_dir / name).is_file():
        return user_dir / name
    return data_dir("prompts") / name


def _check_dir(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_dir():
        raise UserError(f"{flag} {path}: not a directory")


def personas_path(personas_dir: Path | None) -> Path | None:
    """A directory, or the name of a shipped persona set: `personas_path(Path('ablation'))` -> .../personas/ablation."""
    if personas_dir is None or personas_dir.is_dir() or len(personas_dir.parts) != 1:
        return personas_dir
    shipped = data_dir("personas") / personas_dir.name
    return shipped if shipped.is_dir() else personas_dir


def load_catalog(personas_dir: Path | None = None, prompts_dir: Path | None = None) -> Catalog:
    """The shipped catalog, with files in `personas_dir`/`prompts_dir` overriding theirs by name.

    `personas_dir` may also name a shipped persona set, such as `ablation`.
    """
    personas_dir = personas_path(personas_dir)
    _check_dir(personas_dir, "--personas-dir")
    _check_dir(prompts_dir, "--prompts-dir")
    persona_files = {p.name: p for p in sorted(data_dir("personas").glob("*.yaml"))}
    if personas_dir is not None:
        persona_files |= {p.name: p for p in sorted(personas_dir.glob("*.yaml"))}
    personas = {}
    for path in persona_files.values():
        persona = validate(Persona, read_yaml(path), str(path))
        if persona.id != path.stem:
            raise UserError(f"{path}: id {persona.id!r} does not match the file name {path.stem!r}")
        personas[persona.id] = persona
    settings_file, strategies_file = _layered("settings.yaml", prompts_dir), _layered("strategies.yaml", prompts_dir)
    settings = validate(_Settings, read_yaml(settings_file), str(settings_file)).root
    strategies = validate(_Strategies, read_yaml(strategies_file), str(strategies_file)).root
    dirs = (prompts_dir, data_dir("prompts")) if prompts_dir is not None else (data_dir("prompts"),)
    return Catalog(settings, personas, strategies, dirs)
