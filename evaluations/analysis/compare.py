"""Two questions with statistics: how do the personas react, and what did a change between two runs do.

Pure functions over episode frames (see `frame.load_run`) returning plain JSON-ready dicts;
`load_pair` is the one that reads the store.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from evaluations.judge.rubric import CONDITIONS, FLAGS
from simulator.core.records import Episode, RunSpec, Verdict

from .frame import MEASURES, scan_run, usable
from .power import detectable
from .stats import bootstrap_ci, holm, kendall_tau, kendall_tau_within, mcnemar, paired_bootstrap_ci, rates_test, scores_test, wilcoxon_paired, wilson_ci
from .variance import contact_at_k, variance_report

SMALL = 5  # groups with fewer usable episodes are marked small: shown, but read with care
PAIR_KEY = ["cell", "rep", "seed"]
SHORT = {"mean_interest": "interest", "mean_comfort": "comfort", "agenda_clarity": "agenda", "congruence": "congr",
         "genuine_interest": "genuine", "timing": "timing", "natural_bridge": "bridge", "setting_fit": "fit"}  # fmt: skip


def clean(value):
    """JSON-ready: NaN -> None, numpy -> Python, tuples -> lists: `clean({'p': float('nan')})` -> {'p': None}."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):  # an infinite odds ratio is not JSON either
        return None
    return value


def fmt(x, digits: int = 2) -> str:
    """A number for a table: `fmt(0.5)` -> '0.50'; `fmt(None)` -> 'n/a'."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_ci(stat: dict, *, percent: bool = False) -> str:
    """A rate or mean with its CI: `fmt_ci({'rate': 0.5, 'ci': [0.1, 0.9]}, percent=True)` -> '50% [10, 90]'."""
    x, (lo, hi) = stat.get("rate", stat.get("mean")), stat["ci"]
    if percent:
        return "n/a" if x is None else f"{x:.0%}" + ("" if lo is None else f" [{lo * 100:.0f}, {hi * 100:.0f}]")
    return fmt(x) + ("" if lo is None else f" [{lo:.2f}, {hi:.2f}]")


def fmt_p(p) -> str:
    """A p-value: `fmt_p(0.0001)` -> '<0.001'; `fmt_p(0.25)` -> '0.250'."""
    return "n/a" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def which_test(result: dict) -> str:
    """The test, naming groups it left out for want of values: 'mann-whitney u (without friendly: no values)'."""
    left_out = result.get("left_out")
    return result["test"] + (f" (without {', '.join(map(str, left_out))}: no values)" if left_out else "")


def _bools(values) -> list[bool]:
    """Present booleans only: `_bools([True, None, float('nan')])` -> [True]."""
    return [bool(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _floats(values) -> np.ndarray:
    """Floats with NaN for missing: `_floats([1, None])` -> array([1., nan])."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)


def _numbers(values) -> np.ndarray:
    """Present numbers only: `_numbers([1, None])` -> array([1.])."""
    x = _floats(values)
    return x[~np.isnan(x)]


def rate(values) -> dict:
    """Share of True with its Wilson 95% CI: `rate([True, False])` -> {'k': 1, 'n': 2, 'rate': 0.5, 'ci': [0.09, 0.91]}."""
    x = _bools(values)
    k, n = sum(x), len(x)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci": list(wilson_ci(k, n))}


def mean_ci(values) -> dict:
    """Mean with a bootstrap 95% CI: `mean_ci([1, 3])` -> {'n': 2, 'mean': 2.0, 'ci': [1.0, 3.0]}."""
    x = _numbers(values)
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else None, "ci": list(bootstrap_ci(x))}


def contact_stats(ok: pd.DataFrame) -> dict:
    """What a table of contact shows for one group of usable episodes: n, contact, mean private interest and comfort."""
    return {"n": len(ok), "small": len(ok) < SMALL, "contact": rate(ok["contact"]),
            **{m: mean_ci(ok[m]) for m in ("mean_interest", "mean_comfort")}}  # fmt: skip


