"""Gold sets: JSONL of labelled transcripts for calibrating the judge; a bad line is named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from simulator.conversation.catalog import Catalog
from simulator.conversation.episode import Exchanged
from simulator.core.errors import UserError
from simulator.core.files import read_text, validate

from .rubric import FLAGS

Label = Optional[Literal[1, 2, 3, 4, 5]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GoldTurn(_Strict):
    speaker: Literal["practitioner", "persona"]
    text: str = Field(min_length=1)


class Labels(_Strict):
    agenda_clarity: Label = None
    congruence: Label = None
    genuine_interest: Label = None
    timing: Label = None
    natural_bridge: Label = None
    setting_fit: Label = None


class GoldItem(_Strict):
    id: str
    setting: str
    persona: str
    strategy: Optional[str] = None
    turns: list[GoldTurn] = Field(min_length=2)
    labels: Labels
    flags: list[Literal[FLAGS]] = []
    exchanged: Exchanged
    rationale: Optional[str] = None  # why the labels are what they are, for the next reader who disputes one
    labeller: Optional[str] = None  # who labelled it, when and from which run (`nextstep label`)
    labelled_at: Optional[str] = None
    run_id: Optional[str] = None

    def episode(self) -> dict:
        """The transcript in the shape the evaluator grades (numbered turns, no telemetry)."""
        turns = [{"index": i, **t.model_dump()} for i, t in enumerate(self.turns)]
        return {"turns": turns, "setting": self.setting, "persona": self.persona, "strategy": self.strategy}


class SecondPass(_Strict):
    """Another reader's labels for a gold item, made without seeing the first reader's."""

    id: str
    labels: Labels
    flags: list[Literal[FLAGS]] = []
    exchanged: Exchanged


def load_second_pass(path: Path, items: list[GoldItem]) -> list[SecondPass]:
    """A second labelling pass of `items`, in their order; a missing, unknown or bad line is named."""
    by_id = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                label = validate(SecondPass, json.loads(line), f"{path}:{number}")
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{number}: invalid JSON: {e.msg} at column {e.colno}") from None
            by_id[label.id] = label
    ids = [item.id for item in items]
    if missing := [i for i in ids if i not in by_id]:
        raise UserError(f"{path}: no labels for {', '.join(missing)}")
    if unknown := sorted(by_id.keys() - set(ids)):
        raise UserError(f"{path}: labels for items not in the gold set: {', '.join(unknown)}")
    return [by_id[i] for i in ids]


def load_gold(path: Path, catalog: Catalog) -> list[GoldItem]:
    """Every item of a gold file; the first bad line is reported as 'FILE:LINE: problem'."""
    items, seen = [], set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from None
        item = validate(GoldItem, data, where)
        for kind, name in (("settings", item.setting), ("personas", item.persona), ("strategies", item.strategy)):
            if name is not None:
                try:
                    catalog.pick(kind, name)
                except UserError as e:
                    raise UserError(f"{where}: {e}") from None
        if item.id in seen:
            raise UserError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    return items
