"""A run at a glance: the counts, rates and means `nextstep batch` and `nextstep show RUN` print."""

from __future__ import annotations

from pathlib import Path

from evaluations.judge.rubric import CONDITIONS
from simulator.core.records import Verdict
from simulator.storage.store import Store

from .agreement import scores_alpha
from .frame import scan_run, spend, summary, usable


def run_summary(run_id: str, db: Path | str = "nextstep.db") -> dict:
    """Per persona x setting (`frame.summary`), the strategies' cautions, the judges' agreement where an episode had
    several (over the usable episodes, as `compare RUN`), the tokens per succeeded episode over those whose endpoint
    reported usage, the run's cost (`frame.spend`: in all and per succeeded episode), its tokens spent and saved by
    the response cache, its backend, and the rows again with out-of-character episodes kept (shown, marked, where a
    row has no usable one). Built from the run's scalar frames
    (`scan_run`), never from its records held at once."""
    scan = scan_run(run_id, db)
    frame, judges = scan.frame, scan.judges
    with Store(Path(db)) as store:
        rubrics, completion = store.rubrics(run_id), store.completion(run_id)
        totals = next(r for r in store.runs() if r["id"] == run_id)
        spec = store.run(run_id)["spec"]
    ok = frame[frame["status"] == "succeeded"] if len(frame) else frame
    several = bool(len(ok)) and ok["judges"].max() > 1
    spent = spend(frame)
    return {
        "run": run_id,
        "completion": completion,
        "backend": spec.backend,
        "rows": summary(frame) if len(frame) else [],
        "rows_with_unfaithful": summary(frame, include_unfaithful=True) if len(frame) else [],
        "cautions": scan.cautions,
        "judge_alpha": scores_alpha(_panel_scores(judges, set(usable(frame)["episode_id"]))) if several else None,  # as compare's
        "rubrics": rubrics,  # {rubric hash: episodes}: two or more, and a re-grade was left part way
        "succeeded": len(ok),
        "usage_known": spent["tokens_known"],
        "tokens_per_episode": spent["tokens_per_episode"],
        "tokens_spent": totals["tokens"],  # at the endpoint, over every episode (None: some call reported no usage)
        "tokens_saved": totals["saved_tokens"],  # by calls the response cache answered
        "cost_usd": spent["cost_usd"], "cost_per_episode": spent["cost_per_episode"],
    }  # fmt: skip


def _panel_scores(judges, episodes: set[str]) -> list[list[dict]]:
    """Each of `episodes`' judges' scores, in the panel's order, from the per-judge frame (run order kept)."""
    rows = judges[judges["episode_id"].isin(episodes)]
    per_episode: dict[str, list[dict]] = {}
    for row in rows[["episode_id", *CONDITIONS]].itertuples(index=False):
        per_episode.setdefault(row[0], []).append({c: (None if v is None or v != v else int(v)) for c, v in zip(CONDITIONS, row[1:])})
    return list(per_episode.values())


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
