"""Storing an episode a person played (`nextstep play`), or one watched (`nextstep run`), like any other, in its own run."""

from __future__ import annotations

from pathlib import Path

from simulator.core.records import Episode, RunSpec
from simulator.storage.store import Store


WATCH_RUN = "watch"  # where `nextstep run` stores the episodes it shows


def _save_next(db, run_id: str, spec: RunSpec, record: Episode) -> str:
    """Store `record` in run `run_id` as the next repetition of its cell; returns the run id."""
    cell = f"{record.setting}/{record.persona}/{record.strategy}/{record.profile.id}"
    with Store(Path(db)) as store:
        store.create_run(run_id, spec)
        store.add_episode(run_id, cell, record)
    return run_id


def save_played(db, record: Episode, role: str) -> str:
    """Store a played episode in run 'play-ROLE', as the next repetition of its cell; returns the run id."""
    return _save_next(db, f"play-{role}", RunSpec(play={"person": role}), record.model_copy(update={"person": role}))


def save_watched(db, record: Episode) -> str:
    """Store an episode `nextstep run` made in run 'watch' (open-ended, like a played run), beside its JSON file."""
    return _save_next(db, WATCH_RUN, RunSpec(play={"watched": True}), record)
