"""Rows of text for variance, repeats, power and the persona audit: one layout shared by the terminal and the report.

Each function returns (head, rows) of plain strings; '*' marks figures resting on few cells or episodes.
"""

from __future__ import annotations

from simulator.models.prices import money

from .compare import SHORT, fmt, fmt_ci

COMPONENTS = ("cell", "rep", "judge")


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _star(n, small: bool) -> str:
    return f"{n}*" if small else str(n)


def variance_rows(v: dict) -> tuple[list[str], list[list[str]]]:
    """Per measure: cells, episodes, values, each component's share of the variance, the total, what was clipped."""
    head = ["measure", "cells", "eps", "values", "cell", "rep", "judge", "total", "set to 0"]
    rows = []
    for m, r in v["measures"].items():
        inside = r["components"]["judge"] is None and r["n"]["values"]
        shares = [_pct(r["share"][c]) if r["components"][c] is not None else "in rep." if c == "judge" and inside else "-"
                  for c in COMPONENTS]  # fmt: skip
        rows.append([SHORT.get(m, m), _star(r["n"]["cells"], r["small"]), str(r["n"]["episodes"]), str(r["n"]["values"]),
                     *shares, fmt(r["total"], 3), ", ".join(r["clipped"])])  # fmt: skip
    return head, rows


def variance_note(v: dict) -> str:
    """What a variance table's columns mean, said once under it rather than in every row."""
    note = ("eps: episodes; values: scores (one per judge); cell, rep, judge: each one's share of the measure's total "
            "variance (between cells, between repetitions of a cell, each with its own seed, and between judges); "
            "set to 0: components estimated below 0")
    if any(r["components"]["judge"] is None and r["n"]["values"] for r in v["measures"].values()):
        note += "; judge 'in rep.': one value per episode, so judge noise is inside repetition"
    return note


def agreement_rows(a: dict) -> tuple[list[str], list[list[str]]]:
    """Per condition: episodes scored by 2+ judges, Krippendorff's alpha, mean inter-judge r, effective judges."""
    head = ["condition", "episodes", "alpha (ordinal)", "mean r", f"effective judges (of {a['judges']})"]
    return head, [[c, str(r["n"]), fmt(r["alpha"]), fmt(r["r_mean"]), fmt(r["effective_judges"], 1)]
                  for c, r in a["conditions"].items()]


def repeats_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    """contact@k: for all cells and per group, k, cells, pass^k (all k made contact) and pass@k (at least one)."""
    head = ["cells of", "k", "cells", "all k made contact (pass^k)", "at least one did (pass@k)"]
    groups = {"all": rep["overall"], **rep.get("groups", {})}
    return head, [[g, str(r["k"]), _star(r["cells"], r["small"]), _pct(r["pass_hat_k"]), _pct(r["pass_at_k"])]
                  for g, rs in groups.items() for r in rs]


def plan_rows(p: dict) -> tuple[list[str], list[list[str]]]:
    """Per measure: what the run shows, the change to detect, pairs and repetitions per cell needed."""
    head = ["measure", "n", "now", "spread", "change", "pairs", "kept", "reps", "note"]
    rows = []
    for m, r in p["measures"].items():
        spread = f"cell var {fmt(r['var_cell'], 3)}" if m == "contact" else f"sd diff {fmt(r['sd_diff'])}"
        rows.append([SHORT.get(m, m), str(r["n"]), fmt(r["baseline"]), spread, f"{r['change']:+}",
                     str(r["pairs"] or "-"), _pct(r["usable_pair_rate"]), str(r["reps_per_cell"] or "-"),
                     r["reason"] or ""])  # fmt: skip
    return head, rows


def plan_costs(p: dict) -> list[str]:
    """What each reachable plan costs, both runs at its repetitions, at this run's spend per succeeded episode:
    '$4.20 (1,234,000 tokens) to detect +0.15 contact at 80% power: 2 runs x 5 reps x 9 cells = 90 episodes'."""
    lines = []
    for m, r in p["measures"].items():
        if r["episodes"]:
            tokens = "unknown" if r["tokens"] is None else f"{r['tokens']:,.0f}"
            lines.append(f"{money(r['cost_usd'])} ({tokens} tokens) to detect {r['change']:+} {SHORT.get(m, m)} at "
                         f"{p['power']:.0%} power: 2 runs x {r['reps_per_cell']} reps x {p['cells']} cells = "
                         f"{r['episodes']} episodes")  # fmt: skip
    return lines


def detectable_rows(d: dict) -> tuple[list[str], list[list[str]]]:
    """Per measure of a finished pair: pairs, the spread it saw, the smallest change it could detect."""
    head = ["measure", "pairs", "spread", f"minimum detectable change ({d['power']:.0%} power, alpha {d['alpha']})"]
    rows = []
    for m, r in d["measures"].items():
        spread = f"discordant {_pct(r['discordant'])}" if m == "contact" else f"sd of difference {fmt(r['sd_diff'])}"
        rows.append([SHORT.get(m, m), str(r["n"]), spread, "out of reach" if r["mde"] is None else f"±{fmt(r['mde'])}"])
    return head, rows


def persona_rows(a: dict) -> tuple[list[str], list[list[str]]]:
    """Per persona type: n, out of character, sharing when asked, first turn against the file, mean state."""
    head = ["persona", "n", "out of character", "shares when asked [95% CI]", "first interest (file range; inside)",
            "first comfort (file range; inside)", "mean interest", "mean comfort"]
    rows = []
    for name, t in a["types"].items():
        s = t["shares_when_asked"]
        first = lambda k: (f"{fmt(t[k]['mean'], 1)} ({t[k]['declared'][0]}-{t[k]['declared'][1]}; "  # noqa: E731
                           f"{t[k]['inside']['k']}/{t[k]['inside']['n']})")
        rows.append([name, _star(t["n"], t["small"]), str(t["out_of_character"]), f"{fmt_ci(s, percent=True)} of {s['n']}",
                     first("first_interest"), first("first_comfort"), fmt_ci(t["mean_interest"]), fmt_ci(t["mean_comfort"])])
    return head, rows


def curve_rows(a: dict) -> tuple[list[str], list[list[str]]]:
    """Per persona type and state: the file's baseline, then the mean at each persona turn with its n."""
    rows = []
    for name, t in a["types"].items():
        for k in ("interest", "comfort"):
            points = " ".join(f"{fmt(p['mean'], 1)} (n {p['n']})" for p in t["curves"][k])
            rows.append([name, k, str(t[f"first_{k}"]["baseline"]), points or "-"])
    return ["persona", "state", "file baseline", "mean at persona turn 1, 2, ..."], rows


def pair_rows(a: dict) -> tuple[list[str], list[list[str]]]:
    """Per pair of types: each effect of the second against the first with its 95% interval, and whether told apart."""
    head = ["pair", "shares when asked (Cohen's h)", "mean interest (Hedges' g)", "mean comfort (Hedges' g)", "told apart"]
    show = lambda e: f"{fmt(e['effect'])} [{fmt(e['ci'][0])}, {fmt(e['ci'][1])}]"  # noqa: E731
    return head, [[f"{p['a']} -> {p['b']}", *[show(p["effects"][m]) for m in ("shares_when_asked", "mean_interest", "mean_comfort")],
                   "yes" if p["separable"] else "NO"] for p in a["pairs"]]  # fmt: skip


def episode_list(ids: list[str], most: int = 8) -> str:
    """Episode ids, the first few: 'e1, e2 … (+3 more)'."""
    return ", ".join(ids[:most]) + (f" … (+{len(ids) - most} more)" if len(ids) > most else "")
