"""The conversation as a LangGraph StateGraph: practitioner -> persona -> ... -> finish [-> evaluate]; each turn's node
says which comes next."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from simulator.core.errors import ModelError, OutputError
from simulator.models.chat import MAX_LINE_CHARS, Call, ChatModel, chat, structured

from .catalog import Catalog, Profile
from .episode import PersonaState, PractitionerLabel, fidelity_problems, outcome, parting_due, stop_rule
from .prompts import Prompts

OPENING_CUE = "(You notice them nearby. Start the conversation.)"
LINE_TOKENS = 48  # the most tokens a line of dialogue is asked for


@dataclass(frozen=True)
class Scenario:
    setting: str
    persona: str
    strategy: str
    profile: Profile = Profile()


class Evaluator(Protocol):
    """The evaluator slot (evaluations.judge.graph.Panel is one): its compiled subgraph ({'episode'} in, {'verdicts'}
    out), and the config['configurable'] entries that subgraph reads while it grades one episode (e.g. its judges)."""

    @property
    def graph(self) -> Any: ...

    def configurable(self) -> dict: ...


@dataclass(frozen=True)
class Context:
    """What the nodes need, passed in the run config so one compiled graph serves every episode."""

    practitioner: ChatModel
    persona: ChatModel
    catalog: Catalog
    prompts: Prompts
    scenario: Scenario
    seed: int
    temperature: float = 0.7
    max_turns: int = 8
    reasks: int = 2
    max_tokens: int = LINE_TOKENS
    evaluate: Evaluator | None = None  # graded after `finish` when given; the graph must be built with its .graph
    person: str | None = None  # 'practitioner' or 'persona' when a person plays that role (`nextstep play`)
    kept: int = 0  # a branch's continuation: how many turns are the parent's stored prefix (not judged here)

    def call_seed(self, turn: int, k: int) -> int:
        """A distinct, reproducible seed for the k-th call of a turn."""
        return (self.seed * 10_007 + turn * 16 + k) % 2**31


class State(TypedDict, total=False):
    turns: Annotated[list[dict], operator.add]
    calls: Annotated[list[dict], operator.add]
    end: dict | None
    error: str | None
    outcome: dict | None
    fidelity: dict | None
    verdicts: list[dict]  # plain data, as the rest of the state: a checkpointer stores it (the runner makes records)


def _ctx(config: RunnableConfig) -> Context:
    return config["configurable"]["ctx"]


def _history(turns: list[dict], me: str) -> list[dict]:
    return [{"role": "assistant" if t["speaker"] == me else "user", "content": t["text"]} for t in turns]


def _transcript(turns: list[dict], me: str, last: int = 6) -> str:
    """The last few turns from one side's view: enough to label a turn, short enough to be fast."""
    return "\n".join(f"{'Me' if t['speaker'] == me else 'Them'}: {t['text']}" for t in turns[-last:])


