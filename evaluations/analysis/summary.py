"""A run at a glance: the counts, rates and means `nextstep batch` and `nextstep show RUN` print."""

from __future__ import annotations

from pathlib import Path

from simulator.storage.store import Store

from .agreement import judge_alpha
from .frame import load_run, summary


def run_summary(run_id: str, db: Path | str = "nextstep.db") -> dict:
    """Per persona x setting (`frame.summary`), the strategies' cautions, the judges' agreement where an episode had
    several (over the usable episodes, as `compare RUN`), the tokens per succeeded episode over those whose endpoint
    reported usage, and the run's tokens spent and saved by the response cache."""
    frame = load_run(run_id, db)
    with Store(Path(db)) as store:
        records, completion = store.episodes(run_id), store.completion(run_id)
        totals = next(r for r in store.runs() if r["id"] == run_id)
    ok = frame[frame["status"] == "succeeded"]
    known = ok[ok["prompt_tokens"].notna() & ok["completion_tokens"].notna()]
    several = bool(len(ok)) and ok["judges"].max() > 1
    return {
        "run": run_id,
        "completion": completion,
        "rows": summary(frame),
        "cautions": dict(sorted({r.strategy: r.caution for r in records if r.caution}.items())),
        "judge_alpha": judge_alpha([r.verdicts for r in records if r.usable]) if several else None,  # as compare's
        "succeeded": len(ok),
        "usage_known": len(known),
        "tokens_per_episode": float((known["prompt_tokens"] + known["completion_tokens"]).mean()) if len(known) else None,
        "tokens_spent": totals["tokens"],  # at the endpoint, over every episode (None: some call reported no usage)
        "tokens_saved": totals["saved_tokens"],  # by calls the response cache answered
    }  # fmt: skip


def completion_note(run_id: str, c: dict) -> str:
    """One line on how far a run is (`Store.completion`): 'run r1: 40/168 episodes done; incomplete, unbalanced
    (the cells hold different numbers of episodes); continue with: nextstep batch --resume r1 --db n.db'."""
    done = f"{c['done']}/{c['planned']}" if c["planned"] is not None else f"{c['done']}"
    line = f"run {run_id}: {done} episodes done"
    if c["complete"] is False:
        line += "; incomplete"
    if not c["balanced"]:
        line += ", unbalanced (the cells hold different numbers of episodes)" if c["complete"] is False else \
            "; unbalanced (the cells hold different numbers of episodes)"
    if c["failed"] or c["ungraded"]:
        line += f"; {c['failed']} failed, {c['ungraded']} ungraded"
    if c["resume"] and (c["complete"] is False or c["failed"] or c["ungraded"]):
        line += f"; continue with: {c['resume']}"
    return line
