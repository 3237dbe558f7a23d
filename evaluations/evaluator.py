"""The evaluator agent: grades each transition against the rubric, with evidence checked word for word."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from simulator.catalog import Catalog
from simulator.chat import Call, ChatModel, structured
from simulator.episode import Exchanged
from simulator.errors import ModelError
from simulator.prompts import Prompts, text_hash

from .rubric import CONDITIONS, FLAGS, Rubric
from .rules import objective_timing, quote_problem, transitions

Score = Literal[1, 2, 3, 4, 5]
_STRICT = ConfigDict(extra="forbid")
QUOTE_CHARS, REASON_CHARS = 120, 200  # in the schema, so constrained decoding cannot ramble
PROMPTS = ("evaluator_transitions", "evaluator_transition", "evaluator_flags", "evaluator_outcome", "evaluator_fidelity")


@dataclass(frozen=True)
class Judge:
    """One independent judge: a model, a seed, and the rubric and prompts it grades with."""

    model: ChatModel
    prompts: Prompts
    rubric: Rubric
    rubric_hash: str
    seed: int = 0
    index: int = 0
    reasks: int = 2
    temperature: float = 0.3  # above 0 so judges with different seeds are independent draws
    fidelity_judge: bool = False

    def texts(self) -> dict[str, tuple[str, str]]:
        """{hash: (name, text)} of the rubric and every evaluator prompt, for the store's provenance."""
        texts = {p: self.prompts.source(p) for p in PROMPTS} | {"rubric": self.rubric.model_dump_json(indent=1)}
        return {text_hash(t) if n != "rubric" else self.rubric_hash: (n, t) for n, t in texts.items()}

    async def ask(self, prompt: str, output_type: type[BaseModel], purpose: str, calls: list[Call], k: int, max_tokens: int):
        return await structured(
            self.model, [{"role": "user", "content": prompt}], output_type, role="evaluator", purpose=purpose,
            calls=calls, reasks=self.reasks, seed=(self.seed * 7_919 + k * 16) % 2**31,
            temperature=self.temperature, max_tokens=max_tokens,
        )  # fmt: skip


# The output models depend only on which conditions are asked and which turns exist, so each is built
# once: pydantic's create_model is costly, and a judge asks for these on every call.
def _turn_type(indices: tuple[int, ...]):
    return Literal[indices] if indices else int


