"""A run at a glance: the counts, rates and means `nextstep batch` and `nextstep show RUN` print."""

from __future__ import annotations

from pathlib import Path

from simulator.storage.store import Store

from .agreement import judge_alpha
from .frame import load_run, spend, summary


def run_summary(run_id: str, db: Path | str = "nextstep.db") -> dict:
    """Per persona x setting (`frame.summary`), the strategies' cautions, the judges' agreement where an episode had
    several (over the usable episodes, as `compare RUN`), what it spent (`frame.spend`: tokens and dollars, in all and per
    succeeded episode), and the run's tokens spent and saved by the response cache."""
    frame = load_run(run_id, db)
    with Store(Path(db)) as store:
        records = store.episodes(run_id)
        totals = next(r for r in store.runs() if r["id"] == run_id)
    ok = frame[frame["status"] == "succeeded"]
    spent = spend(frame)
    several = bool(len(ok)) and ok["judges"].max() > 1
    return {
        "run": run_id,
        "rows": summary(frame),
        "cautions": dict(sorted({r.strategy: r.caution for r in records if r.caution}.items())),
        "judge_alpha": judge_alpha([r.verdicts for r in records if r.usable]) if several else None,  # as compare's
        **spent,
        "usage_known": spent["tokens_known"],
        "tokens_spent": totals["tokens"],  # at the endpoint, over every episode (None: some call reported no usage)
        "tokens_saved": totals["saved_tokens"],  # by calls the response cache answered
    }  # fmt: skip

