"""Episodes as JSON files (what `nextstep run` writes and `nextstep grade` reads), beside the SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from simulator.core.errors import UserError
from simulator.core.files import validate, write_atomic
from simulator.core.records import Episode


def write_episode(record: Episode, path: Path) -> Path:
    """Write `record` to `path` as indented JSON (its folder made if need be), whole or not at all; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, record.model_dump_json(indent=2))


def read_episode(path: Path) -> Episode:
    """An episode record from a JSON file, or a UserError naming the file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not an episode JSON file ({e})") from None
    if not isinstance(record, dict) or not {"turns", "setting", "persona"} <= record.keys():
        raise UserError(f"{path}: not an episode record (needs turns, setting, persona)")
    return validate(Episode, record, str(path))
