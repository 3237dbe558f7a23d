"""The evaluator agent as LangGraph graphs: a panel of judges grades an episode, each judge its parts, concurrently.

    evaluator:  START -Send one per judge-> judge -> collect -> END
    judge:      START -> transitions -Send one per part-> transition (each) | flags | outcome | fidelity -> verdict -> END

The runtime objects (the panel's judges and catalog) come in the run config, as the conversation graph's Context
does, so one compiled graph grades every episode and the state stays plain data. `evaluator` is what the
conversation graph runs after `finish`, and what `grade` and a Panel run alone.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, TypedDict

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from simulator.conversation.catalog import Catalog
from simulator.conversation.prompts import text_hash
from simulator.core.errors import ModelError

from .evaluator import PROMPTS, Judge, check_fidelity, find_transitions, grade_flags, grade_found, grade_outcome

STEPS = ("transitions", "transition", "flags", "outcome", "fidelity")  # the order of a verdict's calls, as asked one by one


@dataclass(frozen=True)
class Panel:
    """The judges that grade each episode (each gives its own verdict) and the catalog its setting and persona are in.

    Put one in the conversation graph's Context (`evaluate=`), or call it on an episode to grade that alone.
    """

    judges: tuple[Judge, ...]
    catalog: Catalog

    @property
    def graph(self):
        """The compiled evaluator subgraph, which reads this panel from config['configurable']['panel']."""
        return evaluator

    async def __call__(self, episode: dict, previous: list[dict] | None = None) -> list[dict]:
        """Every judge's verdict on `episode`; with `previous` (an earlier attempt's verdicts), graded ones are kept
        and only the judges whose verdict is ungraded grade again."""
        state = await evaluator.ainvoke({"episode": episode, "previous": previous or []}, {"configurable": {"panel": self}})
        return state["verdicts"]


def make_evaluator(judges: list[Judge], catalog: Catalog) -> Panel:
    """The conversation graph's evaluator: `judges` grade each episode concurrently; all verdicts are kept."""
    return Panel(tuple(judges), catalog)


async def grade(episode: dict, judge: Judge, catalog: Catalog) -> dict:
    """One judge's verdict on one episode (or gold transcript).

    A part whose output stays invalid is 'unscored' with the reason: that is the judge's answer. A call
    the endpoint fails (transport, HTTP error) makes the whole verdict 'ungraded' with the error and no
    grades: the judge never answered, so a resumed batch grades the episode again.
    """
    return (await Panel((judge,), catalog)(episode))[0]


class _Failfast:
    """A judge's model for one verdict: after one call fails, later ones fail the same way without asking, since the
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


# One judge: the transitions first, then each part of the verdict on its own branch.


class Part(TypedDict, total=False):
    """One step's answer: its value, or the endpoint's error; and the calls it made either way."""

    step: str
    n: int
    value: dict
    error: str
    calls: list[dict]


class JudgeState(TypedDict, total=False):
    episode: dict  # turns, setting, persona, strategy
    parts: Annotated[list[Part], operator.add]
    result: dict  # the verdict


def _judge(config: RunnableConfig) -> Judge:
    return config["configurable"]["judge"]


def _step(step: str, ask: Callable[..., Awaitable[dict]]):
    """A node running one grading step, `ask(judge, episode, calls, branch)`: its answer or the endpoint's error is a Part."""

    async def node(branch: dict, config: RunnableConfig) -> dict:
        judge, catalog, calls = _judge(config), config["configurable"]["panel"].catalog, []
        episode = branch["episode"]
        ep = episode | {"setting_entry": catalog.settings[episode["setting"]], "persona_entry": catalog.personas[episode["persona"]]}
        part: Part = {"step": step, "n": branch.get("n", 0)}
        try:
            part["value"] = await ask(judge, ep, calls, branch)
        except ModelError as e:  # OutputError never gets here: each step turns it into 'unscored'
            part["error"] = str(e)
        return {"parts": [part | {"calls": [c.to_dict() for c in calls]}]}

    node.__name__ = step
    return node


def _fan_out(state: JudgeState, config: RunnableConfig) -> list[Send] | str:
    """Every part of the verdict on its own branch, once the transitions are known; none if the endpoint failed."""
    [found] = state["parts"]
    if "error" in found:
        return "verdict"
    episode = state["episode"]
    return ([Send("transition", {"episode": episode, "n": n, "transition": t}) for n, t in enumerate(found["value"]["transitions"])]
            + [Send(step, {"episode": episode}) for step in ("flags", "outcome")]
            + ([Send("fidelity", {"episode": episode})] if _judge(config).fidelity_judge else []))  # fmt: skip


