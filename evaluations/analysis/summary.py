"""A run at a glance: the counts, rates and means `nextstep batch` and `nextstep show RUN` print."""

from __future__ import annotations

from pathlib import Path

from evaluations.judge.rubric import CONDITIONS
from simulator.core.records import Verdict
from simulator.storage.store import Store

from .agreement import judge_alpha
from .frame import load_run, summary


def run_summary(run_id: str, db: Path | str = "nextstep.db") -> dict:
    """Per persona x setting (`frame.summary`; again with out-of-character episodes kept), the backend, the strategies'
    cautions, the judges' agreement where an episode had several, and the tokens per succeeded episode over those
    whose endpoint reported usage."""
    frame = load_run(run_id, db)
    with Store(Path(db)) as store:
        records, spec = store.episodes(run_id), store.run(run_id)["spec"]
    ok = frame[frame["status"] == "succeeded"]
    known = ok[ok["prompt_tokens"].notna() & ok["completion_tokens"].notna()]
    several = bool(len(ok)) and ok["judges"].max() > 1
    return {
        "run": run_id,
        "backend": spec.backend,
        "rows": summary(frame),
        "rows_with_unfaithful": summary(frame, include_unfaithful=True),  # shown, marked, where a row has no usable one
        "cautions": dict(sorted({r.strategy: r.caution for r in records if r.caution}.items())),
        "judge_alpha": judge_alpha([r.verdicts for r in records if r.status == "succeeded"]) if several else None,
        "succeeded": len(ok),
        "usage_known": len(known),
        "tokens_per_episode": float((known["prompt_tokens"] + known["completion_tokens"]).mean()) if len(known) else None,
    }  # fmt: skip


def grading_summary(verdicts: list[list[Verdict]]) -> dict:
    """What a grading pass found, for `nextstep grade`: verdicts by status, each condition's grades by status with
    the mean score, flags raised and what the judges read as exchanged (one count per verdict)."""
    every = [v for per_episode in verdicts for v in per_episode]
    graded = [v for v in every if v.graded]
    grades = {c: [t.conditions[c] for v in graded for t in v.transitions if c in t.conditions] for c in CONDITIONS}
    conditions = {}
    for c, gs in grades.items():
        scores = [g.score for g in gs if g.status == "scored" and g.score is not None]
        conditions[c] = {"scored": len(scores), "not_applicable": sum(g.status == "not_applicable" for g in gs),
                         "unscored": sum(g.status == "unscored" for g in gs),
                         "mean": sum(scores) / len(scores) if scores else None}  # fmt: skip
    flags: dict[str, int] = {}
    for f in (f for v in graded if v.flags for f in v.flags.raised):
        flags[f.flag] = flags.get(f.flag, 0) + 1
    exchanged: dict[str, int] = {}
    for v in graded:
        said = v.outcome.exchanged if v.outcome and v.outcome.status == "scored" else "unscored"
        exchanged[said] = exchanged.get(said, 0) + 1
    return {"episodes": len(verdicts), "judges": max((len(x) for x in verdicts), default=0), "verdicts": len(every),
            "ungraded": len(every) - len(graded), "unscored_parts": sum(len(v.unscored) for v in graded),
            "conditions": conditions, "flags": dict(sorted(flags.items())), "exchanged": dict(sorted(exchanged.items()))}
