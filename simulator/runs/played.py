"""Storing an episode a person played (`nextstep play`) like any other, in its own run."""

from __future__ import annotations

from pathlib import Path

from simulator.core.records import Episode, RunSpec
from simulator.storage.store import Store


def save_played(db, record: Episode, role: str) -> str:
    """Store a played episode in run 'play-ROLE', as the next repetition of its cell; returns the run id."""
    run_id, cell = f"play-{role}", f"{record.setting}/{record.persona}/{record.strategy}/{record.profile.id}"
    with Store(Path(db)) as store:
        store.create_run(run_id, RunSpec(play={"person": role}))
        store.add_episode(run_id, cell, record.model_copy(update={"person": role}))
    return run_id
