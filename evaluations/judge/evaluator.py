"""The judge's grading steps: find the transitions, grade each against the rubric citing sentences of the transcript as
evidence, raise flags, read the outcome, check the persona's fidelity. graph.py runs them as a LangGraph graph."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from simulator.conversation.episode import Exchanged
from simulator.conversation.prompts import Prompts, text_hash
from simulator.core.errors import OutputError
from simulator.models.chat import Call, ChatModel, MAX_STRING_CHARS, json_schema, structured

from .rubric import CONDITIONS, FLAGS, Rubric
from .rules import (citation_problem, contact_problem, contact_turns, evidence_turns, judge_only, objective_timing, sentence_table,
                    sentences, transitions)

Score = Literal[1, 2, 3, 4, 5]
_STRICT = ConfigDict(extra="forbid")
REASON_CHARS = MAX_STRING_CHARS  # one sentence, with room; checked after parsing (strict schemas carry no length limits)
PROMPTS = ("evaluator", "evaluator_transitions", "evaluator_transition", "evaluator_flags", "evaluator_outcome", "evaluator_fidelity")


def _short(text: str) -> str:
    if len(text) > REASON_CHARS:
        raise ValueError(f"reason is {len(text)} characters; write one sentence of at most {REASON_CHARS}")
    return text


Reason = Annotated[str, AfterValidator(_short)]


def judge_texts(prompts: Prompts, rubric: Rubric, rubric_hash: str) -> dict[str, tuple[str, str]]:
    """{hash: (name, text)} of the rubric and every evaluator prompt a judge grades with."""
    texts = {p: prompts.source(p) for p in PROMPTS} | {"rubric": rubric.model_dump_json(indent=1)}
    return {text_hash(t) if n != "rubric" else rubric_hash: (n, t) for n, t in texts.items()}


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
        return judge_texts(self.prompts, self.rubric, self.rubric_hash)

    def messages(self, ep: dict, part: str, **variables) -> list[dict]:
        """A part's request: the shared system message, rendered once into `ep['system']` for all the parts that share
        `ep`, then the part's question. A part's template that renders the transcript itself (as a
        --prompts-dir written for 0.2.0 does) is sent alone."""
        if "transcript" in self.prompts.variables(part):
            return [{"role": "user", "content": self.prompts.render(part, **_context(ep), **variables)}]
        if "system" not in ep:
            ep["system"] = shared_system(self.prompts, self.rubric, **_context(ep))
        return [{"role": "system", "content": ep["system"]}, {"role": "user", "content": self.prompts.render(part, **variables)}]

    async def ask(self, messages: list[dict], output_type: type[BaseModel], purpose: str, calls: list[Call], k: int, max_tokens: int,
                  citable: dict[str, tuple[str, ...]] | None = None):
        """The answer as `output_type`; `citable` fills in the sentence ids each of its `_cited` fields may name."""
        return await structured(
            self.model, messages, output_type, role="evaluator", purpose=purpose,
            calls=calls, reasks=self.reasks, seed=(self.seed * 7_919 + k * 16) % 2**31,
            temperature=self.temperature, max_tokens=max_tokens,
            schema=cited_schema(output_type, citable) if citable is not None else None,
        )  # fmt: skip


# The output models depend only on which conditions and flags are asked, so each is built once (pydantic's create_model
# is costly). The sentences that may be cited differ with every transcript: they go into the schema sent (`cited_schema`),
# not into the model, so no model is built per call.
_IDS = "ids of "  # a `_cited` field's enum is one placeholder, `_IDS + key`, until `cited_schema` fills it in


def shared_system(prompts: Prompts, rubric: Rubric, setting, persona, transcript: str) -> str:
    """The judge's system message for an episode: the rubric, then the episode's setting, stranger and transcript (one
    prefix, which an endpoint's prefix cache serves after the first part)."""
    return prompts.render("evaluator", conditions=rubric.conditions, flags=rubric.flags, setting=setting, persona=persona,
                          transcript=transcript)  # fmt: skip


def _context(ep: dict) -> dict:
    return {"setting": ep["setting_entry"], "persona": ep["persona_entry"], "transcript": numbered(ep["turns"])}


def _one_of(values: tuple):
    """One of `values`, always as a schema enum (pydantic writes a single value as 'const')."""
    kind = "integer" if isinstance(values[0], int) else "string"
    return Annotated[Literal[values], WithJsonSchema({"type": kind, "enum": list(values)})]


def _cited(key: str):
    """A sentence id: the schema sent enumerates the ids that may be cited (`citable[key]`, see `cited_schema`), so a
    schema-following model cannot cite anything else; parsing takes any string, so that one bad citation is re-asked
    on its own."""
    return Annotated[str, WithJsonSchema({"type": "string", "enum": [_IDS + key]})]


@functools.lru_cache(maxsize=256)
def _schema_text(output_type: type[BaseModel]) -> str:
    return json.dumps(json_schema(output_type))


def cited_schema(output_type: type[BaseModel], citable: dict[str, tuple[str, ...]]) -> dict:
    """`output_type`'s schema with each `_cited(key)` field enumerating `citable[key]` (a plain string where there are
    none), filled into the schema's JSON text: about 0.1 ms, where building the models for a new transcript took 4 ms."""
    text = _schema_text(output_type)
    for key, ids in citable.items():
        placeholder = json.dumps([_IDS + key])
        text = text.replace(placeholder, json.dumps(list(ids))) if ids else text.replace(f'"enum": {placeholder}, ', "")
    if _IDS in text:
        raise ValueError(f"{output_type.__name__}: a cited field was left without its ids")
    return json.loads(text)


@functools.lru_cache(maxsize=256)
def _grades_model(conditions: tuple[str, ...]) -> type[BaseModel]:
    """The answer for a transition: {condition: evidence}, each condition citing from its own sentences (`citable[c]`)."""
    fields = {}
    for condition in conditions:
        fields[condition] = (create_model(
            f"evidence_{condition}", __config__=_STRICT,
            sentence=(Optional[_cited(condition)], Field(description="The id in brackets of the sentence that is your evidence; null only if the condition does not apply.")),
            reason=(Reason, Field(description="One sentence.")),
            score=(Optional[Score], Field(description="1 (clearly broken) to 5 (clearly met), or null if the condition does not apply.")),
        ), ...)  # fmt: skip
    return create_model("transition_grades", __config__=_STRICT, **fields)


@functools.lru_cache(maxsize=256)
def _flags_model(flags: tuple[str, ...]) -> type[BaseModel]:
    """The flags raised, each citing one of the practitioner's sentences (`citable['flags']`)."""
    raised = create_model(
        "raised_flag", __config__=_STRICT, flag=(_one_of(flags), ...),
        sentence=(_cited("flags"), Field(description="The id in brackets of the practitioner's sentence that shows it.")),
        reason=(Reason, Field(description="One sentence.")),
    )  # fmt: skip
    return create_model("flags", __config__=_STRICT, flags=(list[raised], ...))


@functools.lru_cache(maxsize=256)
def _transitions_model(indices: tuple[int, ...]) -> type[BaseModel]:
    return create_model("transition_turns", __config__=_STRICT, turns=(list[_one_of(indices) if indices else int], ...))


@functools.lru_cache(maxsize=1)
def _outcome_model() -> type[BaseModel]:
    """The judged outcome, citing the stranger's sentence that gave the contact (`citable['outcome']`)."""
    return create_model(
        "outcome", __config__=_STRICT, reason=(Reason, Field(description="One sentence on what happened.")),
        exchanged=(Exchanged, ...),
        sentence=(Optional[_cited("outcome")], Field(description="The id of the stranger's sentence that gives the contact; null if none was given.")),
        next_meeting=(bool, ...),
    )  # fmt: skip


class _Fidelity(BaseModel):
    model_config = ConfigDict(extra="forbid", title="fidelity")
    reason: Reason
    in_character: bool


def numbered(turns: list[dict]) -> str:
    """The transcript as the judge sees it, each sentence with its id: `Turn 3, persona: [3.1] Sure. [3.2] Why not?`"""
    return "\n".join(f"Turn {t['index']}, {t['speaker']}: " + " ".join(
        f"[{t['index']}.{n}] {s}" for n, s in enumerate(sentences(t["text"]), start=1)) for t in turns)  # fmt: skip


def _ids(table: dict[str, dict], turns: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(i for i, s in table.items() if s["turn"] in turns)


def _evidence(sentence: str | None, table: dict[str, dict]) -> dict:
    """The cited sentence as stored with a grade: its id, its turn and its text."""
    cited = table.get(sentence) if sentence is not None else None
    return {"sentence": sentence if cited else None, "turn": cited and cited["turn"], "quote": cited and cited["text"]}


def _unscored(reason: str) -> dict:
    return {"status": "unscored", "score": None, "reason": reason}


async def grade_transition(judge: Judge, ep: dict, transition: dict, calls: list[Call], k: int) -> dict:
    """{condition: grade}; a score citing a sentence it may not cite is re-asked, then unscored."""
    turns, results, problems, feedback = ep["turns"], {}, {}, []
    table = sentence_table(turns)
    scope = {c: evidence_turns(turns, transition["turns"], c) for c in CONDITIONS}
    pending = list(CONDITIONS)
    for attempt in range(judge.reasks + 1):
        messages = judge.messages(
            ep, "evaluator_transition", transition_turns=transition["turns"] or ["(none: grade the whole conversation)"],
            conditions={c: judge.rubric.conditions[c] for c in pending}, scope={c: scope[c] for c in pending},
            feedback=feedback,
        )  # fmt: skip
        citable = {c: _ids(table, scope[c]) for c in pending}
        try:
            answer = await judge.ask(messages, _grades_model(tuple(pending)), "transition", calls, k + attempt, 800, citable)
        except OutputError as e:
            return results | {c: _unscored(str(e)) for c in pending}
        feedback = []
        for c in pending:
            g = getattr(answer, c)
            problem = citation_problem(g.sentence, table, scope[c])
            grade = {**_evidence(None if problem else g.sentence, table), "reason": g.reason, "score": g.score}
            if g.score is None and judge.rubric.conditions[c].not_applicable is None:
                problems[c] = f"{c} always applies: give it a score, never null"
                feedback.append(f"{c}: {problems[c]}")
            elif g.score is None:
                results[c] = grade | {"status": "not_applicable"}
            elif problem:
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


async def grade_flags(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict:
    """The flags the judge raises with evidence from a practitioner turn.

    Each flag keeps the judge's final word on it: flags accepted in the first answer stay, and only the
    flags whose evidence was rejected are asked about again (an independent re-draw of the whole list
    would pool flags across draws and inflate flag rates).
    """
    turns = ep["turns"]
    table = sentence_table(turns)
    practitioner = tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    ids = _ids(table, practitioner)
    asked, raised, rejected, feedback = FLAGS, {}, {}, []
    for attempt in range(judge.reasks + 1):
        messages = judge.messages(ep, "evaluator_flags", flags={f: judge.rubric.flags[f] for f in asked}, feedback=feedback)
        try:
            answer = await judge.ask(messages, _flags_model(asked), "flags", calls, k + attempt, 400, {"flags": ids})
        except OutputError as e:
            return {"status": "unscored", "reason": str(e), "raised": list(raised.values()), "rejected": list(rejected.values())}
        rejected = {}
        for f in answer.flags:
            if f.flag in raised:
                continue
            if problem := citation_problem(f.sentence, table, practitioner):
                rejected[f.flag] = {"flag": f.flag, "sentence": f.sentence, "reason": problem}
            else:
                raised[f.flag] = {"flag": f.flag, **_evidence(f.sentence, table), "reason": f.reason}
                rejected.pop(f.flag, None)
        if not rejected:
            break
        asked = tuple(rejected)
        feedback = [f"{f}: {r['reason']}" for f, r in rejected.items()]
    return {"status": "scored", "raised": list(raised.values()), "rejected": list(rejected.values())}


async def grade_outcome(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict:
    """What was exchanged, with the stranger's sentence that gave it: evidence that does not hold is re-asked, then
    the outcome is unscored (a reading that cites nothing may be a prompt's wording copied, not the transcript's)."""
    turns, feedback = ep["turns"], []
    table = sentence_table(turns)
    persona = contact_turns(turns)
    for attempt in range(judge.reasks + 1):
        messages = judge.messages(ep, "evaluator_outcome", feedback=feedback)
        try:
            answer = await judge.ask(messages, _outcome_model(), "outcome", calls, k + attempt, 200,
                                  {"outcome": _ids(table, persona)})
        except OutputError as e:
            return _unscored(str(e))
        if problem := contact_problem(answer.exchanged, answer.sentence, table, persona):
            feedback = [problem]
            continue
        last = next((t for t in reversed(turns) if t["speaker"] == "persona" and "interest" in t), {})
        return {"reason": answer.reason, "exchanged": answer.exchanged, **_evidence(answer.sentence, table),
                "next_meeting": answer.next_meeting, "status": "scored", "final_interest": last.get("interest"),
                "final_comfort": last.get("comfort")}  # fmt: skip
    return _unscored(f"evidence rejected {judge.reasks + 1} times; last: {problem}")


async def check_fidelity(judge: Judge, ep: dict, calls: list[Call], k: int) -> dict:
    """The optional judge check (`fidelity_judge`) of whether the persona stayed in character (rules run in the graph),
    on her own lines: a branch's kept prefix (`ep['kept']` turns) was said by the parent's persona."""
    lines = [t["text"] for t in ep["turns"] if t["speaker"] == "persona" and t["index"] >= ep.get("kept", 0)]
    messages = [{"role": "user", "content": judge.prompts.render("evaluator_fidelity", persona=ep["persona_entry"], lines=lines)}]
    try:
        return (await judge.ask(messages, _Fidelity, "fidelity", calls, k, 200)).model_dump() | {"status": "scored"}
    except OutputError as e:
        return _unscored(str(e))


async def find_transitions(judge: Judge, ep: dict, calls: list[Call]) -> dict:
    """The transitions, the judge's reading checked against the declared intents (the turns it adds reported apart); an
    invalid answer leaves the declared ones."""
    turns, unscored, judged = ep["turns"], [], []
    practitioner = tuple(t["index"] for t in turns if t["speaker"] == "practitioner")
    try:
        messages = judge.messages(ep, "evaluator_transitions")
        judged = sorted(set((await judge.ask(messages, _transitions_model(practitioner), "transitions", calls, 0, 60)).turns))
    except OutputError as e:
        unscored.append(f"transitions: {e}")
    found = transitions(turns, judged) or [{"turns": [], "turn": None, "ask_turn": None, "has_ask": False, "source": "none"}]
    return {"transitions": found, "unscored": unscored, "judge_added": judge_only(turns, judged, found)}


async def grade_found(judge: Judge, ep: dict, transition: dict, calls: list[Call], n: int) -> dict:
    """The n-th transition with its condition grades and, where it has an ask, its timing against the interest curve."""
    conditions = await grade_transition(judge, ep, transition, calls, 100 + 10 * n)
    ask = transition["ask_turn"]
    return transition | {"conditions": conditions, "timing_objective": objective_timing(ep["turns"], ask) if ask is not None else None}


QUESTION_TOKENS = 150  # a part's question and a re-ask's feedback, roughly


def judge_prompt_tokens(prompts: Prompts, rubric: Rubric, setting, persona, rounds: int, line_tokens: int) -> int:
    """Roughly the prompt of one judge call on an episode of `rounds` rounds, for a dry run's cost: the shared system
    message for this setting and stranger with no transcript (characters / 4), the transcript at two lines a round of
    `line_tokens` each (the lines' cap), and the part's question (`QUESTION_TOKENS`)."""
    return len(shared_system(prompts, rubric, setting, persona, "")) // 4 + 2 * rounds * line_tokens + QUESTION_TOKENS


def judge_max_calls(rounds: int, reasks: int, fidelity_judge: bool = False) -> int:
    """The most calls one judge makes on an episode of at most `rounds` rounds, every re-ask counted.

    Each structured call takes up to reasks + 1 attempts. Finding the transitions is one such call. A transition's
    grades, the flags and the outcome are each asked again up to `reasks` times while their evidence is rejected, each
    asking a call of its own attempts: (reasks + 1)^2 apiece. The practitioner's `rounds` turns, split by turns that do
    not move, make at most ceil(rounds / 2) transitions (or one over the whole conversation).
    `judge_max_calls(3, 2)` -> 3 + 2 x 9 + 9 + 9 = 39.
    """
    attempts, transitions = reasks + 1, max(1, (rounds + 1) // 2)
    return attempts + (transitions + 2) * attempts**2 + (attempts if fidelity_judge else 0)
