"""Pure rules over a transcript: transitions, sentence citations and their checks, objective timing, verdict scores."""

from __future__ import annotations

import re

from simulator.core.records import Transition, Verdict

MOVES = ("bridge", "ask")


def transitions(turns: list[dict], judged: list[int]) -> list[dict]:
    """Runs of practitioner turns that move toward the exchange by their declared intent, cross-checked with the judge.

    The judge's reading marks a run 'both' where it names one of its turns, but never widens it: a run's turns are what
    a condition may cite, and a judge naming every turn would make every sentence citable (`judge_only` lists the turns
    it added). Only a transcript with no declared move (e.g. a gold transcript, which has no intents) takes its runs from
    the judge. `transitions(turns, [4])` -> [{'turns': [2, 4], 'turn': 2, 'ask_turn': 4, 'has_ask': True,
    'source': 'both'}] when turn 2 was declared a bridge and turn 4 an ask.
    """
    practitioner = [t for t in turns if t["speaker"] == "practitioner"]
    declared = {t["index"] for t in practitioner if t.get("intent") in MOVES}
    moving = declared or {i for i in judged if any(t["index"] == i for t in practitioner)}
    runs, run = [], []
    for t in practitioner:
        if t["index"] in moving:
            run.append(t["index"])
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    by_index = {t["index"]: t for t in turns}
    result = []
    for run in runs:
        from_intent, from_judge = bool(declared & set(run)), bool(set(judged) & set(run))
        asks = [i for i in run if by_index[i].get("intent") == "ask"]
        result.append({
            "turns": run, "turn": run[0], "ask_turn": asks[0] if asks else run[-1], "has_ask": bool(asks),
            "source": "both" if from_intent and from_judge else "declared" if from_intent else "judge",
        })  # fmt: skip
    return result


def judge_only(turns: list[dict], judged: list[int], found: list[dict]) -> list[int]:
    """The practitioner turns the judge named as moves that no transition holds: reported apart, never graded as one."""
    practitioner = {t["index"] for t in turns if t["speaker"] == "practitioner"}
    held = {i for t in found for i in t["turns"]}
    return sorted(i for i in set(judged) if i in practitioner and i not in held)


def contact_turns(turns: list[dict]) -> tuple[int, ...]:
    """The persona turns that may show contact was given: those after the practitioner's first ask; with no ask, only
    a line her own record says gave contact; a transcript without telemetry (a gold one) has nothing to check
    against, so any of her turns. A "Yes." said before anything was asked gave nothing."""
    persona = [t for t in turns if t["speaker"] == "persona"]
    if not any("intent" in t or "shares_contact" in t for t in turns):
        return tuple(t["index"] for t in persona)
    asks = [t["index"] for t in turns if t["speaker"] == "practitioner" and t.get("intent") == "ask"]
    if asks:
        return tuple(t["index"] for t in persona if t["index"] > asks[0])
    return tuple(t["index"] for t in persona if t.get("shares_contact"))


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"”’')\]])\s+")


def sentences(text: str) -> list[str]:
    """A turn's sentences, as the judge cites them: `sentences("Hi there! Coffee?")` -> ['Hi there!', 'Coffee?']."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def sentence_table(turns: list[dict]) -> dict[str, dict]:
    """Every sentence by id, 'turn.n' counting from 1: {'4.2': {'turn': 4, 'text': 'Can I get your number?'}}."""
    return {f"{t['index']}.{n}": {"turn": t["index"], "text": s}
            for t in turns for n, s in enumerate(sentences(t["text"]), start=1)}  # fmt: skip


def evidence_turns(turns: list[dict], transition_turns: list[int], condition: str) -> tuple[int, ...]:
    """The turns a condition's evidence may come from: the transition's own turns.

    Congruence compares what the practitioner says they want with how they act before and after the
    ask, so it may cite any practitioner turn; so may every condition when no transition was found
    (the whole conversation is graded then).
    """
    if condition == "congruence" or not transition_turns:
        return tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    return tuple(transition_turns)


def citation_problem(sentence: str | None, table: dict[str, dict], allowed_turns: tuple[int, ...]) -> str | None:
    """Why a cited sentence id is not evidence here, or None: with no sentence 9.1, '9.1' -> 'there is no sentence 9.1'."""
    if sentence is None:
        return "a score needs the id of the sentence it rests on"
    if sentence not in table:
        return f"there is no sentence {sentence}"
    if table[sentence]["turn"] not in allowed_turns:
        return f"sentence {sentence} is not from turns {', '.join(map(str, allowed_turns))}"
    return None


def contact_problem(exchanged: str, sentence: str | None, table: dict[str, dict], persona_turns: tuple[int, ...]) -> str | None:
    """Why an outcome's evidence does not hold: contact given needs the stranger's sentence that gave it,
    and 'none' cites nothing. `contact_problem('number', None, table, (1,))` -> 'number was given: cite ...'."""
    if exchanged == "none":
        return None if sentence is None else f"nothing was given, so cite no sentence (not {sentence})"
    if sentence is None:
        return f"{exchanged} was given: cite the id of the stranger's sentence that gives it"
    return citation_problem(sentence, table, persona_turns)


def objective_timing(turns: list[dict], ask_turn: int) -> dict | None:
    """Where the ask fell on the persona's private interest curve up to the ask; None without telemetry before it.

    The peak is over the persona turns before the ask: her reaction to the ask is the ask's effect, not the moment it
    was timed on. turns_from_peak: how many turns after that peak the ask came; gap_to_peak: how far her interest
    had fallen from it by the ask (0: asked while at her highest so far). interest_at_ask is her last value before it.
    """
    before = [(t["index"], t["interest"]) for t in turns if t["speaker"] == "persona" and "interest" in t and t["index"] < ask_turn]
    if not before:
        return None
    peak = max(v for _, v in before)
    peak_turn = next(i for i, v in before if v == peak)
    return {"ask_turn": ask_turn, "peak_turn": peak_turn, "turns_from_peak": ask_turn - peak_turn,
            "interest_at_ask": before[-1][1], "peak_interest": peak, "gap_to_peak": peak - before[-1][1]}


def main_transition(verdict: Verdict) -> Transition | None:
    """The transition an episode is scored by: the first with an ask, else the first."""
    with_ask = [t for t in verdict.transitions if t.has_ask]
    return (with_ask or verdict.transitions or [None])[0]


def episode_scores(verdict: Verdict) -> dict[str, int | None]:
    """{condition: score} at the main transition; unscored and not-applicable conditions are None."""
    main = main_transition(verdict)
    if main is None:
        return {}
    return {c: g.score if g.status == "scored" else None for c, g in main.conditions.items()}