@functools.lru_cache(maxsize=256)
def _evidence_model(indices: tuple[int, ...]) -> type[BaseModel]:
    return create_model(
        "evidence", __config__=_STRICT,
        turn=(_turn_type(indices), Field(description="The turn the quote comes from.")),
        quote=(str, Field(max_length=QUOTE_CHARS, description="A few words copied exactly from that turn.")),
        reason=(str, Field(max_length=REASON_CHARS, description="One sentence.")),
        score=(Optional[Score], Field(description="1 (clearly broken) to 5 (clearly met), or null if not applicable.")),
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _grades_model(conditions: tuple[str, ...], indices: tuple[int, ...]) -> type[BaseModel]:
    evidence = _evidence_model(indices)
    return create_model("transition_grades", __config__=_STRICT, **{c: (evidence, ...) for c in conditions})


@functools.lru_cache(maxsize=256)
def _flags_model(indices: tuple[int, ...]) -> type[BaseModel]:
    raised = create_model(
        "raised_flag", __config__=_STRICT, flag=(Literal[FLAGS], ...), turn=(_turn_type(indices), ...),
        quote=(str, Field(max_length=QUOTE_CHARS)), reason=(str, Field(max_length=REASON_CHARS)),
    )  # fmt: skip
    return create_model("flags", __config__=_STRICT, flags=(list[raised], ...))


@functools.lru_cache(maxsize=256)
def _transitions_model(indices: tuple[int, ...]) -> type[BaseModel]:
    return create_model("transition_turns", __config__=_STRICT, turns=(list[_turn_type(indices)], ...))


class _Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", title="outcome")
    reason: str = Field(max_length=REASON_CHARS)
    exchanged: Exchanged
    next_meeting: bool


class _Fidelity(BaseModel):
    model_config = ConfigDict(extra="forbid", title="fidelity")
    reason: str = Field(max_length=REASON_CHARS)
    in_character: bool


def numbered(turns: list[dict]) -> str:
    """The transcript as the judge sees it: `[3] persona: Sure, why not.`"""
    return "\n".join(f"[{t['index']}] {t['speaker']}: {t['text']}" for t in turns)


def _unscored(reason: str) -> dict:
    return {"status": "unscored", "score": None, "reason": reason}


async def _grade_transition(judge: Judge, ep: dict, transition: dict, calls: list[Call], k: int) -> dict:
    """{condition: grade}; evidence that does not occur in the named turn is re-asked, then unscored."""
    turns, results, problems, feedback = ep["turns"], {}, {}, []
    pending = list(CONDITIONS)
    indices = tuple(t["index"] for t in turns)
    for attempt in range(judge.reasks + 1):
        prompt = judge.prompts.render(
            "evaluator_transition", setting=ep["setting_entry"], persona=ep["persona_entry"], transcript=numbered(turns),
            transition_turns=transition["turns"] or ["(none: grade the whole conversation)"],
            conditions={c: judge.rubric.conditions[c] for c in pending}, feedback=feedback,
        )  # fmt: skip
        try:
            answer = await judge.ask(prompt, _grades_model(tuple(pending), indices), "transition", calls, k + attempt, 800)
        except ModelError as e:
            return results | {c: _unscored(str(e)) for c in pending}
        feedback = []
        for c in pending:
            g = getattr(answer, c)
            grade = {"turn": g.turn, "quote": g.quote, "reason": g.reason, "score": g.score}
            if g.score is None and judge.rubric.conditions[c].not_applicable is None:
                problems[c] = f"{c} always applies (a conversation without an ask scores timing 1); give a score"
                feedback.append(problems[c])
            elif g.score is None:
                results[c] = grade | {"status": "not_applicable"}
            elif problem := quote_problem(g.quote, turns, g.turn):
                problems[c] = problem
                feedback.append(f"{c}: {problem}")
            else:
                results[c] = grade | {"status": "scored"}
        pending = [c for c in pending if c not in results]
        if not pending:
            break
    for c in pending:
        results[c] = _unscored(f"evidence rejected {judge.reasks + 1} times; last: {problems[c]}")
    return {c: results[c] for c in CONDITIONS}


async def _flags(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict:
    turns = ep["turns"]
    practitioner = tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    raised, rejected, feedback = {}, {}, []
    for attempt in range(judge.reasks + 1):
        prompt = judge.prompts.render("evaluator_flags", setting=ep["setting_entry"], transcript=numbered(turns),
                                      flags=judge.rubric.flags, feedback=feedback)
        try:
            answer = await judge.ask(prompt, _flags_model(practitioner), "flags", calls, k + attempt, 400)
        except ModelError as e:
            return {"status": "unscored", "reason": str(e), "raised": list(raised.values()), "rejected": list(rejected.values())}
        feedback = []
        for f in answer.flags:
            if problem := quote_problem(f.quote, turns, f.turn):
                rejected[f.flag] = {"flag": f.flag, "reason": problem}
                feedback.append(f"{f.flag}: {problem}")
            else:
                raised[f.flag] = f.model_dump()
                rejected.pop(f.flag, None)
        if not feedback:
            break
    return {"status": "scored", "raised": list(raised.values()), "rejected": list(rejected.values())}


async def _outcome(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict:
    prompt = judge.prompts.render("evaluator_outcome", transcript=numbered(ep["turns"]))
    try:
        answer = await judge.ask(prompt, _Outcome, "outcome", calls, k, 200)
    except ModelError as e:
        return _unscored(str(e))
    persona_turns = [t for t in ep["turns"] if t["speaker"] == "persona" and "interest" in t]
    last = persona_turns[-1] if persona_turns else {}
    return answer.model_dump() | {"status": "scored", "final_interest": last.get("interest"), "final_comfort": last.get("comfort")}


async def _fidelity_judge(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict | None:
    """The optional judge check of whether the persona stayed in character (rules run in the graph)."""
    if not judge.fidelity_judge:
        return None
    lines = [t["text"] for t in ep["turns"] if t["speaker"] == "persona"]
    prompt = judge.prompts.render("evaluator_fidelity", persona=ep["persona_entry"], lines=lines)
    try:
        return (await judge.ask(prompt, _Fidelity, "fidelity", calls, k, 200)).model_dump() | {"status": "scored"}
    except ModelError as e:
        return _unscored(str(e))


async def grade(episode: dict, judge: Judge, catalog: Catalog) -> dict:
    """One judge's verdict on one episode (or gold transcript); parts that fail are 'unscored' with a reason."""
    ep = episode | {"setting_entry": catalog.settings[episode["setting"]],
                    "persona_entry": catalog.personas[episode["persona"]]}  # fmt: skip
    turns, calls = ep["turns"], []
    practitioner = tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    verdict = {"judge": judge.index, "model": judge.model.name, "seed": judge.seed, "temperature": judge.temperature,
               "rubric_hash": judge.rubric_hash, "prompts": {p: text_hash(judge.prompts.source(p)) for p in PROMPTS},
               "unscored": []}  # fmt: skip
    judged = []
    try:
        prompt = judge.prompts.render("evaluator_transitions", setting=ep["setting_entry"], transcript=numbered(turns))
        found = await judge.ask(prompt, _transitions_model(practitioner), "transitions", calls, 0, 60)
        judged = sorted(set(found.turns))
    except ModelError as e:
        verdict["unscored"].append(f"transitions: {e}")
    found = transitions(turns, judged) or [{"turns": [], "turn": None, "ask_turn": None, "has_ask": False, "source": "none"}]
    for n, transition in enumerate(found):
        transition["conditions"] = await _grade_transition(judge, ep, transition, calls, 100 + 10 * n)
        transition["timing_objective"] = objective_timing(turns, transition["ask_turn"]) if transition["ask_turn"] is not None else None
        verdict["unscored"] += [f"turn {transition['turn']} {c}: {g['reason']}" for c, g in transition["conditions"].items() if g["status"] == "unscored"]
    verdict["transitions"] = found
    verdict["flags"] = await _flags(judge, ep, calls, 1000)
    verdict["outcome"] = await _outcome(judge, ep, calls, 2000)
    verdict["fidelity"] = await _fidelity_judge(judge, ep, calls, 3000)
    for part in ("flags", "outcome"):
        if verdict[part]["status"] == "unscored":
            verdict["unscored"].append(f"{part}: {verdict[part]['reason']}")
    verdict["calls"] = [c.to_dict() for c in calls]
    return verdict


def make_evaluator(judges: list[Judge], catalog: Catalog):
    """The graph's evaluator slot: every judge grades the episode in turn; all verdicts are kept."""

    async def evaluate(episode: dict) -> list[dict]:
        return [await grade(episode, judge, catalog) for judge in judges]

    return evaluate
