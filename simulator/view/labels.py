"""Labelling a run's episodes in the viewer: a stratified sample, and each label saved at once as a gold-set line."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from simulator.core.errors import UserError
from simulator.core.records import Episode
from simulator.storage.store import Store

EXCHANGED = ("number", "email", "social_handle", "none")


@dataclass
class LabelSession:
    """One labeller's pass over a sample of a run: where the labels go and what the page shows beside each condition."""

    run_id: str
    ids: list[str]
    output: Path
    labeller: str
    anchors: dict[str, dict[int, str]]  # condition -> {1: ..., 3: ..., 5: ...}, in the rubric's order
    flags: tuple[str, ...] = ()
    saved: dict[str, dict] = field(default_factory=dict)


def stratified_sample(records: list[Episode], n: int, seed: int = 0) -> list[str]:
    """Ids of up to `n` succeeded episodes spread over persona x strategy: each cell's episodes shuffled by `seed`, then
    taken in turn, the personas alternating, so 3 from a 3-persona grid are one of each:
    `stratified_sample([...], 3)` -> ['id-aloof', 'id-friendly', 'id-unsure']."""
    rng = random.Random(seed)
    cells: dict[tuple[str, str], list[str]] = {}
    for r in sorted((r for r in records if r.status == "succeeded"), key=lambda r: r.id):
        cells.setdefault((r.strategy, r.persona), []).append(r.id)
    for ids in cells.values():
        rng.shuffle(ids)
    order = sorted(cells)  # by strategy, then persona: consecutive cells are different personas
    picked: list[str] = []
    while len(picked) < n and any(cells.values()):
        for key in order:
            if cells[key] and len(picked) < n:
                picked.append(cells[key].pop(0))
    return picked


def labeller_name(name: str) -> str:
    """A labeller's name as it goes into a file name: letters, digits, '.', '_' and '-' (`labeller_name('ana')` ->
    'ana'); anything else is a ValueError saying so."""
    if not re.fullmatch(r"[\w.-]{1,40}", name) or name.strip(".") == "":
        raise ValueError(f"labeller {name!r}: use 1-40 letters, digits, '.', '_' or '-'")
    return name


def default_output(run_id: str, labeller: str) -> Path:
    """Where a labeller's labels of a run go unless told: `default_output('r1', 'ana')` -> Path('r1-labels-ana.jsonl')
    (a character of the run id a file name cannot hold becomes '_')."""
    safe = re.sub(r"[^\w.-]", "_", run_id)
    return Path(f"{safe}-labels-{labeller}.jsonl")


def other_labellers(session: LabelSession) -> list[Path]:
    """Other labellers' files of the session's run beside its own, as `default_output` names them."""
    pattern = default_output(session.run_id, "*").name
    return sorted(p for p in session.output.parent.glob(pattern) if p.resolve() != session.output.resolve())


def new_session(db: Path, run_id: str, *, sample: int, seed: int, labeller: str, output: Path,
                anchors: dict[str, dict[int, str]], flags: tuple[str, ...]) -> LabelSession:
    """Draw the sample from the store (read-only) and read back what `output` already holds, to carry on a pass."""
    with Store.reader(db) as store:
        store.run(run_id)
        ids = stratified_sample(store.episodes(run_id), sample, seed)
    saved = {}
    if output.is_file():
        for number, line in enumerate(output.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    item = json.loads(line)
                    saved[item["id"]] = item
                except (json.JSONDecodeError, TypeError, KeyError):
                    raise UserError(f"{output}:{number}: not a gold-set line (JSON with an 'id'); labels go to a file of their own") from None
    return LabelSession(run_id, ids, output, labeller, anchors, flags, saved)


def gold_line(e: Episode, session: LabelSession, form: dict[str, list[str]]) -> dict:
    """The gold-set line for an episode from the label form (score '0' or missing: not applicable)."""
    def score(c: str) -> int | None:
        value = (form.get(c) or ["0"])[0]
        return int(value) if value in ("1", "2", "3", "4", "5") else None

    exchanged = (form.get("exchanged") or ["none"])[0]
    return {"id": e.id, "setting": e.setting, "persona": e.persona, "strategy": e.strategy,
            "turns": [{"speaker": t.speaker, "text": t.text} for t in e.turns],
            "labels": {c: score(c) for c in session.anchors},
            "flags": [f for f in form.get("flags", []) if f in session.flags],
            "exchanged": exchanged if exchanged in EXCHANGED else "none",
            "labeller": session.labeller, "labelled_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run_id": session.run_id}  # fmt: skip


def save(session: LabelSession, line: dict) -> None:
    """Keep one episode's labels, replacing an earlier entry of it, and rewrite the file whole (atomically)."""
    session.saved[line["id"]] = line
    ordered = [session.saved[i] for i in session.ids if i in session.saved]
    ordered += [v for k, v in session.saved.items() if k not in session.ids]
    temp = session.output.with_name(session.output.name + ".tmp")
    temp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in ordered), encoding="utf-8")
    os.replace(temp, session.output)
