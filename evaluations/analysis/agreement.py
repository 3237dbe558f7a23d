"""Agreement: between several judges, and between the judge and a labelled gold set."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from evaluations.judge.gold import GoldItem, SecondPass
from evaluations.judge.rubric import CONDITIONS, FLAGS
from evaluations.judge.rules import episode_scores, main_transition
from simulator.core.records import Verdict

from .stats import agreement, krippendorff_alpha, paired_statistic_ci, pearson_r, precision_recall, weighted_kappa


def graded(verdicts: list[Verdict]) -> list[Verdict]:
    """The verdicts a judge answered: an ungraded one (its endpoint failed) holds no grade."""
    return [v for v in verdicts if v.graded]


def panel_scores(verdicts: list[Verdict]) -> dict[str, int | None]:
    """Each condition's median over the judges that scored it (halves round up); None if none did.

    `panel_scores([v1, v2, v3])` -> {'timing': 4, 'congruence': None, ...}
    """
    per_judge = [episode_scores(v) for v in graded(verdicts)]
    panel = {}
    for c in CONDITIONS:
        scores = [s[c] for s in per_judge if s.get(c) is not None]
        panel[c] = math.floor(float(np.median(scores)) + 0.5) if scores else None
    return panel


def panel_applicable(verdicts: list[Verdict]) -> dict[str, bool | None]:
    """Per condition, whether the panel found it applicable at the main transition: True if a judge scored it
    (so the panel has a score), False if judges only said 'not applicable', None if no judge answered (unscored)."""
    mains = [main_transition(v) for v in graded(verdicts)]
    statuses = [{c: g.status for c, g in main.conditions.items()} if main else {} for main in mains]
    said = {c: {s.get(c) for s in statuses} for c in CONDITIONS}
    return {c: True if "scored" in said[c] else False if "not_applicable" in said[c] else None for c in CONDITIONS}


def panel_flags(verdicts: list[Verdict]) -> dict[str, bool | None]:
    """Per flag, whether a majority of the judges that checked the flags raised it with accepted evidence; every flag
    None when no judge's flags part was scored (an unscored part is missing, not 'nothing raised').

    `panel_flags([raised_rude, flags_unscored])['rude']` -> True: 1 of the 1 judge that checked.
    """
    checked = [v for v in graded(verdicts) if v.flags and v.flags.status == "scored"]
    if not checked:
        return {f: None for f in FLAGS}
    counts = Counter(f.flag for v in checked for f in v.flags.raised)
    return {f: counts[f] > len(checked) / 2 for f in FLAGS}


def _read_outcomes(verdicts: list[Verdict]) -> list:
    """The judged outcomes of the judges that read one (scored)."""
    return [v.outcome for v in graded(verdicts) if v.outcome and v.outcome.status == "scored"]


def panel_exchanged(verdicts: list[Verdict]) -> str | None:
    """The judges' most common reading of what was exchanged (None if no judge answered)."""
    said = [o.exchanged for o in _read_outcomes(verdicts)]
    return Counter(said).most_common(1)[0][0] if said else None


def panel_next_meeting(verdicts: list[Verdict]) -> bool | None:
    """Whether most judges that read the outcome found a concrete next meeting (None if no judge answered)."""
    said = [o.next_meeting for o in _read_outcomes(verdicts) if o.next_meeting is not None]
    return sum(said) > len(said) / 2 if said else None


def _nan_to_none(x: float) -> float | None:
    """NaN (undefined) as None; the value itself unrounded: whoever shows it rounds it once."""
    return None if x is None or math.isnan(x) else float(x)


def judge_alpha(verdicts_per_episode: list[list[Verdict]]) -> dict[str, float | None]:
    """Krippendorff's alpha (ordinal) per condition between judges; units are episodes."""
    return scores_alpha([[episode_scores(v) for v in verdicts] for verdicts in verdicts_per_episode])


def scores_alpha(scores_per_episode: list[list[dict]]) -> dict[str, float | None]:
    """`judge_alpha` from each episode's judges' scores ({condition: score}, in the panel's order), not their verdicts."""
    k = max((len(s) for s in scores_per_episode), default=0)
    if k < 2:
        return {c: None for c in CONDITIONS}
    result = {}
    for c in CONDITIONS:
        data = np.full((k, len(scores_per_episode)), np.nan)
        for unit, judges in enumerate(scores_per_episode):
            for judge, scores in enumerate(judges):
                score = scores.get(c)
                data[judge, unit] = np.nan if score is None else score
        result[c] = _nan_to_none(krippendorff_alpha(data, level="ordinal"))
    return result


def _alpha2(a, b) -> float:
    return krippendorff_alpha(np.vstack([a, b]), level="ordinal")


def applicability(gold: list[int | None], judged: list[bool | None]) -> dict:
    """Does the judge find a condition applicable where gold does (a gold null is 'not applicable')?

    Over the items the judge answered (scored or said not applicable); `unscored` counts the rest.
    `applicability([5, None, 3], [True, True, None])` -> n 2, agreement 0.5, gold_na_judge_scored 1, unscored 1.
    """
    answered = [(g is not None, j) for g, j in zip(gold, judged) if j is not None]
    count = Counter(answered)
    agree = count[(True, True)] + count[(False, False)]
    return {"n": len(answered), "agreement": _nan_to_none(agree / len(answered)) if answered else None,
            "both_scored": count[(True, True)], "both_na": count[(False, False)],
            "gold_na_judge_scored": count[(False, True)], "gold_scored_judge_na": count[(True, False)],
            "unscored": len(gold) - len(answered)}  # fmt: skip


