"""The rubric as data: the article's conditions and failure-mode flags, overridable by file."""

from __future__ import annotations

from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from simulator.core.files import data_dir, read_yaml, validate

CONDITIONS = ("agenda_clarity", "congruence", "genuine_interest", "timing", "natural_bridge", "setting_fit")
FLAGS = ("rude", "demanding", "crude", "creepy", "over_deferential", "nervous", "sketchy", "ignores_no")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    description: str
    evidence: str
    anchors: dict[Literal[1, 3, 5], str]  # what a 1, a 3 and a 5 look like
    not_applicable: str | None  # when a null score is right; None: the condition always gets a score

    @model_validator(mode="after")
    def _three_anchors(self):
        if set(self.anchors) != {1, 3, 5}:
            raise ValueError("anchors must describe scores 1, 3 and 5")
        return self


class Flag(_Strict):
    description: str
    source: Literal["article", "toolkit"]  # the article's own list of ways to fail, or our addition


class Rubric(_Strict):
    conditions: dict[str, Condition]
    flags: dict[str, Flag]

    @model_validator(mode="after")
    def _known_ids(self):
        for kind, have, want in (("conditions", self.conditions, CONDITIONS), ("flags", self.flags, FLAGS)):
            if set(have) != set(want):
                raise ValueError(f"{kind} must be exactly {', '.join(want)}")
        return self


def rubric_path(rubric_file: Path | None = None, prompts_dir: Path | None = None) -> Path:
    """--rubric FILE, else rubric.yaml in --prompts-dir DIR, else the shipped one."""
    if rubric_file is not None:
        return rubric_file
    if prompts_dir is not None and (prompts_dir / "rubric.yaml").is_file():
        return prompts_dir / "rubric.yaml"
    return data_dir("prompts") / "rubric.yaml"


def load_rubric(rubric_file: Path | None = None, prompts_dir: Path | None = None) -> tuple[Rubric, str]:
    """The validated rubric and its hash (recorded with every verdict)."""
    from simulator.conversation.prompts import text_hash  # with jinja2: CONDITIONS alone (the CLI's tables) stays light

    path = rubric_path(rubric_file, prompts_dir)
    rubric = validate(Rubric, read_yaml(path), str(path))
    return rubric, text_hash(rubric.model_dump_json())
