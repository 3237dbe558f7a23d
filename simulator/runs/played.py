"""Storing an episode a person played (`nextstep play`) like any other, in its own run."""

from __future__ import annotations

from pathlib import Path

from simulator.storage.store import Store


def save_played(db, record: dict, role: str) -> str:
    """Store a played episode in run 'play-ROLE', as the next repetition of its cell; returns the run id."""
    run_id, profile = f"play-{role}", record.get("profile") or {}
    cell = f"{record['setting']}/{record['persona']}/{record['strategy']}/{profile.get('practitioner_gender')}-{profile.get('persona_gender')}"
    with Store(Path(db)) as store:
        store.create_run(run_id, {"play": {"person": role}})
        rep = store.next_rep(run_id, cell)
        store.save_episode(run_id, cell, rep, record | {"run_id": run_id, "cell": cell, "rep": rep, "person": role})
    return run_id
