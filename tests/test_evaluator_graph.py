"""The evaluator as a LangGraph graph: judges and their parts run at once, alone or inside the conversation, and
langgraph.json opens both graphs."""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from pathlib import Path

from conftest import ScriptedModel, persona_says, practitioner_says
from langgraph.pregel import Pregel
from stub_server import instance
from test_evaluator import EPISODE, OUTCOME, all_good

from evaluations.judge.evaluator import Judge
from evaluations.judge.graph import evaluator, grade, make_evaluator
from evaluations.judge.rubric import load_rubric
from simulator.conversation.graph import build_graph
from simulator.conversation.prompts import Prompts
from simulator.conversation.runner import run_episode
from simulator.core.errors import ModelError
from simulator.models.chat import Completion

ROOT = Path(__file__).resolve().parents[1]


class Overlapping:
    """A judge's model that answers each structured call with a schema-valid instance drawn from its seed, after a
    pause, and records for each call its output type and how many calls were in flight when it started."""

    def __init__(self, pause: float = 0.02):
        self.name, self.pause, self.in_flight, self.started = "overlapping", pause, 0, []

    async def complete(self, messages, *, schema=None, seed=None, **options):
        self.in_flight += 1
        self.started.append((schema["title"], self.in_flight))
        await asyncio.sleep(self.pause)
        self.in_flight -= 1
        return Completion(text=json.dumps(instance(schema, random.Random(seed))), finish_reason="stop",
                          prompt_tokens=10, completion_tokens=5, model=self.name)  # fmt: skip


def panel(catalog, models):
    rubric, rubric_hash = load_rubric()
    return [Judge(m, Prompts(catalog.prompt_dirs), rubric, rubric_hash, seed=n, index=n) for n, m in enumerate(models)]


async def test_the_transitions_come_first_then_every_part_of_every_judge_at_once(catalog):
    """Issue 14: each judge finds the transitions alone, then grades the transition, the flags and the outcome at once;
    the judges of a panel grade at once. Graded one after another, no two calls would ever be in flight."""
    model = Overlapping()
    [verdict] = await make_evaluator(panel(catalog, [model]), catalog)(EPISODE)
    assert verdict.status == "graded" and len(verdict.transitions) == 1
    assert model.started[0] == ("transition_turns", 1)  # alone: the parts need the transitions
    assert {title for title, _ in model.started[1:4]} == {"transition_grades", "flags", "outcome"}
    assert max(n for _, n in model.started) == 3

    model = Overlapping()
    verdicts = await make_evaluator(panel(catalog, [model] * 3), catalog)(EPISODE)
    assert [v.judge for v in verdicts] == [0, 1, 2] and {v.status for v in verdicts} == {"graded"}
    assert model.started[:3] == [("transition_turns", 1), ("transition_turns", 2), ("transition_turns", 3)]
    assert max(n for _, n in model.started) == 9  # three judges, three parts each


async def test_the_evaluator_alone_gives_the_verdicts_it_gives_inside_the_conversation(make_context, catalog):
    p = ScriptedModel(practitioner_says("Those peaches smell great.", "small_talk")
                      + practitioner_says("I bake on Sundays, want to swap numbers?", "ask"), "p")  # fmt: skip
    q = ScriptedModel(persona_says("They do, I always buy too many.", 5, 5) + persona_says("Sure, it's 555 0199.", 7, 7, True), "q")
    judges = panel(catalog, [Overlapping(0.0), Overlapping(0.0)])
    record = await run_episode(make_context(p, q, evaluate=make_evaluator(judges, catalog)), backend="scripted")
    assert [v.status for v in record.verdicts] == ["graded", "graded"] and record.verdicts[0].transitions
    episode = record.transcript()
    assert await make_evaluator(judges, catalog)(episode) == record.verdicts
    assert await grade(episode, judges[1], catalog) == record.verdicts[1]


async def test_one_judges_endpoint_failure_leaves_the_other_judges_verdict_graded(catalog):
    # judge 0's endpoint fails on its first call, so it grades nothing more; judge 1 grades all its parts meanwhile
    failing = ScriptedModel([ModelError("APIConnectionError: reset")], "judge0")
    answering = ScriptedModel([{"turns": [4]}, all_good(), {"flags": []}, OUTCOME], "judge1")
    verdicts = await make_evaluator(panel(catalog, [failing, answering]), catalog)(EPISODE)
    failing.assert_used_up()
    answering.assert_used_up()
    assert [(v.judge, v.status) for v in verdicts] == [(0, "ungraded"), (1, "graded")]
    assert verdicts[0].error == "APIConnectionError: reset" and verdicts[0].calls == []
    assert len(verdicts[1].calls) == 4 and verdicts[1].outcome.exchanged == "number"


def test_langgraph_json_opens_the_conversation_and_the_evaluator_graphs():
    """langgraph.json names each graph by module:attribute, as `langgraph dev` and Studio load it."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]  # the project itself, installed, so its packages import by name
    nodes = {"conversation": {"practitioner", "persona", "finish"},
             "evaluator": {"transitions", "transition", "flags", "outcome", "fidelity", "verdict"}}  # fmt: skip
    assert set(config["graphs"]) == set(nodes)
    for name, entry in config["graphs"].items():
        module, attr = entry["path"].rsplit(":", 1)
        assert "/" not in module  # module syntax: a file path would be loaded outside its package, breaking relative imports
        graph = getattr(importlib.import_module(module), attr)
        assert isinstance(graph, Pregel) and graph.checkpointer is None  # the server brings its own checkpointer
        assert set(graph.get_graph().nodes) - {"__start__", "__end__"} == nodes[name]


def test_the_conversation_runs_the_evaluator_as_its_subgraph():
    graph = build_graph(evaluator=evaluator)
    assert [name for name, _ in graph.get_subgraphs()] == ["evaluate"]
    assert {"evaluate:verdict", "evaluate:flags"} <= set(graph.get_graph(xray=True).nodes)
    assert "evaluate" not in build_graph().get_graph().nodes
