"""What each page shows, read from the store (read-only) and computed by `evaluations.analysis`: plain dicts for the templates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from evaluations.analysis.compare import (compare_branches, compare_runs, contact_cells, excluded, fmt, fmt_ci, fmt_p,
                                          judge_provenance)
from evaluations.analysis.frame import episode_row
from simulator.core.errors import UserError
from simulator.core.records import Episode
from simulator.storage.store import Store, resume_command

RUNNING_S = 30  # a run that saved an episode this recently is shown as running
FILTERS = ("persona", "setting", "strategy", "status", "exchanged")


def _age_s(saved_at: str | None, now: dt.datetime) -> float | None:
    return None if saved_at is None else (now - dt.datetime.fromisoformat(saved_at)).total_seconds()


def run_status(done: int, planned: int | None, age_s: float | None) -> str:
    """'complete' (every planned episode done), 'running' (an episode saved in the last RUNNING_S seconds),
    'incomplete', or 'stored' (nothing planned to compare with): `run_status(3, 6, 400.0)` -> 'incomplete'."""
    if planned is not None and done >= planned:
        return "complete"
    if age_s is not None and age_s < RUNNING_S:
        return "running"
    return "stored" if planned is None else "incomplete"


def _models(spec) -> str:
    """'practitioner m1 · persona m2' from a spec's models (a branch run's are per arm, evaluators a list)."""
    def name(x) -> str:
        return ", ".join(map(str, x)) if isinstance(x, list) else str(x)

    parts = []
    for key, value in (spec.models or {}).items():
        parts += [f"{key} {role} {name(m)}" for role, m in value.items()] if isinstance(value, dict) else [f"{key} {name(value)}"]
    return " · ".join(parts)


def runs_page(db: Path) -> list[dict]:
    """Every run, newest first: id, created, done/planned, failed, ungraded, status, models."""
    now = dt.datetime.now(dt.timezone.utc)
    with Store.reader(db) as store:
        out = []
        for row in store.runs():
            run = store.run(row["id"])
            planned = getattr(run["spec"], "planned", None)  # kept with runs made since issue 23
            out.append({"id": row["id"], "created": row["created_at"], "done": row["succeeded"], "planned": planned,
                        "episodes": row["episodes"], "failed": row["failed"], "ungraded": row["ungraded"],
                        "status": run_status(row["succeeded"], planned, _age_s(store.last_saved(row["id"]), now)),
                        "models": _models(run["spec"]), "tokens": row["tokens"],
                        "cost": row.get("cost_usd")})  # fmt: skip
    return out


def _frame(records: list[Episode]) -> pd.DataFrame:
    return pd.DataFrame([episode_row(r) for r in records])


def episode_list(frame: pd.DataFrame, filters: dict[str, str]) -> list[dict]:
    """The frame's rows kept by the filters (column -> value; '' keeps all), in the store's order."""
    rows = frame.to_dict("records") if len(frame) else []
    wanted = {k: v for k, v in filters.items() if k in FILTERS and v}
    return [r for r in rows if all(str(r.get(k)) == v for k, v in wanted.items())]


def live_run(db: Path, run_id: str, filters: dict[str, str]) -> dict:
    """The part of a run page that changes while a batch writes: counts, status, the contact tables and the filtered
    episode list."""
    now = dt.datetime.now(dt.timezone.utc)
    with Store.reader(db) as store:
        run = store.run(run_id)
        records = store.episodes(run_id)
        age = _age_s(store.last_saved(run_id), now)
    frame = _frame(records)
    counts = run["counts"]
    planned = getattr(run["spec"], "planned", None)
    done = counts.get("succeeded", 0)
    status = run_status(done, planned, age)
    return {
        "run": run, "frame": frame, "records": records, "done": done, "planned": planned, "status": status,
        "episodes": len(records), "failed": counts.get("failed", 0), "ungraded": counts.get("ungraded", 0),
        "excluded": excluded(frame), "out_of_character": sum(r.in_character is False for r in records),
        "resume": None if status in ("complete", "running") else resume_command(run_id, run["spec"], db),
        "rows": episode_list(frame, filters), "filters": filters, "tables": contact_tables(frame),
        "choices": {k: sorted({str(v) for v in frame[k].dropna()}) if len(frame) else [] for k in FILTERS},
    }  # fmt: skip


def run_stamp(db: Path, run_id: str) -> str:
    """Changes whenever a run's live part may: a write to the store file (to its write-ahead log while a batch writes),
    the run's episode count or newest save, and its status (running turns complete with time alone). Cheap: no record
    is read."""
    with Store.reader(db) as store:  # opened first: a reader may make the log file
        written = [(f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in (Path(db), Path(f"{db}-wal"))]
        run, last = store.run(run_id), store.last_saved(run_id)
    counts, planned = run["counts"], getattr(run["spec"], "planned", None)
    status = run_status(counts.get("succeeded", 0), planned, _age_s(last, dt.datetime.now(dt.timezone.utc)))
    return repr((written, sorted(counts.items()), last, status))


def _cell(s: dict) -> dict:
    """One group of persona_reactions as table text: contact rate with its interval, mean interest and comfort."""
    return {"n": s["n"], "small": s["small"], "contact": f"{fmt_ci(s['contact'], percent=True)}",
            "interest": fmt_ci(s["mean_interest"]), "comfort": fmt_ci(s["mean_comfort"])}  # fmt: skip


def contact_tables(frame: pd.DataFrame) -> dict:
    """persona x setting and strategy x persona: {'rows', 'cols', 'cells': {(row, col): cell}} each."""
    if frame.empty:
        return {}
    tables = {}
    for key, row_by, col_by in (("persona_setting", "persona", "setting"), ("persona_strategy", "strategy", "persona")):
        cells = {(g[row_by], g[col_by]): _cell(g) for g in contact_cells(frame, [row_by, col_by])}
        tables[key] = {"row_by": row_by, "col_by": col_by, "rows": sorted({k[0] for k in cells}),
                       "cols": sorted({k[1] for k in cells}), "cells": cells}  # fmt: skip
    return tables


def _state_svg(turns: list, width: int = 120) -> dict[int, dict]:
    """Per persona turn, the bar lengths of interest and comfort (0-10 over `width` px)."""
    return {t.index: {"interest": t.interest, "comfort": t.comfort,
                      "wi": (t.interest or 0) * width / 10, "wc": (t.comfort or 0) * width / 10}
            for t in turns if t.speaker == "persona" and (t.interest is not None or t.comfort is not None)}  # fmt: skip


def curve_points(turns: list, key: str, width: int = 600, height: int = 120) -> str:
    """An SVG polyline's points for the persona's `key` over turn index (0-10 up the y axis)."""
    pts = [(t.index, getattr(t, key)) for t in turns if t.speaker == "persona" and getattr(t, key) is not None]
    last = max((t.index for t in turns), default=1) or 1
    return " ".join(f"{20 + i * (width - 40) / last:.1f},{height - 10 - v * (height - 20) / 10:.1f}" for i, v in pts)


def _segments(text: str, cites: list[tuple[str, str]]) -> list[dict]:
    """The text cut at each cited quote: [{'text', 'cites': 'g1 g3'}] (cites '' for plain text). Overlaps keep the first."""
    spans: dict[tuple[int, int], list[str]] = {}
    for cite_id, quote in cites:
        start = text.lower().find(quote.lower()) if quote else -1
        if start >= 0:
            spans.setdefault((start, start + len(quote)), []).append(cite_id)
    out, pos = [], 0
    for (start, end), ids in sorted(spans.items()):
        if start < pos:
            continue
        out += [{"text": text[pos:start], "cites": ""}, {"text": text[start:end], "cites": " ".join(ids)}]
        pos = end
    return [s for s in out + [{"text": text[pos:], "cites": ""}] if s["text"]]


def episode_page(db: Path, episode_id: str) -> dict:
    """An episode with its turns cut at the judges' cited quotes, the grades, flags, outcome and provenance."""
    with Store.reader(db) as store:
        e = store.episode(episode_id)
        texts = store.prompt_texts()
    grades, flags, cites = [], [], {}
    for v in e.verdicts:
        for n, tr in enumerate(v.transitions):
            for c, g in tr.conditions.items():
                gid = f"g{len(grades)}"
                grades.append({"id": gid, "judge": v.judge, "transition": n, "condition": c, "status": g.status,
                               "score": g.score, "turn": g.turn, "quote": g.quote, "reason": g.reason})  # fmt: skip
                if g.quote and g.turn is not None:
                    cites.setdefault(g.turn, []).append((gid, g.quote))
        for f in v.flags.raised if v.flags else []:
            fid = f"f{len(flags)}"
            flags.append({"id": fid, "judge": v.judge, "flag": f.flag, "turn": f.turn, "quote": f.quote, "reason": f.reason})
            if f.quote and f.turn is not None:
                cites.setdefault(f.turn, []).append((fid, f.quote))
    conditions = sorted({g["condition"] for g in grades})
    side = {c: {v.judge: next((g for g in grades if g["judge"] == v.judge and g["condition"] == c), None) for v in e.verdicts}
            for c in conditions}  # fmt: skip
    asks = {tr.ask_turn for v in e.verdicts for tr in v.transitions if tr.ask_turn is not None}
    if e.outcome and e.outcome.first_ask_turn is not None:
        asks.add(e.outcome.first_ask_turn)
    prov = e.provenance
    prompts = [{"name": name, "hash": h, "text": (prov.prompt_texts.get(h) or texts.get(h))} for name, h in sorted(prov.prompts.items())] if prov else []
    return {
        "e": e, "grades": grades, "flags": flags, "side": side, "judges": [v.judge for v in e.verdicts], "asks": asks,
        "turns": [{"t": t, "segments": _segments(t.text, cites.get(t.index, []))} for t in e.turns],
        "state": _state_svg(e.turns), "interest_pts": curve_points(e.turns, "interest"),
        "comfort_pts": curve_points(e.turns, "comfort"), "prompts": prompts, "fmt": fmt,
    }  # fmt: skip