def _verdict(state: JudgeState, config: RunnableConfig) -> dict:
    """The parts as one verdict, with every call in the order the steps are listed; 'ungraded' if the endpoint failed."""
    judge = _judge(config)
    parts = sorted(state["parts"], key=lambda p: (STEPS.index(p["step"]), p["n"]))
    verdict = {"judge": judge.index, "model": judge.model.name, "seed": judge.seed, "temperature": judge.temperature,
               "rubric_hash": judge.rubric_hash, "prompts": {p: text_hash(judge.prompts.source(p)) for p in PROMPTS}}  # fmt: skip
    calls = [c for p in parts for c in p["calls"]]
    if errors := [p["error"] for p in parts if "error" in p]:
        return {"result": verdict | {"status": "ungraded", "error": errors[0], "unscored": [], "calls": calls}}
    found = [p["value"] for p in parts if p["step"] == "transition"]
    by = {p["step"]: p["value"] for p in parts}
    unscored = by["transitions"]["unscored"] + [
        f"turn {t['turn']} {c}: {g['reason']}" for t in found for c, g in t["conditions"].items() if g["status"] == "unscored"]
    unscored += [f"{step}: {by[step]['reason']}" for step in ("flags", "outcome") if by[step]["status"] == "unscored"]
    return {"result": verdict | {"status": "graded", "transitions": found, "flags": by["flags"], "outcome": by["outcome"],
                                  "fidelity": by.get("fidelity"), "unscored": unscored, "calls": calls}}  # fmt: skip


def build_judge():
    """One judge's graph: find the transitions, then grade each, the flags, the outcome (and fidelity) concurrently."""
    graph = StateGraph(JudgeState)
    graph.add_node("transitions", _step("transitions", lambda j, ep, calls, _: find_transitions(j, ep, calls)))
    graph.add_node("transition", _step("transition", lambda j, ep, calls, b: grade_found(j, ep, b["transition"], calls, b["n"])))
    graph.add_node("flags", _step("flags", lambda j, ep, calls, _: grade_flags(j, ep, calls, 1000)))
    graph.add_node("outcome", _step("outcome", lambda j, ep, calls, _: grade_outcome(j, ep, calls, 2000)))
    graph.add_node("fidelity", _step("fidelity", lambda j, ep, calls, _: check_fidelity(j, ep, calls, 3000)))
    graph.add_node("verdict", _verdict)
    graph.add_edge(START, "transitions")
    graph.add_conditional_edges("transitions", _fan_out, ["transition", "flags", "outcome", "fidelity", "verdict"])
    for step in ("transition", "flags", "outcome", "fidelity"):
        graph.add_edge(step, "verdict")
    graph.add_edge("verdict", END)
    return graph.compile(name="judge")


judge = build_judge()


# The panel: every judge at once.


class EvaluatorState(TypedDict, total=False):
    episode: dict  # turns, setting, persona, strategy
    previous: list[dict]  # an earlier attempt's verdicts: the graded ones are kept
    graded: Annotated[list[dict], operator.add]  # this attempt's verdicts
    verdicts: list[dict]  # every judge's, in the panel's order


def _panel(config: RunnableConfig) -> Panel:
    return config["configurable"]["panel"]


def _kept(state: EvaluatorState) -> dict[int, dict]:
    return {v["judge"]: v for v in state.get("previous") or [] if v.get("status") != "ungraded"}


def _assign(state: EvaluatorState, config: RunnableConfig) -> list[Send] | str:
    """One branch per judge that has no graded verdict yet."""
    kept = _kept(state)
    sends = [Send("judge", {"episode": state["episode"], "n": n}) for n, j in enumerate(_panel(config).judges) if j.index not in kept]
    return sends or "collect"


async def _one_judge(branch: dict, config: RunnableConfig) -> dict:
    """The n-th judge's verdict, from its own graph; its model fails fast after an endpoint error (see _Failfast)."""
    j = _panel(config).judges[branch["n"]]
    config = patch_config(config, configurable={"judge": replace(j, model=_Failfast(j.model))})
    return {"graded": [(await judge.ainvoke({"episode": branch["episode"]}, config))["result"]]}


def _collect(state: EvaluatorState, config: RunnableConfig) -> dict:
    kept, graded = _kept(state), {v["judge"]: v for v in state.get("graded", [])}
    return {"verdicts": [kept.get(j.index) or graded[j.index] for j in _panel(config).judges]}


def build_evaluator():
    """The panel's graph: each judge's graph on its own branch, then the verdicts in the panel's order."""
    graph = StateGraph(EvaluatorState)
    graph.add_node("judge", _one_judge)
    graph.add_node("collect", _collect)
    graph.add_conditional_edges(START, _assign, ["judge", "collect"])
    graph.add_edge("judge", "collect")
    graph.add_edge("collect", END)
    return graph.compile(name="evaluator")


evaluator = build_evaluator()
