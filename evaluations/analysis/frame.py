"""Runs as tables: one flat row per episode (pandas), the end-of-batch summary, exports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.judge.rubric import CONDITIONS, FLAGS
from evaluations.judge.rules import episode_scores
from simulator.core.errors import UserError
from simulator.core.files import replacing
from simulator.core.records import Episode, is_contact, usage
from simulator.storage.store import Store

from .agreement import panel_exchanged, panel_flags, panel_next_meeting, panel_scores

MEASURES = ("mean_interest", "mean_comfort", *CONDITIONS)  # per-episode numbers compared with rank tests
def _mean(values: list[int | None]) -> float | None:
    """`_mean([4, 6])` -> 5.0; `_mean([])` -> None."""
    return sum(values) / len(values) if values else None


def episode_row(record: Episode) -> dict:
    """One episode as flat columns: factors, outcome, private state, panel scores, flags."""
    o, profile, branch, use = record.outcome, record.profile, record.branch, record.usage
    # An ungraded episode's panel is incomplete (a judge's endpoint failed): no judge column until it is re-graded.
    verdicts = [] if record.status == "ungraded" else record.verdicts
    scores = panel_scores(verdicts) if verdicts else {c: None for c in CONDITIONS}
    flags = panel_flags(verdicts)
    persona_turns = [t for t in record.turns if t.speaker == "persona"]
    exchanged = o and o.exchanged
    return {
        "episode_id": record.id, "run_id": record.run_id, "cell": record.cell, "rep": record.rep,
        "setting": record.setting, "persona": record.persona, "strategy": record.strategy,
        "practitioner_gender": profile and profile.practitioner_gender, "persona_gender": profile and profile.persona_gender,
        "seed": record.seed, "status": record.status, "error": record.error,
        "prefix": branch and branch.prefix, "arm": branch and branch.arm, "person": record.person,
        "fidelity_ok": record.in_character, "completed": record.completed, "usable": record.usable,
        "exchanged": exchanged, "contact": is_contact(exchanged),
        "social_handle": None if exchanged is None else exchanged == "social_handle",
        "next_meeting": panel_next_meeting(verdicts) if verdicts else None,  # needs a reading of the text: the judges'
        "judged_exchanged": panel_exchanged(verdicts) if verdicts else None,
        "asked": o and o.asked, "first_ask_turn": o and o.first_ask_turn, "end_reason": o and o.end_reason,
        "ended_by": o and o.ended_by, "turns": len(record.turns),
        "final_interest": o and o.final_interest, "final_comfort": o and o.final_comfort,
        "mean_interest": _mean([t.interest for t in persona_turns]), "mean_comfort": _mean([t.comfort for t in persona_turns]),
        "judges": len(verdicts),
        **{c: scores.get(c) for c in CONDITIONS},
        **{f"flag_{f}": flags[f] for f in FLAGS},  # None where no judge's flags part was scored
        "prompt_tokens": use and use.prompt_tokens, "completion_tokens": use and use.completion_tokens,
        "cost_usd": use.cost_usd if use else usage(record.all_calls()).cost_usd, "duration_s": record.duration_s,
    }  # fmt: skip


def spend(frame) -> dict:
    """A run's tokens and US dollars in all (None when some episode's are unknown: a partial sum would read as the
    whole), and per succeeded episode, over the succeeded episodes whose figure is known (`*_known` of them).

    `spend(frame)` -> {'tokens': 5400, 'cost_usd': 0.03, 'tokens_per_episode': 1800.0, 'cost_per_episode': 0.01,
    'succeeded': 3, 'tokens_known': 3, 'cost_known': 3}
    """
    ok = frame[frame["status"] == "succeeded"] if len(frame) else frame
    out = {"succeeded": len(ok)}
    for key, per, known in (("tokens", "tokens_per_episode", "tokens_known"), ("cost_usd", "cost_per_episode", "cost_known")):
        columns = ["prompt_tokens", "completion_tokens"] if key == "tokens" else [key]
        if frame.empty or not set(columns) <= set(frame.columns):  # nothing spent; or a frame made without these figures
            out |= {key: 0 if frame.empty else None, per: None, known: 0}
            continue
        values = frame[columns].sum(axis=1, min_count=len(columns))  # NaN where any part is unknown
        mine = values[ok.index].dropna()
        out[key] = None if values.isna().any() else float(values.sum())
        out[per], out[known] = (float(mine.mean()) if len(mine) else None), len(mine)
    return out


def load_run(run_id: str, db: Path | str = "nextstep.db"):
    """A pandas DataFrame of a run's episodes, one row each (see `episode_row` for the columns)."""
    return scan_run(run_id, db).frame


@dataclass
class Scan:
    """What the summaries need of a run, as scalars: `frame` (episode_row), `judges` (judge_rows) and the strategies'
    cautions."""

    frame: Any
    judges: Any
    cautions: dict[str, str]


