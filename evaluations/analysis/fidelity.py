"""The persona fidelity audit: does each persona type behave as its file declares, and are the types told apart?

Built on every succeeded episode, out-of-character ones included (leaving them out would hide the very drift
the audit looks for); each warning lists the episodes behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from simulator.conversation.catalog import Persona, entry_hash
from simulator.core.records import Episode, is_contact

from .compare import SMALL, clean, mean_ci, rate
from .stats import cohens_h_ci, hedges_g_ci


@dataclass(frozen=True, slots=True)
class Reading:
    """What the audit and the interest plot read of an episode, small enough to hold for every episode of a long run:
    `Reading.of(record)`. `states` are the persona's (turn index, interest, comfort) where she reported a state."""

    id: str
    persona: str
    status: str
    in_character: bool | None
    asked: bool
    exchanged: str | None
    first_ask_turn: int | None
    states: tuple[tuple[int, int, int], ...]

    @classmethod
    def of(cls, record: Episode | Reading) -> Reading:
        if isinstance(record, Reading):
            return record
        o = record.outcome
        states = tuple((t.index, t.interest, t.comfort) for t in record.turns if t.speaker == "persona" and t.interest is not None)
        return cls(record.id, record.persona, record.status, record.in_character, bool(o and o.asked), o and o.exchanged,
                   o and o.first_ask_turn, states)  # fmt: skip

    def series(self, key: str) -> list[int]:
        """The persona's `key` (interest or comfort) turn by turn."""
        return [s[1] if key == "interest" else s[2] for s in self.states]


def first_turn_check(records: list[Reading], persona: Persona, key: str) -> dict:
    """The first turn's `key` (interest or comfort) against the file's range: mean, share inside, episodes out."""
    low, high = getattr(persona.expected_first_turn, key)
    firsts = [(r.id, r.series(key)[0]) for r in records if r.states]
    return {"declared": [low, high], "baseline": getattr(persona.baseline, key), **mean_ci([x for _, x in firsts]),
            "inside": rate([low <= x <= high for _, x in firsts]),
            "above": [i for i, x in firsts if x > high], "below": [i for i, x in firsts if x < low]}  # fmt: skip


def curve(records: list[Reading], key: str) -> list[dict]:
    """Mean `key` at each persona turn (1st, 2nd, ...) with how many episodes reached that turn."""
    by_turn: dict[int, list[float]] = {}
    for r in records:
        for i, x in enumerate(Reading.of(r).series(key), start=1):
            by_turn.setdefault(i, []).append(x)
    return [{"turn": i, "n": len(xs), "mean": float(np.mean(xs))} for i, xs in sorted(by_turn.items())]


def episode_mean(record: Episode | Reading, key: str) -> float | None:
    """The persona's mean `key` over an episode's turns (None without turns)."""
    xs = Reading.of(record).series(key)
    return float(np.mean(xs)) if xs else None


def type_profile(records: list[Reading], persona: Persona) -> dict:
    """One persona type: how often she shared when asked, her first turn against her file, her curves."""
    asked = [r for r in records if r.asked]
    shared = [r.id for r in asked if is_contact(r.exchanged)]  # a number or an email, as compare counts contact
    return {
        "n": len(records), "small": len(records) < SMALL,
        "out_of_character": sum(r.in_character is False for r in records),
        "shares_when_asked": rate([r.id in shared for r in asked]) | {"episodes": shared},
        **{f"first_{k}": first_turn_check(records, persona, k) for k in ("interest", "comfort")},
        **{f"mean_{k}": mean_ci([episode_mean(r, k) for r in records]) for k in ("interest", "comfort")},
        "curves": {k: curve(records, k) for k in ("interest", "comfort")},
    }  # fmt: skip


def separation(a: list[Reading], b: list[Reading], pa: dict, pb: dict) -> dict:
    """Effect sizes of type b against type a with 95% intervals: Cohen's h on sharing when asked, Hedges' g on state."""
    sa, sb = pa["shares_when_asked"], pb["shares_when_asked"]
    effects = {"shares_when_asked": cohens_h_ci(sa["k"], sa["n"], sb["k"], sb["n"])}
    for key in ("interest", "comfort"):
        effects[f"mean_{key}"] = hedges_g_ci([episode_mean(r, key) for r in a], [episode_mean(r, key) for r in b])
    rows = {m: {"effect": e, "ci": [lo, hi], "name": "Cohen's h" if m.startswith("shares") else "Hedges' g"}
            for m, (e, lo, hi) in effects.items()}  # fmt: skip
    told_apart = any(r["ci"][0] > 0 or r["ci"][1] < 0 for r in rows.values())  # NaN compares False: not evidence
    return {"effects": rows, "separable": told_apart}