def _clean(text: str) -> str:
    """The first line, without a speaker label or wrapping quotes the model may add."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    for label in ("Me:", "You:", "Them:"):
        line = line.removeprefix(label).strip()
    return line.strip('"').strip()


async def _say(ctx: Context, model: ChatModel, messages: list[dict], role: str, turn: int, calls: list[Call]) -> str:
    """One line of dialogue; an empty or over-long answer is re-asked like invalid structured output."""
    for attempt in range(ctx.reasks + 1):
        text = _clean(await chat(
            model, messages, role=role, purpose="utterance", calls=calls, seed=ctx.call_seed(turn, attempt),
            max_tokens=ctx.max_tokens, temperature=ctx.temperature, stop=["\n"],
        ))  # fmt: skip
        problem = "empty"
        if len(text) > MAX_LINE_CHARS:  # the endpoint ignored max_tokens: the call is recorded as invalid
            problem = f"a line of {len(text):,} characters, over the {MAX_LINE_CHARS:,} a line may have"
            calls[-1] = calls[-1].model_copy(update={"ok": False, "error": problem})
        elif text:
            return text
    raise OutputError(f"{role} utterance: {problem} after {ctx.reasks + 1} attempts")


def _failed(calls: list[Call], error: ModelError) -> dict:
    return {"calls": [c.model_dump() for c in calls], "error": str(error), "end": {"reason": "error", "by": "error"}}


def _parting(ctx: Context) -> bool:
    """Whether this strategy uses the parting: after a goodbye by either side, one more practitioner line."""
    return ctx.catalog.strategies[ctx.scenario.strategy].parting is not None


def _ended_by_person(role: str) -> dict:
    return {"end": {"reason": "ended_by_person", "by": role}}


async def practitioner_node(state: State, config: RunnableConfig) -> dict:
    ctx, turns, calls = _ctx(config), state.get("turns", []), []
    s, catalog = ctx.scenario, ctx.catalog
    parting = _parting(ctx) and parting_due(turns)
    person = ctx.person == "practitioner"
    try:
        if person:  # the graph pauses for the person's line; an empty one ends the episode
            text = interrupt({"role": "practitioner", "turn": len(turns)})["text"]
            if not text:
                return _ended_by_person("practitioner")
        else:
            strategy = catalog.strategies[s.strategy]
            # `parting` stays a variable for templates written before the cue had a message of its own (a user's
            # --prompts-dir, an old run resumed with its prompts); the shipped one does not use it.
            system = ctx.prompts.render(
                "practitioner", setting=catalog.settings[s.setting], strategy=strategy,
                practitioner_gender=s.profile.practitioner_gender, persona_gender=s.profile.persona_gender, parting=False,
            )  # fmt: skip
            messages = [{"role": "system", "content": system}, {"role": "user", "content": OPENING_CUE}, *_history(turns, "practitioner")]
            if parting:  # after the conversation, so the turns before it reuse this one's prompt (prefix caches)
                messages.append({"role": "system", "content": ctx.prompts.render("practitioner_parting", strategy=strategy)})
            text = await _say(ctx, ctx.practitioner, messages, "practitioner", len(turns), calls)
        label_prompt = ctx.prompts.render(
            "practitioner_intent", transcript=_transcript(turns, "practitioner"), utterance=text
        )
        label = await structured(
            ctx.practitioner, [{"role": "user", "content": label_prompt}], PractitionerLabel,
            role="practitioner", purpose="intent", calls=calls, reasks=ctx.reasks,
            seed=ctx.call_seed(len(turns), 8), max_tokens=24, temperature=0.0,
        )  # fmt: skip
    except ModelError as e:
        return _failed(calls, e)
    turn = ({"index": len(turns), "speaker": "practitioner", "text": text, "intent": label.intent}
            | ({"phase": "parting"} if parting else {}) | ({"by": "person"} if person else {}))  # fmt: skip
    return {"turns": [turn], "calls": [c.model_dump() for c in calls], "end": stop_rule([*turns, turn], ctx.max_turns, parting=_parting(ctx))}


def _person_persona(ctx: Context, turns: list[dict]) -> dict:
    """A person's line with the private state they report (the graph pauses for it); an empty line ends the episode."""
    said = interrupt({"role": "persona", "turn": len(turns)})  # {'text', 'interest', 'comfort', 'intent', 'would_share'}
    if not said["text"]:
        return _ended_by_person("persona")
    state = PersonaState.model_validate({k: said[k] for k in ("interest", "comfort", "intent")})
    turn = {"index": len(turns), "speaker": "persona", "text": said["text"], **state.turn_fields(),
            "would_share": said["would_share"], "by": "person"}  # fmt: skip
    return {"turns": [turn], "end": stop_rule([*turns, turn], ctx.max_turns, parting=_parting(ctx))}


