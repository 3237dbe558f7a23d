"""The OpenAI-compatible model against the loopback stub: request shapes per output mode, errors."""

from __future__ import annotations

import json

import pytest
from stub_server import StubServer

from simulator.conversation.episode import PersonaState
from simulator.core.errors import ModelError
from simulator.core.records import Episode
from simulator.models.local import exit_message
from simulator.models.openai_backend import MAX_STRING_CHARS, OpenAIChatModel, bounded


def model(client, mode):
    return OpenAIChatModel(client, "m", output_mode=mode)


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "llguidance"])
async def test_structured_request_shape(mode, client):
    stub = StubServer()
    with stub as url:
        schema = PersonaState.model_json_schema()
        completion = await model(client(url), mode).complete([{"role": "user", "content": "hi"}], schema=schema, seed=5,
                                                      temperature=0.2, max_tokens=30, stop=["\n"])
    body = stub.requests[0]
    assert (body["seed"], body["temperature"], body["max_tokens"], body["stop"]) == (5, 0.2, 30, ["\n"])
    if mode == "llguidance":  # a grammar with LLGuidance's compact separators, not llama.cpp's padded JSON
        assert "response_format" not in body
        directive, _, grammar_schema = body["grammar"].partition("\nstart: %json ")
        assert directive == "%llguidance {}"
        assert json.loads(grammar_schema) == schema | {"x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}
    elif mode == "json_schema":
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "persona_state", "schema": schema, "strict": True}}
    else:
        assert body["response_format"] == {"type": "json_object", "schema": schema}
    assert schema["properties"]["interest"]["enum"] == list(range(11))  # bounded values as an enum, not min/max
    PersonaState.model_validate_json(completion.text)
    assert completion.prompt_tokens == 50 and completion.completion_tokens == 10 and completion.latency_s > 0


async def test_plain_request_has_no_response_format(client):
    stub = StubServer()
    with stub as url:
        await model(client(url), "json_schema").complete([{"role": "user", "content": "hi"}])
    assert "response_format" not in stub.requests[0] and "seed" not in stub.requests[0]


async def test_endpoint_errors_become_model_errors(client):
    with StubServer(fault=lambda n, body: (400, {}, {"error": {"message": "bad request"}})) as url:
        with pytest.raises(ModelError, match="BadRequestError"):
            await model(client(url), "json_schema").complete([{"role": "user", "content": "hi"}])
    with pytest.raises(ModelError, match="APIConnectionError"):
        await model(client("http://127.0.0.1:9/v1"), "json_schema").complete([{"role": "user", "content": "hi"}])


def test_fidelity_counts_rules_and_judges():
    def episode(**fields) -> Episode:
        return Episode.model_validate({"id": "e", "setting": "bar_club", "persona": "aloof", "strategy": "turn_back",
                                       "status": "succeeded", **fields})  # fmt: skip

    judged = {"judge": 0, "model": "m", "fidelity": {"status": "scored", "in_character": False}}
    assert episode(fidelity={"ok": True}, verdicts=[{"judge": 0, "model": "m", "fidelity": None}]).in_character is True
    assert episode(fidelity={"ok": False}, verdicts=[]).in_character is False
    assert episode(fidelity={"ok": True}, verdicts=[judged]).in_character is False
    assert episode(verdicts=[]).in_character is None


def test_a_dead_engine_is_named_by_its_signal_in_words():
    assert exit_message(-4) == "was killed by SIGILL (illegal instruction)"
    assert exit_message(-9) == "was killed by SIGKILL (killed)"
    assert exit_message(1) == "exited with code 1"


def test_a_grammar_bounds_free_strings_but_not_choices():
    schema = {"type": "object", "properties": {"reason": {"type": "string"}, "flag": {"type": "string", "enum": ["rude"]},
                                               "items": {"type": "array", "items": {"type": "string", "maxLength": 5}}}}
    assert bounded(schema)["properties"] == {"reason": {"type": "string", "maxLength": MAX_STRING_CHARS},
                                             "flag": {"type": "string", "enum": ["rude"]},
                                             "items": {"type": "array", "items": {"type": "string", "maxLength": 5}}}


def test_a_grammar_allows_one_item_per_choice_in_a_list():
    # The evaluator's two lists: turn indices to pick from, and flags each led by its name (the item in $defs, as
    # pydantic writes it). Three turns can be picked at most three times without a repeat; two flags, twice.
    turns = {"type": "object", "properties": {"turns": {"type": "array", "items": {"type": "integer", "enum": [0, 2, 4]}}}}
    assert bounded(turns)["properties"]["turns"].get("maxItems") == 3
    flag = {"type": "object", "properties": {"flag": {"type": "string", "enum": ["rude", "creepy"]},
                                             "reason": {"type": "string"}}}  # fmt: skip
    flags = {"$defs": {"raised_flag": flag}, "type": "object",
             "properties": {"flags": {"type": "array", "items": {"$ref": "#/$defs/raised_flag"}}}}  # fmt: skip
    assert bounded(flags)["properties"]["flags"].get("maxItems") == 2
    free = {"type": "array", "items": {"type": "object", "properties": {"reason": {"type": "string"}}}}
    assert "maxItems" not in bounded(free)  # no choice decides an item: nothing to count
