"""Every schema the toolkit can send in json_schema mode stays inside the strict subset every provider takes."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says
from stub_server import instance

import evaluations
from evaluations.judge.evaluator import Judge, _flags_model, _grades_model, _outcome_model, _transitions_model, cited_schema
from evaluations.judge.graph import grade
from evaluations.judge.gold import load_gold
from evaluations.judge.rubric import CONDITIONS, FLAGS, load_rubric
from simulator.conversation.catalog import Profile
from simulator.conversation.episode import PersonaState, PractitionerLabel
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import Prompts
from simulator.conversation.runner import run_episode
from simulator.models.chat import Completion, json_schema

# The keywords OpenAI's strict mode and the other strict providers all accept. No length, range, pattern or
# format keyword, no const (a one-value enum instead), no default: values are bounded by enums and lengths
# are checked by pydantic after parsing.
ALLOWED = {"type", "properties", "required", "additionalProperties", "items", "enum", "anyOf", "$ref", "$defs",
           "description", "title"}  # fmt: skip
JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "null": type(None)}


def strict_problems(schema: dict, where: str = "$") -> list[str]:
    """Every place `schema` leaves the strict subset: `strict_problems({'type': 'string', 'maxLength': 9})` -> one."""
    problems = [f"{where}: {key} is outside the strict subset" for key in schema.keys() - ALLOWED]
    if "$ref" in schema and len(schema) > 1:
        problems.append(f"{where}: $ref beside other keywords")
    if schema.get("type") == "object":
        if schema.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties must be false")
        if set(schema.get("required", [])) != set(schema.get("properties", {})):
            problems.append(f"{where}: every property must be required (null instead of optional)")
    if "enum" in schema:
        kind = JSON_TYPES.get(schema.get("type"))
        if not schema["enum"] or kind is None or not all(type(v) is kind for v in schema["enum"]):
            problems.append(f"{where}: enum must be a non-empty list of values of its one type")
    children = [(f"{where}.{k}", v) for k, v in schema.get("properties", {}).items()]
    children += [(f"{where}.$defs.{k}", v) for k, v in schema.get("$defs", {}).items()]
    children += [(f"{where}.anyOf[{i}]", v) for i, v in enumerate(schema.get("anyOf", []))]
    children += [(f"{where}[]", schema["items"])] if "items" in schema else []
    return problems + [p for path, child in children for p in strict_problems(child, path)]


class SchemaAnswering:
    """Answers every structured call with an instance of the schema it was sent, as a strict endpoint would."""

    name = "schemas"

    def __init__(self):
        self.requests, self.rng = [], random.Random(0)

    async def complete(self, messages, *, schema=None, **options):
        self.requests.append({"schema": schema})
        return Completion(text=json.dumps(instance(schema, self.rng)), finish_reason="stop")


def test_the_walker_finds_what_strict_mode_rejects():
    assert strict_problems({"type": "object", "properties": {"a": {"type": "string", "maxLength": 9}}, "required": ["a"],
                            "additionalProperties": False}) == ["$.a: maxLength is outside the strict subset"]
    assert strict_problems({"type": "object", "properties": {"a": {"const": "x", "type": "string"}}, "required": []}) == [
        "$: additionalProperties must be false", "$: every property must be required (null instead of optional)",
        "$.a: const is outside the strict subset"]


def sent_schemas(catalog) -> dict[str, dict]:
    """Every schema a run sends: one scripted episode, then every gold transcript graded with the fidelity judge."""
    schemas = {}
    p = ScriptedModel(practitioner_says("Hi. Can I get your number?", "ask"), "p")
    q = ScriptedModel(persona_says("Sure!", 6, 6, True), "q")
    ctx = Context(p, q, catalog, Prompts(catalog.prompt_dirs), Scenario("bar_club", "aloof", "turn_back", Profile()), 1, max_turns=1)
    asyncio.run(run_episode(ctx, backend="scripted"))
    schemas |= {r["schema"]["title"]: r["schema"] for r in p.requests + q.requests if r["schema"]}
    rubric, rubric_hash = load_rubric()
    model = SchemaAnswering()
    judge = Judge(model, Prompts(catalog.prompt_dirs), rubric, rubric_hash, fidelity_judge=True)
    for item in load_gold(Path(evaluations.__file__).parent / "gold" / "team.jsonl", catalog):
        verdict = asyncio.run(grade(item.episode(), judge, catalog))
        assert verdict.status == "graded" and not verdict.unscored, verdict
        schemas |= {f"{r['schema']['title']} {n} ({item.id})": r["schema"] for n, r in enumerate(model.requests)}
        model.requests.clear()
    return schemas


def test_every_schema_a_run_sends_is_strict(catalog):
    schemas = sent_schemas(catalog)
    titles = {s["title"] for s in schemas.values()}
    assert titles == {"practitioner_intent", "persona_state", "transition_turns", "transition_grades", "flags", "outcome",
                      "fidelity"}  # fmt: skip
    assert {name: strict_problems(s) for name, s in schemas.items() if strict_problems(s)} == {}


@pytest.mark.parametrize("schema", [
    json_schema(PractitionerLabel), json_schema(PersonaState),
    cited_schema(_outcome_model(), {"outcome": ("1.1", "3.1")}), cited_schema(_outcome_model(), {"outcome": ()}),
    json_schema(_transitions_model((0,))), json_schema(_transitions_model(())),  # one practitioner turn; none
    cited_schema(_grades_model(("timing",)), {"timing": ("4.2",)}),    # a re-ask about one condition, one citable sentence
    cited_schema(_grades_model(CONDITIONS), {c: ("0.1", "2.1") for c in CONDITIONS}),
    cited_schema(_flags_model(("creepy",)), {"flags": ("0.1",)}),     # a re-ask about one flag
    cited_schema(_flags_model(FLAGS), {"flags": ()}),                 # no citable sentence
], ids=lambda s: s["title"])  # fmt: skip
def test_edge_case_schemas_are_strict(schema):
    assert strict_problems(schema) == []


def test_citable_ids_fill_the_schema_and_none_leave_a_plain_string():
    """The sentences a field may cite are the schema's enum; with none it is a plain string, never a placeholder."""
    grades = cited_schema(_grades_model(("timing", "setting")), {"timing": ("4.2", "4.3"), "setting": ()})
    sentence = {c: grades["$defs"][f"evidence_{c}"]["properties"]["sentence"]["anyOf"][0] for c in ("timing", "setting")}
    assert sentence == {"timing": {"enum": ["4.2", "4.3"], "type": "string"}, "setting": {"type": "string"}}
    assert "ids of" not in json.dumps(grades)
    assert "ids of" in json.dumps(json_schema(_grades_model(("timing",))))  # the model's own schema keeps the placeholder
    with pytest.raises(ValueError, match="left without its ids"):
        cited_schema(_grades_model(("timing", "setting")), {"timing": ("4.2",)})


def test_persona_state_bounds_its_ratings_with_enums():
    interest = json_schema(PersonaState)["properties"]["interest"]
    assert interest["enum"] == list(range(11)) and interest["type"] == "integer"