REACH = {"contact": 1, "mean_interest": 10, "mean_comfort": 10}  # the widest difference a measure can show; conditions 1-5: 4


def forest(delta: float | None, ci: list, reach: float, width: int = 240) -> dict | None:
    """Where a paired difference and its interval sit on a row of `width` px from -reach to +reach, zero in the middle."""
    if delta is None or None in ci:
        return None
    x = lambda v: width / 2 + v / reach * (width / 2 - 6)  # noqa: E731
    return {"lo": x(ci[0]), "hi": x(ci[1]), "at": x(delta), "mid": width / 2, "reach": reach}


def _test_rows(tests: dict) -> list[dict]:
    return [{"measure": m, "n": t["n"], "a": fmt(t["a"]), "b": fmt(t["b"]), "delta": fmt(t["delta"]),
             "ci": f"[{fmt(t['ci'][0])}, {fmt(t['ci'][1])}]", "p": fmt_p(t["p"]), "p_holm": fmt_p(t.get("p_holm")),
             "test": "McNemar (exact)" if m == "contact" else "Wilcoxon signed-rank", "plot": forest(t["delta"], t["ci"], REACH.get(m, 4))}
            for m, t in tests.items()]  # fmt: skip


def compare_page(db: Path, a: str, b: str | None) -> dict:
    """Two runs paired by cell and seed (`compare_runs`), or a branch run's arms (`compare_branches`): deltas B - A."""
    with Store.reader(db) as store:
        run_a, records_a = store.run(a), store.episodes(a)
        if not b:
            if run_a["spec"].branch is None:
                raise UserError(f"run {a!r} is not a branch run: choose a second run to compare it with")
            result = compare_branches(run_a, _frame(records_a))
            return {"kind": "branch", "a": a, "b": None, "result": result, "rows": _test_rows(result["tests"]),
                    "personas": [{"persona": p["persona"], "n": p["n"], "rows": _test_rows(p["tests"])} for p in result["personas"]]}  # fmt: skip
        run_b, records_b = store.run(b), store.episodes(b)
        texts = store.prompt_texts()
    result = compare_runs(run_a | {"judging": judge_provenance(records_a)}, run_b | {"judging": judge_provenance(records_b)},
                          _frame(records_a), _frame(records_b), texts)  # fmt: skip
    return {"kind": "runs", "a": a, "b": b, "result": result, "rows": _test_rows(result["tests"]), "personas": []}


def blind_episode(db: Path, episode_id: str) -> Episode:
    """An episode for labelling: its turns and factors only (the page shows no verdict, outcome or private state)."""
    with Store.reader(db) as store:
        return store.episode(episode_id)