def group_stats(ok: pd.DataFrame) -> dict:
    """What one group of usable episodes did: contact, private state, condition scores, flags."""
    shown = contact_stats(ok)
    return {
        **{k: shown[k] for k in ("n", "small", "contact")}, "social_handle": rate(ok["social_handle"]),
        "next_meeting": rate(ok["next_meeting"]),
        **{m: shown[m] if m in shown else mean_ci(ok[m]) for m in MEASURES},
        "flags": {f: rate(ok[f"flag_{f}"]) for f in FLAGS},
    }  # fmt: skip


def _by(frame: pd.DataFrame, ok: pd.DataFrame, by: list[str], stats=group_stats) -> list[dict]:
    """Stats per group; groups come from every episode, so a group whose episodes all failed still shows (n 0)."""
    keys = frame[by].drop_duplicates().sort_values(by).itertuples(index=False)
    return [dict(zip(by, key)) | stats(ok[(ok[by] == list(key)).all(axis=1)]) for key in keys]


def contact_cells(frame: pd.DataFrame, by: list[str], *, include_unfaithful: bool = False) -> list[dict]:
    """`contact_stats` per group of `by` (e.g. ['persona', 'setting']): the cells of `persona_reactions`' tables without
    the scores, flags and tests, cheap enough to recompute while a batch writes (the viewer's live tables)."""
    if frame.empty:
        return []
    return _by(frame, usable(frame, include_unfaithful=include_unfaithful), by, contact_stats)


def _test(groups: dict[str, pd.Series], kind: str) -> dict:
    """Omnibus test across the groups, then every pair, Holm-adjusted within this measure."""
    if kind == "rate":
        run = lambda gs: rates_test([sum(_bools(g)) for g in gs], [len(_bools(g)) for g in gs])  # noqa: E731
    else:
        run = lambda gs: scores_test([_numbers(g) for g in gs])  # noqa: E731
    def named(names: list[str]) -> dict:
        """The test over these groups; groups without a value are left out of it, so it names the ones compared."""
        result = run([groups[n] for n in names])
        compared = [names[i] for i in result.pop("groups")]
        return result | {"compared": compared, "left_out": [n for n in names if n not in compared]}

    pairs = [{"a": a, "b": b, **named([a, b])} for a, b in combinations(groups, 2)]
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs])):
        pair["p_holm"] = adjusted
    return {"omnibus": named(list(groups)), "pairwise": pairs}


def group_tests(ok: pd.DataFrame, by: str) -> dict:
    """Do the groups of `by` (persona, strategy) differ? Contact by chi-squared/Fisher, each measure by
    Kruskal-Wallis, then every pair, Holm-adjusted."""
    names = sorted(ok[by].unique()) if len(ok) else []
    tests = {"contact": _test({n: ok.loc[ok[by] == n, "contact"] for n in names}, "rate")}
    return tests | {m: _test({n: ok.loc[ok[by] == n, m] for n in names}, "scores") for m in MEASURES}


def persona_tests(ok: pd.DataFrame) -> dict:
    """Do the personas differ? (`group_tests` by persona)."""
    return group_tests(ok, "persona")