def scan_run(run_id: str, db: Path | str = "nextstep.db", *, each: Callable[[Episode], None] | None = None) -> Scan:
    """One pass over a run, each record read, flattened, shown to `each` and let go: memory grows with the scalar
    columns, not the records (benchmarks/show_scale.py)."""
    episodes, judges, cautions = _Columns(), _Columns(), {}
    with Store(Path(db)) as store:
        store.run(run_id)
        for record in store.each_episode(run_id):
            episodes.add([episode_row(record)])
            judges.add(judge_rows(record))
            if record.caution:
                cautions[record.strategy] = record.caution
            if each:
                each(record)
    return Scan(episodes.frame(), judges.frame(JUDGE_COLUMNS), dict(sorted(cautions.items())))


class _Columns:
    """Rows kept as one list per column (of scalars), so that a long run never holds its rows as dicts."""

    def __init__(self):
        self.columns: dict[str, list] = {}

    def add(self, rows: list[dict]) -> None:
        for row in rows:  # every row has the same keys (episode_row, judge_rows)
            for key, value in row.items():
                self.columns.setdefault(key, []).append(value)

    def frame(self, columns: list[str] | None = None):
        import pandas as pd

        return pd.DataFrame(self.columns, columns=columns or list(self.columns))


def judge_rows(record: Episode) -> list[dict]:
    """One row per judge of an episode: its score for each condition and its reading of whether contact was made."""
    rows = []
    for v in record.verdicts:
        scores, said = episode_scores(v), v.outcome
        judged = is_contact(said.exchanged) if said and said.status == "scored" else None
        rows.append({"episode_id": record.id, "cell": record.cell, "judge": v.judge, "judged_contact": judged,
                     **{c: scores.get(c) for c in CONDITIONS}})  # fmt: skip
    return rows


JUDGE_COLUMNS = ["episode_id", "cell", "judge", "judged_contact", *CONDITIONS]


def judges_frame(records: list[Episode]):
    """A pandas DataFrame with one row per episode and judge (see `judge_rows`)."""
    import pandas as pd

    return pd.DataFrame([row for r in records for row in judge_rows(r)], columns=JUDGE_COLUMNS)


def load_judges(run_id: str, db: Path | str = "nextstep.db"):
    """A run's per-judge frame (`judges_frame`)."""
    return scan_run(run_id, db).judges


def usable(frame, *, include_unfaithful: bool = False):
    """The rows aggregates are built on: the `usable` column (`Episode.usable`), or with `include_unfaithful` the
    `completed` one (out-of-character episodes kept). Failed, ungraded and abandoned episodes are always left out."""
    if frame.empty:  # a run without episodes has no columns either
        return frame
    return frame[frame["completed" if include_unfaithful else "usable"].astype(bool)]


def summary(frame, by=("persona", "setting"), *, include_unfaithful: bool = False) -> list[dict]:
    """Per group: episodes, failed, ungraded, excluded by fidelity, the rates of contact (number or email), of a
    social handle and of a concrete next meeting, and the mean score per condition (over `usable` episodes)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        ok = usable(group, include_unfaithful=include_unfaithful)
        rows.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,))),
            "episodes": len(group), "failed": int((group["status"] == "failed").sum()),
            "ungraded": int((group["status"] == "ungraded").sum()),
            "unfaithful": int((group["completed"] & (group["fidelity_ok"] == False)).sum()),  # noqa: E712
            "n": len(ok), **{f"{m}_rate": _share(ok[m]) for m in ("contact", "social_handle", "next_meeting")},
            **{c: (float(ok[c].dropna().mean()) if ok[c].notna().any() else None) for c in CONDITIONS},
        })  # fmt: skip
    return rows


def _share(values) -> float | None:
    """The share of True among the known values: `_share(pd.Series([True, None, False]))` -> 0.5."""
    known = values.dropna()
    return float(known.astype(bool).mean()) if len(known) else None


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may read as the start of a formula


def spreadsheet_safe(value):
    """A text cell a spreadsheet shows as text, never evaluates: `spreadsheet_safe('=1+2')` -> "'=1+2"."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def export(run_id: str, db: Path | str, fmt: str, output: Path) -> int:
    """Write a run as jsonl (full records), csv or parquet (flat rows); returns the number of episodes."""
    if fmt == "jsonl":
        with Store(Path(db)) as store:
            return store.export_jsonl(run_id, output)
    if fmt not in ("csv", "parquet"):
        raise UserError(f"--format {fmt!r}: choose from jsonl, csv, parquet")
    frame = load_run(run_id, db)
    with replacing(output) as tmp:
        if fmt == "csv":  # text columns neutralised (OWASP's CSV injection advice); parquet keeps values as they are
            text = frame.select_dtypes(include="object").columns
            frame.assign(**{c: frame[c].map(spreadsheet_safe) for c in text}).to_csv(tmp, index=False)
        else:
            try:
                frame.to_parquet(tmp, index=False)
            except ImportError:
                raise UserError("parquet export needs pyarrow: pip install 'nextstep[parquet]'") from None
    return len(frame)
