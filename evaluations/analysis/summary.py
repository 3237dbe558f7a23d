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
        records = store.episodes(run_id)
        totals = next(r for r in store.runs() if r["id"] == run_id)
    ok = frame[frame["status"] == "succeeded"]
    known = ok[ok["prompt_tokens"].notna() & ok["completion_tokens"].notna()]
    several = bool(len(ok)) and ok["judges"].max() > 1
    return {
        "run": run_id,
        "rows": summary(frame),
        "cautions": dict(sorted({r.strategy: r.caution for r in records if r.caution}.items())),
        "judge_alpha": judge_alpha([r.verdicts for r in records if r.usable]) if several else None,  # as compare's
        "succeeded": len(ok),
        "usage_known": len(known),
        "tokens_per_episode": float((known["prompt_tokens"] + known["completion_tokens"]).mean()) if len(known) else None,
        "tokens_spent": totals["tokens"],  # at the endpoint, over every episode (None: some call reported no usage)
        "tokens_saved": totals["saved_tokens"],  # by calls the response cache answered
    }  # fmt: skip