def excluded(frame: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """How many episodes aggregates leave out, and why."""
    if frame.empty:
        return {"failed": 0, "ungraded": 0, "unfaithful": 0, "abandoned": 0}
    unfaithful = frame["completed"] & (frame["fidelity_ok"] == False)  # noqa: E712  (None means not checked: kept)
    abandoned = (frame["status"] == "succeeded") & ~frame["completed"].astype(bool)
    return {"failed": int((frame["status"] == "failed").sum()), "ungraded": int((frame["status"] == "ungraded").sum()),
            "unfaithful": 0 if include_unfaithful else int(unfaithful.sum()), "abandoned": int(abandoned.sum())}


def persona_reactions(frame: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """Per persona, persona x setting and persona x strategy, with tests across personas (issue 5, point 1); per
    strategy, with tests across strategies (the variable a grid usually varies)."""
    base = {"episodes": len(frame), "include_unfaithful": include_unfaithful, "small_below": SMALL,
            "excluded": excluded(frame, include_unfaithful=include_unfaithful)}  # fmt: skip
    if frame.empty:
        return base | {"n": 0, "personas": [], "persona_setting": [], "persona_strategy": [], "tests": {}, "strategies": [],
                       "strategy_tests": {}}  # fmt: skip
    ok = usable(frame, include_unfaithful=include_unfaithful)
    return clean(base | {
        "n": len(ok), "personas": _by(frame, ok, ["persona"]), "persona_setting": _by(frame, ok, ["persona", "setting"]),
        "persona_strategy": _by(frame, ok, ["persona", "strategy"]), "tests": persona_tests(ok),
        "strategies": _by(frame, ok, ["strategy"]), "strategy_tests": group_tests(ok, "strategy"),
    })  # fmt: skip


def run_analysis(frame: pd.DataFrame, judges: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """`compare RUN`: persona reactions, where the variance comes from, and repeat reliability (contact@k)."""
    return clean(persona_reactions(frame, include_unfaithful=include_unfaithful) | {
        "variance": variance_report(frame, judges, include_unfaithful=include_unfaithful),
        "repeats": contact_at_k(frame, include_unfaithful=include_unfaithful)})  # fmt: skip


# --- two runs -------------------------------------------------------------------------------------


def _seed_rule(record: Episode, verdict: Verdict) -> str:
    """How a judge was seeded: from the episode (its seed + the judge's place, plus `grade --seed S` when re-graded) or,
    as older re-grades did, from a fixed seed: 'episode seed + judge', 'episode seed + 5 + judge', '7 + judge'."""
    base = verdict.seed - verdict.judge if verdict.seed is not None else None
    offset = base - record.seed if base is not None and record.seed is not None else None
    if offset is None or abs(offset) > 2**16:  # no episode seed in it: a fixed seed
        return f"{base} + judge"
    return "episode seed + judge" if offset == 0 else f"episode seed + {offset} + judge"


def judge_provenance(records: Iterable[Episode]) -> dict:
    """How a run's episodes were graded, read from their verdicts (a re-grade changes these, never the run's spec):
    'prompts.NAME' of the judges' prompts, 'prompts.rubric', 'judges.models' (the panel, judge by judge),
    'judges.count' and 'judges.seeds', each the one value every episode shares or, mixed within the run, a sorted tuple."""
    judging = Judging()
    for r in records:
        judging.add(r)
    return judging.result()


class Judging:
    """`judge_provenance` one record at a time (`add`), for a pass that holds no records (`frame.scan_run`)."""

    def __init__(self):
        self.seen: dict[str, set] = {}

    def add(self, r: Episode) -> None:
        if r.status == "failed":  # never graded
            return
        found = {"judges.count": [len(r.verdicts)], "judges.models": [", ".join(v.model for v in r.verdicts)],
                 "judges.seeds": [_seed_rule(r, v) for v in r.verdicts], "prompts.rubric": [v.rubric_hash for v in r.verdicts]}
        found |= {f"prompts.{n}": [h] for v in r.verdicts for n, h in v.prompts.items()}  # fmt: skip
        for key, values in found.items():
            self.seen.setdefault(key, set()).update(values)

    def result(self) -> dict:
        return {k: sorted(vs, key=str)[0] if len(vs) == 1 else tuple(sorted(vs, key=str)) for k, vs in self.seen.items() if vs}


def run_prompts(run: dict, judging: dict) -> dict:
    """{name: hash} of every prompt a run used: simulation prompts, the rubric and the judges' prompts, the judges' as
    their verdicts record them (`judging`: `judge_provenance`; a tuple where they are mixed within the run)."""
    spec = run["spec"]
    judged = {k.removeprefix("prompts."): v for k, v in judging.items() if k.startswith("prompts.")}
    return {**(spec.prompts or {}), "rubric": spec.rubric_hash, **judged}


def _flat(spec: RunSpec, run: dict) -> dict:
    """The run's make-up as 'section.field' -> value, so two runs can be compared field by field; how its episodes were
    graded comes from their verdicts when the run carries them (`judging`, see `load_pair`)."""
    judging = run.get("judging") or {}
    prompts = {**(spec.prompts or {}), "rubric": spec.rubric_hash}
    flat = {f"experiment.{k}": v for k, v in (spec.experiment or {}).items()}
    flat |= {f"models.{k}": v for k, v in (spec.models or {}).items()}
    flat |= {f"catalog.{k}": v for k, v in (spec.catalog or {}).items()}
    flat |= {f"prompts.{k}": v for k, v in prompts.items()} | judging
    return flat | {"backend": spec.backend, "reasks": spec.reasks, "version": run.get("version")}


def prompt_diff(name: str, a: str | None, b: str | None, hash_a: str, hash_b: str) -> str:
    """A unified diff of two prompt texts; says so when a text was not stored."""
    if a is None or b is None:
        return f"(text of {name} not stored for {'A' if a is None else 'B'}; hashes {hash_a} -> {hash_b})"
    lines = difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                 f"A/{name} ({hash_a})", f"B/{name} ({hash_b})")  # fmt: skip
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def differences(run_a: dict, run_b: dict, texts: dict[str, str]) -> list[dict]:
    """Every field that differs between two runs, or is mixed within one (all its values, and 'mixed': the sides);
    a prompt that differs with one value a side carries a unified diff of its texts."""
    a, b = _flat(run_a["spec"], run_a), _flat(run_b["spec"], run_b)
    rows = []
    for key in sorted(a.keys() | b.keys()):
        mixed = [side for side, flat in (("A", a), ("B", b)) if isinstance(flat.get(key), tuple)]
        if a.get(key) != b.get(key) or mixed:
            row = {"field": key, "a": a.get(key), "b": b.get(key)} | ({"mixed": mixed} if mixed else {})
            if key.startswith("prompts.") and a.get(key) and b.get(key) and not mixed:
                row["diff"] = prompt_diff(key[8:], texts.get(a[key]), texts.get(b[key]), a[key], b[key])
            rows.append(row)
    return rows


def _keys(frame: pd.DataFrame) -> set[tuple]:
    """(cell, rep, seed) of every episode: what pairs an episode with its twin in another run."""
    return set(map(tuple, frame[PAIR_KEY].to_numpy().tolist())) if len(frame) else set()


def _unpairable(ka: set[tuple], kb: set[tuple]) -> str:
    """Why two runs share no (cell, rep, seed)."""
    if not ka or not kb:
        return "cannot pair: a run has no episodes"
    if {k[:2] for k in ka} & {k[:2] for k in kb}:
        return "cannot pair: the runs share cells but not seeds (different experiment seed?)"
    cells_a, cells_b = sorted({k[0] for k in ka}), {k[0] for k in kb}
    return (f"cannot pair: the runs share no cells (different grids); A has {len(cells_a)} cells such as "
            f"{', '.join(cells_a[:3])}, B has {len(cells_b)}")


def pair(frame_a: pd.DataFrame, frame_b: pd.DataFrame, *, include_unfaithful: bool = False) -> tuple[pd.DataFrame, dict]:
    """Episodes matched by cell, rep and seed (columns suffixed _a, _b), and how the matching went."""
    ka, kb = _keys(frame_a), _keys(frame_b)
    info = {"paired": 0, "matched": len(ka & kb), "excluded": 0, "only_a": len(ka - kb), "only_b": len(kb - ka),
            "reason": None if ka & kb else _unpairable(ka, kb)}  # fmt: skip
    if info["reason"]:
        return pd.DataFrame(), info
    ua, ub = (usable(f, include_unfaithful=include_unfaithful) for f in (frame_a, frame_b))
    paired = ua.merge(ub, on=PAIR_KEY, suffixes=("_a", "_b"))
    info |= {"paired": len(paired), "excluded": info["matched"] - len(paired)}
    if paired.empty:
        info["reason"] = "cannot pair: every matched episode failed or was out of character in one of the runs"
    return paired, info


def _paired(a, b, kind: str) -> dict:
    """Means on each side, mean delta (B - A) with a paired bootstrap CI, and the paired test."""
    a, b = _floats(a), _floats(b)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    test = mcnemar(a, b) if kind == "rate" else wilcoxon_paired(a, b)
    return {"n": int(a.size), "a": float(a.mean()) if a.size else None, "b": float(b.mean()) if b.size else None,
            "delta": float((b - a).mean()) if a.size else None, "ci": list(paired_bootstrap_ci(a, b)), **test}


def cell_deltas(paired: pd.DataFrame) -> list[dict]:
    """Per cell: pairs, contact rate and mean interest on each side, and the mean delta of each condition."""
    def delta(g: pd.DataFrame, m: str) -> float | None:
        d = _numbers(_floats(g[f"{m}_b"]) - _floats(g[f"{m}_a"]))
        return float(d.mean()) if d.size else None

    rows = []
    for cell, g in paired.groupby("cell", sort=True):
        rows.append({"cell": cell, "n": len(g), "small": len(g) < SMALL,
                     "contact_a": rate(g["contact_a"])["rate"], "contact_b": rate(g["contact_b"])["rate"],
                     "interest_a": mean_ci(g["mean_interest_a"])["mean"], "interest_b": mean_ci(g["mean_interest_b"])["mean"],
                     **{c: delta(g, c) for c in CONDITIONS}})  # fmt: skip
    return rows


def compare_runs(run_a: dict, run_b: dict, frame_a: pd.DataFrame, frame_b: pd.DataFrame, texts: dict[str, str], *,
                 include_unfaithful: bool = False) -> dict:
    """What differs between two runs and what it did, on episodes paired by cell and seed (issue 5, point 2).

    run_a/run_b are `Store.run` dicts (optionally with `judging` from `judge_provenance`); texts maps hash -> text.
    """
    paired, info = pair(frame_a, frame_b, include_unfaithful=include_unfaithful)
    out = {"a": run_a["id"], "b": run_b["id"], "differences": differences(run_a, run_b, texts), "pairing": info,
           "include_unfaithful": include_unfaithful, "tests": {}, "cells": [],
           "ranking": strategy_ranking(frame_a, frame_b, include_unfaithful=include_unfaithful)}  # fmt: skip
    if paired.empty:
        return clean(out)
    return clean(out | {"tests": paired_tests(paired), "cells": cell_deltas(paired), "detectable": detectable(paired)})


def paired_tests(paired: pd.DataFrame) -> dict:
    """McNemar for contact, Wilcoxon with a paired bootstrap interval for each measure, Holm-adjusted as one family."""
    tests = {"contact": _paired(paired["contact_a"], paired["contact_b"], "rate")}
    tests |= {m: _paired(paired[f"{m}_a"], paired[f"{m}_b"], "scores") for m in MEASURES}
    # One family: a change is judged on all these measures at once.
    for t, adjusted in zip(tests.values(), holm([t["p"] for t in tests.values()])):
        t["p_holm"] = adjusted
    return tests


def compare_branches(run: dict, frame: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """A branch run: each treatment continuation paired with the control of the same prefix and rep (so seed);
    deltas are treatment - control, overall, per persona (the prefix's) and per prefix."""
    arms = [frame[frame["arm"] == arm].assign(cell=lambda f: f["prefix"]) if len(frame) else frame
            for arm in ("control", "treatment")]  # fmt: skip
    paired, info = pair(*arms, include_unfaithful=include_unfaithful)
    out = {"run": run["id"], "branch": run["spec"].branch, "pairing": info, "include_unfaithful": include_unfaithful,
           "tests": {}, "personas": [], "prefixes": []}  # fmt: skip
    if paired.empty:
        return clean(out)
    personas = [{"persona": p, "n": len(g), "small": len(g) < SMALL, "tests": paired_tests(g)}
                for p, g in paired.groupby("persona_a", sort=True)]  # fmt: skip
    return clean(out | {"tests": paired_tests(paired), "personas": personas, "prefixes": cell_deltas(paired)})


def load_branches(run_id: str, db: Path | str) -> tuple[dict, pd.DataFrame] | None:
    """(run, frame) for `compare_branches` if `run_id` is a branch run, else None."""
    from simulator.storage.store import Store

    with Store(Path(db)) as store:
        run = store.run(run_id)
        if run["spec"].branch is None:
            return None
    return run, scan_run(run_id, db).frame


# --- people and models ------------------------------------------------------------------------------

REACTIONS = ("contact", "mean_interest", "mean_comfort", "final_interest", "final_comfort")  # what the persona decides and feels


def played_persona(run: dict) -> bool:
    """Is this the run `nextstep play --as persona` stores a person's episodes in?"""
    return (run["spec"].play or {}).get("person") == "persona"


def people_vs_models(run_a: dict, run_b: dict, frame_a: pd.DataFrame, frame_b: pd.DataFrame, texts: dict | None = None, *,
                     include_unfaithful: bool = False) -> dict:
    """Personas played by people (`nextstep play --as persona`) beside the same personas simulated, per persona.

    The two sides are different conversations, so nothing is paired: contact by Fisher's exact test, each private
    rating by Mann-Whitney, Holm-adjusted over the measures of one persona. One of the runs must be the played run.
    """
    if played_persona(run_b):
        run_a, run_b, frame_a, frame_b = run_b, run_a, frame_b, frame_a
    people, models = (usable(f, include_unfaithful=include_unfaithful) if len(f) else f for f in (frame_a, frame_b))
    rows = []
    for persona in sorted(set(people.get("persona", [])) | set(models.get("persona", []))):
        sides = {"people": people[people["persona"] == persona], "models": models[models["persona"] == persona]}
        tests = {m: _test({side: g[m] for side, g in sides.items()}, "rate" if m == "contact" else "scores")["omnibus"]
                 for m in REACTIONS}  # fmt: skip
        for test, adjusted in zip(tests.values(), holm([t["p"] for t in tests.values()])):
            test["p_holm"] = adjusted
        rows.append({"persona": persona, **{side: {"n": len(g), "contact": rate(g["contact"]),
                                                   **{m: mean_ci(g[m]) for m in REACTIONS[1:]}} for side, g in sides.items()},
                     "tests": tests})  # fmt: skip
    return clean({"people": run_a["id"], "models": run_b["id"], "include_unfaithful": include_unfaithful,
                  "excluded": {"people": excluded(frame_a, include_unfaithful=include_unfaithful),
                               "models": excluded(frame_b, include_unfaithful=include_unfaithful)},
                  "personas": rows})  # fmt: skip


RANKED = ("contact", "mean_interest")  # what strategies are ranked by: the outcome, and the persona's private view


def strategy_ranking(frame_a: pd.DataFrame, frame_b: pd.DataFrame, *, include_unfaithful: bool = False) -> dict:
    """Does the order of the strategies survive from run A to run B (an ablation, say)? Per measure, each
    strategy's value and rank (1 = best) in both runs and Kendall's tau-b between the two orders.

    Needs at least two strategies in both runs; otherwise {'reason': ...}.
    """
    ua, ub = (usable(f, include_unfaithful=include_unfaithful) for f in (frame_a, frame_b))
    shared = sorted(set(ua.get("strategy", [])) & set(ub.get("strategy", [])))
    if len(shared) < 2:
        return {"reason": "ranking needs at least two strategies with usable episodes in both runs", "strategies": shared}
    out = {"strategies": shared}
    for m in RANKED:
        def values(ok: pd.DataFrame) -> list:
            return [rate(ok.loc[ok["strategy"] == s, m])["rate"] if m == "contact"
                    else mean_ci(ok.loc[ok["strategy"] == s, m])["mean"] for s in shared]

        a, b = values(ua), values(ub)
        rank = lambda xs: pd.Series(_floats(xs)).rank(ascending=False, method="min").tolist()  # noqa: E731
        out[m] = {"rows": [{"strategy": s, "a": x, "b": y, "rank_a": ra, "rank_b": rb}
                           for s, x, y, ra, rb in zip(shared, a, b, rank(a), rank(b))],
                  "n_a": len(ua), "n_b": len(ub), "tau": kendall_tau(a, b)}  # fmt: skip
    return out


def ranking_within(frame_a: pd.DataFrame, frame_b: pd.DataFrame, by: str = "persona", *, n_resamples: int = 2000,
                   seed: int = 0, include_unfaithful: bool = False) -> dict:
    """Does each `by` group's order of the strategies by contact survive from run A to run B? Per group,
    `strategy_ranking`'s contact rows; over all groups, Kendall's tau-b counted within groups (`kendall_tau_within`)
    with a 95% percentile interval from a paired bootstrap: in each cell the repetitions are drawn with replacement,
    the same draw on both sides (paired by seed, as `compare` pairs), so the interval says how far the two orders
    could move on another draw of the episodes. {'groups': {name: ranking}, 'tau', 'ci', 'undefined', 'pairs'}.
    """
    ua, ub = (usable(f, include_unfaithful=include_unfaithful) for f in (frame_a, frame_b))
    names = sorted(set(ua.get(by, [])) | set(ub.get(by, [])))
    groups = {g: strategy_ranking(ua[ua[by] == g], ub[ub[by] == g], include_unfaithful=True) for g in names}
    cells = [(g, row["strategy"]) for g, r in groups.items() if "reason" not in r for row in r["contact"]["rows"]]
    if not cells:
        return {"groups": groups, "tau": None, "ci": None, "undefined": None, "pairs": 0,
                "reason": f"no {by} has two strategies with usable episodes in both runs"}
    rng = np.random.default_rng(seed)
    draws_a, draws_b = [], []
    for g, strategy in cells:  # per cell: contact by rep on each side, NaN where a side's episode is not usable
        sides = [f[(f[by] == g) & (f["strategy"] == strategy)].set_index(["setting", "rep"])["contact"] for f in (ua, ub)]
        reps = sides[0].index.union(sides[1].index)
        values = [side.reindex(reps).astype(float).to_numpy() for side in sides]
        pick = rng.integers(0, len(reps), size=(n_resamples, len(reps)))
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw with no usable episode on a side: NaN, a tie
            draws_a.append(np.nanmean(values[0][pick], axis=1))
            draws_b.append(np.nanmean(values[1][pick], axis=1))
    names_of = [g for g, _ in cells]
    point_a = [row["a"] for r in groups.values() if "reason" not in r for row in r["contact"]["rows"]]
    point_b = [row["b"] for r in groups.values() if "reason" not in r for row in r["contact"]["rows"]]
    tau = kendall_tau_within(_floats(point_a), _floats(point_b), names_of)
    boot = kendall_tau_within(np.array(draws_a).T, np.array(draws_b).T, names_of)
    defined = boot[~np.isnan(boot)]
    ci = [float(np.percentile(defined, 2.5)), float(np.percentile(defined, 97.5))] if defined.size else None
    pairs = sum(math.comb(sum(n == g for n in names_of), 2) for g in set(names_of))
    return {"groups": groups, "tau": None if math.isnan(tau) else tau, "ci": ci, "pairs": pairs,
            "undefined": float(np.isnan(boot).mean())}


def load_pair(run_a: str, run_b: str, db: Path | str) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame, dict]:
    """Read two runs for `compare_runs`: (run_a, run_b, frame_a, frame_b, texts)."""
    from simulator.storage.store import Store

    runs, frames = [], []
    for run_id in (run_a, run_b):
        judging = Judging()
        scan = scan_run(run_id, db, each=judging.add)  # one record at a time, none held
        with Store(Path(db)) as store:
            runs.append(store.run(run_id) | {"judging": judging.result()})
        frames.append(scan.frame)
    with Store(Path(db)) as store:
        texts = store.prompt_texts()
    return runs[0], runs[1], frames[0], frames[1], texts