def calibration(items: list[GoldItem], verdicts_per_item: list[list[Verdict]], *, seed: int = 0) -> dict:
    """How far the judge panel agrees with the gold labels, per condition, per flag, and on outcomes.

    Per condition, `applicability` compares where gold and judge find the condition applicable at all;
    the score agreement (n, exact, within 1, kappa, alpha) is over the items both scored.
    """
    panels = [panel_scores(v) for v in verdicts_per_item]
    applicable = [panel_applicable(v) for v in verdicts_per_item]
    conditions = {}
    for c in CONDITIONS:
        gold = [getattr(item.labels, c) for item in items]
        pred = [p[c] for p in panels]
        g = np.array([np.nan if x is None else x for x in gold], dtype=float)
        p = np.array([np.nan if x is None else x for x in pred], dtype=float)
        agree = agreement(g, p)
        kappa_ci = paired_statistic_ci(g, p, weighted_kappa, seed=seed)
        alpha_ci = paired_statistic_ci(g, p, _alpha2, seed=seed)
        conditions[c] = {
            "n": agree["n"], "gold_labelled": sum(x is not None for x in gold),
            "applicability": applicability(gold, [a[c] for a in applicable]),
            "exact": _nan_to_none(agree["exact"]), "within_1": _nan_to_none(agree["within_1"]),
            "kappa": _nan_to_none(weighted_kappa(g, p)), "kappa_ci": [_nan_to_none(x) for x in kappa_ci],
            "alpha": _nan_to_none(_alpha2(g, p)), "alpha_ci": [_nan_to_none(x) for x in alpha_ci],
        }  # fmt: skip
    raised = [panel_flags(v) for v in verdicts_per_item]
    flags = {}
    for f in FLAGS:  # an item whose flags no judge checked is left out (precision_recall drops None)
        pr = precision_recall([f in item.flags for item in items], [r[f] for r in raised])
        flags[f] = {k: _nan_to_none(v) if isinstance(v, float) else v for k, v in pr.items()}
    exchanged = [panel_exchanged(v) for v in verdicts_per_item]
    answered = [(item.exchanged, e) for item, e in zip(items, exchanged) if e is not None]
    return {
        "items": len(items),
        "judges": max((len(v) for v in verdicts_per_item), default=0),
        "conditions": conditions,
        "flags": flags,
        "outcome": {"n": len(answered), "unscored": len(items) - len(answered),
                    "accuracy": _nan_to_none(sum(a == b for a, b in answered) / len(answered)) if answered else None},
        "judge_alpha": judge_alpha(verdicts_per_item),
    }


def _labels(item, c: str) -> float:
    x = getattr(item.labels, c)
    return np.nan if x is None else float(x)


def condition_correlations(items: list[GoldItem]) -> list[dict]:
    """Pearson r between every two conditions over the items labelled on both, with that n: do the conditions
    measure different things, or one overall impression?"""
    rows = []
    for i, a in enumerate(CONDITIONS):
        for b in CONDITIONS[i + 1:]:
            r, n = pearson_r([_labels(x, a) for x in items], [_labels(x, b) for x in items])
            rows.append({"a": a, "b": b, "n": n, "r": _nan_to_none(r)})
    return rows


def labelling_agreement(first: list[GoldItem], second: list[SecondPass] | list[GoldItem]) -> dict:
    """Agreement between two labelling passes of the same items: per condition whether both found it applicable,
    then on the items both scored exact, within-one and linearly weighted kappa; per flag Cohen's kappa; outcome."""
    conditions = {}
    for c in CONDITIONS:
        a, b = np.array([_labels(x, c) for x in first]), np.array([_labels(x, c) for x in second])
        agree = agreement(a, b)
        conditions[c] = {"items": len(first), "applicable_agree": _nan_to_none(float(np.mean(np.isnan(a) == np.isnan(b)))),
                         "n": agree["n"], "exact": _nan_to_none(agree["exact"]), "within_1": _nan_to_none(agree["within_1"]),
                         "kappa": _nan_to_none(weighted_kappa(a, b))}  # fmt: skip
    flags = {}
    for f in FLAGS:
        a, b = [float(f in x.flags) for x in first], [float(f in x.flags) for x in second]
        flags[f] = {"first": int(sum(a)), "second": int(sum(b)), "both": int(sum(x and y for x, y in zip(a, b))),
                    "kappa": _nan_to_none(weighted_kappa(a, b, categories=(0, 1)))}  # fmt: skip
    same = [x.exchanged == y.exchanged for x, y in zip(first, second)]
    return {"items": len(first), "conditions": conditions, "flags": flags,
            "exchanged": {"n": len(same), "agree": _nan_to_none(sum(same) / len(same)) if same else None}}


def _labeller(items: list[GoldItem]) -> str | None:
    """Who labelled a file: its one `labeller`, several joined by ', ', or None where the lines do not say."""
    names = sorted({x.labeller for x in items if x.labeller})
    return ", ".join(names) or None


def labellers_agreement(first: list[GoldItem], second: list[GoldItem]) -> dict:
    """Two labellers' gold files of the same sample (`nextstep label`): `labelling_agreement` over the episodes both
    labelled, with who they are and the ids only one of them labelled."""
    theirs = {x.id: x for x in second}
    both = [x for x in first if x.id in theirs]
    mine = {x.id for x in first}
    return {"first": _labeller(first), "second": _labeller(second),
            "only_first": [x.id for x in first if x.id not in theirs], "only_second": [x.id for x in second if x.id not in mine],
            **labelling_agreement(both, [theirs[x.id] for x in both])}  # fmt: skip
