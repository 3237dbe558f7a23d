"""The evaluator agent as a LangGraph graph: a panel of judges grades an episode at once, each judge its parts at once.

    START -Send one per judge-> transitions -Send one per part-> transition (each) | flags | outcome | fidelity
          -> verdict -> END

The runtime objects (the judges, the catalog) come in the run config (`Panel.configurable()`), as the conversation
graph's Context does, so one compiled graph grades every episode and the state stays plain data. `evaluator` is
what the conversation graph runs after `finish`, and what a Panel, and so `grade`, runs alone.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from simulator.conversation.catalog import Catalog
from simulator.core.errors import ModelError
from simulator.core.records import Call, Verdict

from .evaluator import PROMPTS, Judge, check_fidelity, find_transitions, grade_flags, grade_found, grade_outcome

STEPS = ("transitions", "transition", "flags", "outcome", "fidelity")  # a verdict lists its calls in this order
PARTS = STEPS[1:]


@dataclass(frozen=True)
class Panel:
    """The judges that grade each episode (each gives its own verdict) and the catalog its setting and persona are in.

    Put one in the conversation graph's Context (`evaluate=`), or call it on an episode to grade that alone.
    """

    judges: tuple[Judge, ...]
    catalog: Catalog

    @property
    def graph(self):
        """The compiled evaluator graph."""
        return evaluator

    def configurable(self) -> dict:
        """What the graph reads from config['configurable'] while it grades one episode: the catalog, and the judges,
        each with its own fail-fast model."""
        return {"catalog": self.catalog, "judges": [replace(j, model=_Failfast(j.model)) for j in self.judges]}

    async def __call__(self, episode: dict, previous: list[Verdict] | None = None) -> list[Verdict]:
        """Every judge's verdict on `episode`; with `previous` (an earlier attempt's verdicts), graded ones are kept
        and only the judges whose verdict is ungraded grade again."""
        state = await evaluator.ainvoke({"episode": episode, "previous": previous or []}, {"configurable": self.configurable()})
        return [Verdict.model_validate(v) for v in state["verdicts"]]


def make_evaluator(judges: list[Judge], catalog: Catalog) -> Panel:
    """The conversation graph's evaluator: `judges` grade each episode concurrently; all verdicts are kept."""
    return Panel(tuple(judges), catalog)


async def grade(episode: dict, judge: Judge, catalog: Catalog) -> Verdict:
    """One judge's verdict on one episode (or gold transcript).

    A part whose output stays invalid is 'unscored' with the reason: that is the judge's answer. A call
    the endpoint fails (transport, HTTP error) makes the whole verdict 'ungraded' with the error and no
    grades: the judge never answered, so a resumed batch grades the episode again.
    """
    return (await Panel((judge,), catalog)(episode))[0]


class _Failfast:
    """A judge's model for one episode: after one call fails, later ones fail the same way without asking, since the
    verdict is ungraded whatever the judge's other parts answer (calls already under way still finish and count)."""

    def __init__(self, model):
        self.model, self.name, self.error = model, model.name, None

    async def complete(self, messages, **options):
        if self.error is not None:
            raise self.error
        try:
            return await self.model.complete(messages, **options)
        except ModelError as e:
            self.error = e
            raise


class Part(TypedDict, total=False):
    """One step's answer for one judge: its value, or the endpoint's error; and the calls it made either way."""

    judge: int  # the judge's place in the panel
    step: str
    n: int  # which transition, for the step that grades one
    value: dict
    error: str
    calls: list[Call]


class State(TypedDict, total=False):
    episode: dict  # turns, setting, persona, strategy
    previous: list[Verdict]  # an earlier attempt's verdicts: the graded ones are kept
    parts: Annotated[list[Part], operator.add]
    verdicts: list[dict]  # every judge's, in the panel's order: plain data, as Verdict records take it


def _judges(config: RunnableConfig) -> list[Judge]:
    return config["configurable"]["judges"]


def _kept(state: State) -> dict[int, Verdict]:
    return {v.judge: v for v in state.get("previous") or [] if v.graded}


async def _assign(state: State, config: RunnableConfig) -> list[Send] | str:
    """A branch for each judge without a graded verdict yet."""
    kept = _kept(state)
    sends = [Send("transitions", {"episode": state["episode"], "judge": n}) for n, j in enumerate(_judges(config)) if j.index not in kept]
    return sends or "verdict"


def _episode(branch: dict, config: RunnableConfig) -> dict:
    """The episode as a judge's steps read it: with its setting's and persona's catalog entries, and the system message
    its parts share once the transitions step has rendered it (carried in the parts' branches: rendered once a judge)."""
    catalog, episode = config["configurable"]["catalog"], branch["episode"]
    entries = {"setting_entry": catalog.settings[episode["setting"]], "persona_entry": catalog.personas[episode["persona"]]}
    return episode | entries | ({"system": branch["system"]} if "system" in branch else {})