async def persona_node(state: State, config: RunnableConfig) -> dict:
    ctx, turns, calls = _ctx(config), state["turns"], []
    if ctx.person == "persona":
        return _person_persona(ctx, turns)
    s, persona = ctx.scenario, ctx.catalog.personas[ctx.scenario.persona]
    setting = ctx.catalog.settings[s.setting]
    previous = next((t for t in reversed(turns) if t["speaker"] == "persona"), persona.baseline.model_dump())
    # `interest` and `comfort` stay variables for templates written before her feelings had a message of their own.
    system = ctx.prompts.render(
        "persona", setting=setting, persona=persona,
        practitioner_gender=s.profile.practitioner_gender, persona_gender=s.profile.persona_gender,
        interest=previous["interest"], comfort=previous["comfort"],
    )  # fmt: skip
    # Her feelings change every turn: they come after the conversation, so the system message and the turns stay one
    # prefix that the endpoint's cache serves from her last line's request.
    now = ctx.prompts.render("persona_now", interest=previous["interest"], comfort=previous["comfort"])
    messages = [{"role": "system", "content": system}, *_history(turns, "persona"), {"role": "system", "content": now}]
    try:
        text = await _say(ctx, ctx.persona, messages, "persona", len(turns), calls)
        rating_prompt = ctx.prompts.render(
            "persona_state", persona=persona, setting=setting, previous=previous, utterance=text,
            transcript=_transcript([*turns, {"speaker": "persona", "text": text}], "persona"),
        )  # fmt: skip
        rating = await structured(
            ctx.persona, [{"role": "user", "content": rating_prompt}], PersonaState,
            role="persona", purpose="state", calls=calls, reasks=ctx.reasks,
            seed=ctx.call_seed(len(turns), 8), max_tokens=48, temperature=0.0,
        )  # fmt: skip
    except ModelError as e:
        return _failed(calls, e)
    turn = {"index": len(turns), "speaker": "persona", "text": text, **rating.turn_fields()}
    return {"turns": [turn], "calls": [c.model_dump() for c in calls], "end": stop_rule([*turns, turn], ctx.max_turns, parting=_parting(ctx))}


async def finish_node(state: State, config: RunnableConfig) -> dict:
    """The outcome from the structured turns, and persona-fidelity rules on the turns this episode generated."""
    ctx, turns = _ctx(config), state.get("turns", [])
    persona = ctx.catalog.personas[ctx.scenario.persona]
    problems = fidelity_problems(turns, persona.expected_first_turn.model_dump(), ctx.kept)
    return {"outcome": outcome(turns, state["end"]), "fidelity": {"ok": not problems, "problems": problems}}


def _evaluate(evaluator):
    """The node that runs the compiled evaluator subgraph on the finished conversation, with the Context's panel."""

    async def evaluate(state: State, config: RunnableConfig) -> dict:
        ctx, turns = _ctx(config), state.get("turns", [])
        if ctx.evaluate is None or state.get("error") or not turns:  # a person may end it before anything was said
            return {}
        s = ctx.scenario
        episode = {"turns": turns, "setting": s.setting, "persona": s.persona, "strategy": s.strategy, "kept": ctx.kept}
        # A run of its own rather than a child of this one: no nested callbacks or checkpoints to pay for on every
        # episode (the verdicts are this node's output; nothing resumes inside the grading).
        result = await evaluator.ainvoke({"episode": episode}, {"configurable": ctx.evaluate.configurable()})
        return {"verdicts": result["verdicts"]}

    return evaluate


def then(update: dict, next_node: str) -> Command:
    """A turn's update, going on to `next_node`, or to `finish` once the update ends the episode.

    The node routes itself: a conditional edge after each turn cost LangGraph a traced run and a task of its own
    (issue 28). A fork point (`runner.fork_point`) is set up with the same Command, as if its last speaker's node had
    returned it.
    """
    return Command(update=update, goto="finish" if update.get("end") else next_node)


def _routed(node, next_node: str):
    """`node`, its update sent on with `then`."""

    async def turn(state: State, config: RunnableConfig) -> Command:
        return then(await node(state, config), next_node)

    turn.__name__ = node.__name__
    return turn


def build_graph(checkpointer=None, evaluator=None):
    """The compiled conversation graph; pass a Context as config['configurable']['ctx'].

    A checkpointer (e.g. LangGraph's InMemorySaver) is what forking (`nextstep branch`) and pausing for a person
    (`nextstep play`) need; plain runs go without. `evaluator`, a compiled evaluator subgraph (this layer imports
    none: the caller gives it), runs after `finish` in an `evaluate` node, grading with the Context's `evaluate`.
    """
    graph = StateGraph(State)
    graph.add_node("practitioner", _routed(practitioner_node, "persona"), destinations=("persona", "finish"))
    graph.add_node("persona", _routed(persona_node, "practitioner"), destinations=("practitioner", "finish"))
    graph.add_node("finish", finish_node)
    graph.add_edge(START, "practitioner")
    if evaluator is None:
        graph.add_edge("finish", END)
    else:
        graph.add_node("evaluate", _evaluate(evaluator))
        graph.add_edge("finish", "evaluate")
        graph.add_edge("evaluate", END)
    return graph.compile(checkpointer=checkpointer, name="conversation")


graph = build_graph()  # for LangGraph's own tools (langgraph.json); episodes run through runner.graph()
