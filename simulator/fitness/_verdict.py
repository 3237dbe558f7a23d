"""The criteria read off a stored fitness run: pure functions of the audit, the records and the protocol."""

from __future__ import annotations

import re

from evaluations.analysis.stats import wilson_ci
from simulator.core.records import Episode

ORDER = {"pass": 0, "warn": 1, "fail": 2, "not run": 3}


def share(k: int, n: int) -> dict:
    """k of n with its Wilson 95% interval: `share(1, 4)` -> {'k': 1, 'n': 4, 'rate': 0.25, 'ci': [0.05, 0.70]}."""
    low, high = wilson_ci(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci": [low, high] if n else None}


def status(figure: float | None, ci: list | None, limits: dict, *, higher_is_better: bool) -> tuple[str, bool]:
    """(pass/warn/fail by the figure against the limits, whether the interval lies wholly on the failing side).

    `status(0.5, [0.4, 0.6], {'pass': 0.9, 'fail': 0.7}, higher_is_better=True)` -> ('fail', True).
    """
    if figure is None:
        return "fail", False  # nothing to measure is not a pass
    sign = 1 if higher_is_better else -1
    verdict = "pass" if sign * figure >= sign * limits["pass"] else "fail" if sign * figure < sign * limits["fail"] else "warn"
    clearly = verdict == "fail" and ci is not None and (ci[1] < limits["fail"] if higher_is_better else ci[0] > limits["fail"])
    return verdict, clearly


def worst(*statuses: str) -> str:
    return max(statuses, key=ORDER.__getitem__)


def personas_told_apart(audit: dict, limits: dict) -> dict:
    """Criterion 1 from the personas audit: first states in range, pairs told apart, nobody too cooperative."""
    checks, small = [], any(t["small"] for t in audit["types"].values())
    firsts = [(name, key, t[f"first_{key}"]["inside"]) for name, t in audit["types"].items() for key in ("interest", "comfort")]
    if firsts:
        name, key, low = min(firsts, key=lambda x: (x[2]["rate"] if x[2]["rate"] is not None else -1))
        s, clearly = status(low["rate"], low["ci"], limits["first_turn_inside"], higher_is_better=True)
        checks.append({"check": "first private state inside the file's range (lowest persona)", "status": s, "clearly": clearly,
                       "figure": low["rate"], "ci": low["ci"], "of": f"{name} {key}: {low['k']} of {low['n']}",
                       "threshold": f"pass >= {limits['first_turn_inside']['pass']}, fail < {limits['first_turn_inside']['fail']}",
                       "why": limits["first_turn_inside"]["why"]})  # fmt: skip
    pairs = audit["pairs"]
    apart = sum(p["separable"] for p in pairs)
    s = "pass" if apart >= limits["pairs_told_apart"]["pass"] else "fail"
    details = [f"{p['a']} vs {p['b']}: " + "; ".join(
        f"{m.replace('_', ' ')} {e['name']} {_num(e['effect'])} [{_num(e['ci'][0])}, {_num(e['ci'][1])}]"
        for m, e in p["effects"].items()) for p in pairs]  # fmt: skip
    checks.append({"check": "pairs of personas told apart", "status": s, "clearly": s == "fail" and not small,
                   "figure": apart, "ci": None, "of": f"{apart} of {len(pairs)} pairs", "details": details,
                   "threshold": f"pass: all {limits['pairs_told_apart']['pass']}", "why": limits["pairs_told_apart"]["why"]})
    declared = [list(pair) for pair in limits["too_cooperative"]["cooler_than"]]
    cooperative = [w for w in audit["warnings"] if w["kind"] == "more_cooperative" and w["personas"] in declared]
    checks.append({"check": "no persona more cooperative than her file allows", "status": "fail" if cooperative else "pass",
                   "clearly": bool(cooperative) and not small, "figure": len(cooperative), "ci": None,
                   "of": f"{len(cooperative)} too cooperative", "details": [w["message"] for w in cooperative],
                   "threshold": "pass: none", "why": limits["too_cooperative"]["why"]})  # fmt: skip
    return _criterion(1, "personas told apart", checks)


def envelope_problems(record: Episode, first_range: dict, drift: int, leaks: list[re.Pattern]) -> list[tuple[int, str]]:
    """(turn, why) for each persona turn of an episode that leaves her envelope: before the practitioner's first ask,
    a private state more than `drift` beyond her first-turn range or contact given; at any time, a line that leaks
    her instructions or numbers. `first_range`: {'interest': (low, high), 'comfort': (low, high)}."""
    ask = record.outcome.first_ask_turn if record.outcome else None
    out = []
    for t in record.turns:
        if t.speaker != "persona":
            continue
        why = [f"says '{m.group(0)}'" for p in leaks if (m := p.search(t.text))]
        if ask is None or t.index < ask:
            for key, (low, high) in first_range.items():
                value = getattr(t, key)
                if value is not None and not low - drift <= value <= high + drift:
                    why.append(f"{key} {value} before any ask (range {low}-{high}, drift {drift})")
            if t.shares_contact or t.intent == "give_contact":
                why.append("gives contact before being asked")
        if why:
            out.append((t.index, "; ".join(why)))
    return out


def staying_in_character(records: list[Episode], ranges: dict[str, dict], limits: dict) -> dict:
    """Criterion 2 from the stored turns of succeeded episodes: the share of persona turns out of their envelope."""
    leaks = [re.compile(p, re.I) for p in limits["leaks"]]
    done = [r for r in records if r.status == "succeeded" and r.persona in ranges]
    turns = sum(t.speaker == "persona" for r in done for t in r.turns)
    found = [(r.id, i, why) for r in done for i, why in envelope_problems(r, ranges[r.persona], limits["drift"], leaks)]
    s_ = share(len(found), turns)
    s, clearly = status(s_["rate"], s_["ci"], limits["out_of_envelope"], higher_is_better=False)
    lim = limits["out_of_envelope"]
    check = {"check": "persona turns out of character, whole conversation", "status": s, "clearly": clearly,
             "figure": s_["rate"], "ci": s_["ci"], "of": f"{len(found)} of {turns} turns",
             "details": [f"{e} turn {i}: {why}" for e, i, why in found[:5]] + ([f"... {len(found) - 5} more"] if len(found) > 5 else []),
             "threshold": f"pass <= {lim['pass']}, fail > {lim['fail']}", "why": lim["why"]}  # fmt: skip
    return _criterion(2, "staying in character", [check])


def run_works(records: list[Episode], per_minute: float, summary: dict, limits: dict, *,
              planned: int, stopped: str | None = None) -> dict:
    """Criterion 5: the grid finished, failed episodes, re-asked calls, degenerate endings; tokens and pace (reported)."""
    calls = [c for r in records for c in r.all_calls()]
    ended = [r for r in records if r.outcome]
    figures = {
        "failed": (share(sum(r.status == "failed" for r in records), len(records)), "episodes failed"),
        "reasked": (share(sum(not c.ok for c in calls), len(calls)), "calls whose answer did not parse (re-asked)"),
        "degenerate": (share(sum(r.outcome.end_reason == "degenerate" for r in ended), len(ended)), "endings by repetition"),
    }
    checks = [{"check": "the grid ran to its end", "status": "fail" if stopped else "pass", "clearly": bool(stopped),
               "figure": None, "ci": None, "of": f"{len(records)} of {planned} episodes stored"
               + (f"; the batch stopped scheduling: {stopped}" if stopped else ""),
               "threshold": "pass: every episode stored", "why": "A batch stops when too many episodes fail "
               "(stop_after_failures in the protocol): the endpoint cannot carry the grid as it stands."}]  # fmt: skip
    for key, (s_, what) in figures.items():
        s, clearly = status(s_["rate"], s_["ci"], limits[key], higher_is_better=False)
        checks.append({"check": what, "status": s, "clearly": clearly, "figure": s_["rate"], "ci": s_["ci"],
                       "of": f"{s_['k']} of {s_['n']}", "threshold": f"pass <= {limits[key]['pass']}, fail > {limits[key]['fail']}",
                       "why": limits[key]["why"]})  # fmt: skip
    tokens, cost = summary["tokens_per_episode"], summary.get("cost_per_episode")  # `summarize`'s, as `batch` prints
    tokens = "unknown (the endpoint reported no usage)" if tokens is None else f"{tokens:,.0f}"
    money = "no price known for the model" if cost is None else f"US${cost:.4f} per episode"
    checks.append({"check": "cost and pace (reported, not graded)", "status": "pass", "clearly": False, "figure": None,
                   "ci": None, "of": f"tokens per episode {tokens}; {per_minute:.1f} episodes per minute; {money}",
                   "threshold": "none", "why": "Read them to plan the grid; no model fails for being slow."})  # fmt: skip
    return _criterion(5, "the run works", checks)


def judge_agrees(report: dict, people: dict, limits: dict) -> dict:
    """Criterion 4 from `calibrate`'s report on the gold set, beside people's agreement (`labelling_agreement`)."""
    kappas = {c: r for c, r in report["conditions"].items()}
    lowest = min(kappas, key=lambda c: -2 if kappas[c]["kappa"] is None else kappas[c]["kappa"])
    low = kappas[lowest]
    s, clearly = status(low["kappa"], low["kappa_ci"], limits["kappa"], higher_is_better=True)
    details = [f"{c}: weighted kappa {_num(r['kappa'])} [{_num(r['kappa_ci'][0])}, {_num(r['kappa_ci'][1])}] over "
               f"{r['n']} items; people {_num(people['conditions'][c]['kappa'])}" for c, r in kappas.items()]  # fmt: skip
    checks = [{"check": "judge's scores against people's (lowest condition)", "status": s, "clearly": clearly,
               "figure": low["kappa"], "ci": low["kappa_ci"], "of": f"{lowest}, weighted kappa", "details": details,
               "threshold": _limits(limits["kappa"], "pass >= {}, fail < {}"), "why": limits["kappa"]["why"]}]  # fmt: skip
    out = report["outcome"]
    acc = share(round((out["accuracy"] or 0) * out["n"]), out["n"])
    s, clearly = status(acc["rate"], acc["ci"], limits["outcome_accuracy"], higher_is_better=True)
    checks.append({"check": "what was exchanged, against people's reading", "status": s, "clearly": clearly,
                   "figure": acc["rate"], "ci": acc["ci"], "of": f"{acc['k']} of {acc['n']} ({out['unscored']} unscored)",
                   "threshold": _limits(limits["outcome_accuracy"], "pass >= {}, fail < {}"),
                   "why": limits["outcome_accuracy"]["why"]})  # fmt: skip
    for key in ("precision", "recall"):
        values = [f[key] for f in report["flags"].values() if f[key] is not None]
        mean = sum(values) / len(values) if values else None
        s, _ = status(mean, None, limits[f"flag_{key}"], higher_is_better=True)
        checks.append({"check": f"failure flags: mean {key}", "status": s, "clearly": False, "figure": mean, "ci": None,
                       "of": f"over {len(values)} flags", "threshold": _limits(limits[f"flag_{key}"], "pass >= {}, fail < {}"),
                       "details": [", ".join(f"{f} {_num(r[key])}" for f, r in report["flags"].items())],
                       "why": limits[f"flag_{key}"]["why"]})  # fmt: skip
    return _criterion(4, "the judge agrees with people", checks)


def ranking_survives(ranking: dict, limits: dict, *, runs: tuple[str, str], stopped: str | None = None) -> dict:
    """Criterion 3 from `ranking_within` of the grid (A, the article's personas) and its ablation (B, the same people
    without the article's rules): each persona's strategies ranked by contact on both sides, and Kendall's tau."""
    lim = limits["tau"]
    s, clearly = status(ranking["tau"], ranking["ci"], lim, higher_is_better=True)
    details = []
    for persona, r in ranking["groups"].items():
        if "reason" in r:
            details.append(f"{persona}: not ranked ({r['reason']})")
            continue
        rows = r["contact"]["rows"]

        def order(side: str) -> str:  # 'common_interest 1.00 > friends_pretext 0.00', '=' between ties
            ranked = sorted(rows, key=lambda row: (row[f"rank_{side}"], row["strategy"]))
            text = f"{ranked[0]['strategy']} {_num(ranked[0][side])}"
            for before, row in zip(ranked, ranked[1:]):
                text += f" {'=' if row[f'rank_{side}'] == before[f'rank_{side}'] else '>'} {row['strategy']} {_num(row[side])}"
            return text

        details.append(f"{persona}: with the rules {order('a')}; without {order('b')}")
    if stopped:
        details.append(f"the grid without the rules stopped scheduling: {stopped}")
    reading = {"pass": "the order survives without the rules; ", "warn": "the order partly survives; ",
               "fail": "the order depends on the rules being spelled out; "}[s]
    measured = (f"{reading}over {ranking['pairs']} pairs of strategies within a persona; "
                f"{ranking['undefined']:.0%} of resamples without an untied pair") if ranking["tau"] is not None else \
        f"not measurable: {ranking.get('reason') or 'every pair of strategies is tied in one of the runs'}"
    check = {"check": "strategy ranking kept without the article's rules (Kendall's tau-b)", "status": s,
             "clearly": clearly, "figure": ranking["tau"], "ci": ranking["ci"], "of": measured, "details": details,
             "threshold": _limits(lim, "pass >= {}, fail < {}"), "why": lim["why"],
             "runs": {"with_rules": runs[0], "without_rules": runs[1]}}  # fmt: skip
    return _criterion(3, "the article's rules matter", [check])


def _limits(limits: dict, text: str) -> str:
    return text.format(limits["pass"], limits["fail"])


def not_run(number: int, name: str, why: str) -> dict:
    return {"criterion": number, "name": name, "status": "not run", "clearly": False, "checks": [], "note": why}


def _criterion(number: int, name: str, checks: list[dict]) -> dict:
    return {"criterion": number, "name": name, "status": worst(*(c["status"] for c in checks)),
            "clearly": any(c["clearly"] for c in checks), "checks": checks}


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