async def _answer(step: str, ask: Callable[..., Awaitable[dict]], branch: dict, config: RunnableConfig, ep: dict) -> dict:
    """One judge's grading step, `ask(judge, ep, calls, branch)`: its answer or the endpoint's error, as a Part."""
    judge, calls = _judges(config)[branch["judge"]], []
    part: Part = {"judge": branch["judge"], "step": step, "n": branch.get("n", 0)}
    try:
        part["value"] = await ask(judge, ep, calls, branch)
    except ModelError as e:  # OutputError never gets here: each step turns it into 'unscored'
        part["error"] = str(e)
    return {"parts": [part | {"calls": calls}]}


def _step(step: str, ask: Callable[..., Awaitable[dict]]):
    """A node for one judge's grading step (see _answer)."""

    async def node(branch: dict, config: RunnableConfig) -> dict:
        return await _answer(step, ask, branch, config, _episode(branch, config))

    return node


async def _transitions(branch: dict, config: RunnableConfig) -> Command:
    """One judge finds the transitions, then every part of its verdict goes on a branch of its own. After an endpoint
    error the parts still run, failing at once (see _Failfast), so that every judge's branches end together."""
    ep = _episode(branch, config)
    update = await _answer("transitions", lambda j, ep, calls, _: find_transitions(j, ep, calls), branch, config, ep)
    [part] = update["parts"]
    b = {"episode": branch["episode"], "judge": branch["judge"]} | ({"system": ep["system"]} if "system" in ep else {})
    found = part["value"]["transitions"] if "value" in part else []
    return Command(update=update, goto=[Send("transition", b | {"n": n, "transition": t}) for n, t in enumerate(found)]
                   + [Send("flags", b), Send("outcome", b)]
                   + ([Send("fidelity", b)] if _judges(config)[branch["judge"]].fidelity_judge else []))  # fmt: skip


def _verdict_of(judge: Judge, parts: list[Part]) -> dict:
    """One judge's parts as its verdict (a Verdict record's data), every call in the order of STEPS; 'ungraded' if the
    endpoint failed."""
    parts = sorted(parts, key=lambda p: (STEPS.index(p["step"]), p["n"]))
    verdict = {"judge": judge.index, "model": judge.model.name, "seed": judge.seed, "temperature": judge.temperature,
               "rubric_hash": judge.rubric_hash, "prompts": {p: judge.prompts.hash(p) for p in PROMPTS}}  # fmt: skip
    calls = [c.model_dump() for p in parts for c in p["calls"]]
    if errors := [p["error"] for p in parts if "error" in p]:
        return verdict | {"status": "ungraded", "error": errors[0], "unscored": [], "calls": calls}
    found = [p["value"] for p in parts if p["step"] == "transition"]
    by = {p["step"]: p["value"] for p in parts}
    unscored = by["transitions"]["unscored"] + [
        f"turn {t['turn']} {c}: {g['reason']}" for t in found for c, g in t["conditions"].items() if g["status"] == "unscored"]
    unscored += [f"{step}: {by[step]['reason']}" for step in ("flags", "outcome") if by[step]["status"] == "unscored"]
    return verdict | {"status": "graded", "transitions": found, "judge_added": by["transitions"]["judge_added"],
                       "flags": by["flags"], "outcome": by["outcome"], "fidelity": by.get("fidelity"), "unscored": unscored,
                       "calls": calls}  # fmt: skip


async def _verdicts(state: State, config: RunnableConfig) -> dict:
    kept, parts = _kept(state), state.get("parts", [])
    return {"verdicts": [kept[j.index].model_dump() if j.index in kept else _verdict_of(j, [p for p in parts if p["judge"] == n])
                         for n, j in enumerate(_judges(config))]}  # fmt: skip


def build_evaluator():
    """The evaluator graph: each judge finds the transitions, then grades each, the flags, the outcome (and fidelity)."""
    graph = StateGraph(State)
    graph.add_node("transitions", _transitions, destinations=PARTS)
    graph.add_node("transition", _step("transition", lambda j, ep, calls, b: grade_found(j, ep, b["transition"], calls, b["n"])))
    graph.add_node("flags", _step("flags", lambda j, ep, calls, _: grade_flags(j, ep, calls, 1000)))
    graph.add_node("outcome", _step("outcome", lambda j, ep, calls, _: grade_outcome(j, ep, calls, 2000)))
    graph.add_node("fidelity", _step("fidelity", lambda j, ep, calls, _: check_fidelity(j, ep, calls, 3000)))
    graph.add_node("verdict", _verdicts)  # once: every judge's branches end in the same step
    graph.add_conditional_edges(START, _assign, ["transitions", "verdict"])
    for part in PARTS:
        graph.add_edge(part, "verdict")
    graph.add_edge("verdict", END)
    return graph.compile(name="evaluator")


evaluator = build_evaluator()