def _warmth(p: Persona) -> int:
    """How warm a file declares a persona to start: baseline interest + comfort."""
    return p.baseline.interest + p.baseline.comfort


def _n_note(*ns: int) -> str:
    """The n behind a warning, marked when small: `_n_note(3, 9)` -> ' (n 3 and 9; fewer than 5: read with care)'."""
    return f" (n {' and '.join(map(str, ns))}" + (f"; fewer than {SMALL}: read with care)" if min(ns) < SMALL else ")")


def warnings(by_type: dict[str, list[Reading]], personas: dict[str, Persona], profiles: dict, pairs: list[dict]) -> list[dict]:
    """Plain warnings: types not told apart, types more cooperative than their file says, first turns out of range."""
    out = []
    for pair in pairs:
        a, b = pair["a"], pair["b"]
        if not pair["separable"]:
            out.append({"kind": "not_separable", "personas": [a, b], "episodes": [r.id for r in by_type[a] + by_type[b]],
                        "message": f"{a} and {b} are not told apart: every 95% interval (sharing when asked, interest, "
                                   f"comfort) includes 0{_n_note(profiles[a]['n'], profiles[b]['n'])}"})  # fmt: skip
        cool, warm = sorted((a, b), key=lambda p: _warmth(personas[p]))
        if _warmth(personas[cool]) == _warmth(personas[warm]):
            continue
        sc, sw = profiles[cool]["shares_when_asked"], profiles[warm]["shares_when_asked"]
        if sc["rate"] is not None and sw["rate"] is not None and sc["rate"] >= sw["rate"]:
            out.append({"kind": "more_cooperative", "personas": [cool, warm], "episodes": sc["episodes"],
                        "message": f"{cool} shares when asked as often as {warm} or more ({sc['k']} of {sc['n']} vs "
                                   f"{sw['k']} of {sw['n']}), though her file declares her cooler (baseline interest + "
                                   f"comfort {_warmth(personas[cool])} vs {_warmth(personas[warm])})"
                                   f"{_n_note(sc['n'], sw['n'])}"})  # fmt: skip
    for name, prof in profiles.items():
        for key in ("interest", "comfort"):
            check = prof[f"first_{key}"]
            low, high = check["declared"]
            for side, word in (("above", "more"), ("below", "less")):
                if check[side]:
                    out.append({"kind": f"first_turn_{side}", "personas": [name], "episodes": check[side],
                                "message": f"{name}: {len(check[side])} of {check['n']} first turns report {word} {key} "
                                           f"than her file allows ({low}-{high}){_n_note(check['n'])}"})  # fmt: skip
    return out


def audit(records: Iterable[Episode | Reading], personas: dict[str, Persona], *, run_catalog: dict | None = None) -> dict:
    """The audit of a run's succeeded episodes against the persona files (`run_catalog`: the run's stored hashes).
    `records` may be a stream of records: each is read and let go."""
    records = [Reading.of(r) for r in records]
    done = [r for r in records if r.status == "succeeded"]
    names = sorted({r.persona for r in done})
    unknown = [n for n in names if n not in personas]
    by_type = {n: [r for r in done if r.persona == n] for n in names if n in personas}
    profiles = {n: type_profile(rs, personas[n]) for n, rs in by_type.items()}
    pairs = [{"a": a, "b": b, **separation(by_type[a], by_type[b], profiles[a], profiles[b])}
             for a, b in combinations(by_type, 2)]  # fmt: skip
    found = warnings(by_type, personas, profiles, pairs)
    for n in by_type:
        stored = (run_catalog or {}).get(f"personas/{n}")
        if stored and stored != entry_hash(personas[n]):
            found.insert(0, {"kind": "file_changed", "personas": [n], "episodes": [],
                             "message": f"{n}: the persona file read now differs from the one the run used "
                                        f"(hash {entry_hash(personas[n])} vs {stored}); pass the run's --personas-dir"})
    found += [{"kind": "unknown_persona", "personas": [n], "episodes": [], "message": f"{n}: no persona file to audit against"}
              for n in unknown]  # fmt: skip
    return clean({"episodes": len(records), "n": len(done), "small_below": SMALL, "types": profiles, "pairs": pairs,
                  "warnings": found})  # fmt: skip
