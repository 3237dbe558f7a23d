"""The one model interface the graph sees, and structured output with bounded re-asks."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from simulator.core.errors import OutputError
from simulator.core.files import validation_message
from simulator.core.records import Call

Message = dict[str, str]
# The longest free text an output type may hold (a judge's reason): checked after parsing on every backend;
# strict json_schema carries no length limits, a grammar (the local engine's llguidance mode) enforces it.
MAX_STRING_CHARS = 300
# A line of dialogue is asked for in ~48 tokens (about 250 characters); a longer one is an invalid answer, re-asked,
# or it would be sent back in every later prompt and stored.
MAX_LINE_CHARS = 1_000
# An invalid answer is shown back to the model so it can correct it; no more than this much of it.
MAX_SHOWN_BACK_CHARS = 2_000
# No request of more characters is sent (the messages' text): far beyond any context window, a guard, not a budget.
MAX_REQUEST_CHARS = 500_000
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # None: the endpoint reported no usage
    completion_tokens: int | None = None
    latency_s: float = 0.0
    model: str = ""
    retries: int = 0
    cached_tokens: int | None = None  # prompt tokens the server reused from its cache, where it says
    cost_usd: float | None = None  # None: the price or the tokens are unknown (models/prices.py)
    from_cache: bool = False  # answered by the response cache (simulator.models.cache), not the endpoint
    key: str | None = None  # the request's cache key


class ChatModel(Protocol):
    """Anything that can answer a list of chat messages, optionally as JSON matching `schema`."""

    name: str

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion: ...


def _call(role: str, purpose: str, model: ChatModel, seed: int | None, c: Completion, error: str | None = None) -> Call:
    return Call(role=role, purpose=purpose, model=c.model or model.name, seed=seed, prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens, latency_s=round(c.latency_s, 4), finish_reason=c.finish_reason,
                retries=c.retries, ok=error is None, error=error, cached_tokens=c.cached_tokens, cost_usd=c.cost_usd,
                from_cache=c.from_cache, key=c.key)


async def chat(model: ChatModel, messages: list[Message], *, role: str, purpose: str, calls: list[Call], **options) -> str:
    """Plain text from one call, which is appended to `calls`."""
    completion = await model.complete(messages, **options)
    calls.append(_call(role, purpose, model, options.get("seed"), completion))
    return completion.text


@functools.lru_cache(maxsize=None)
def json_schema(output_type: type[BaseModel]) -> dict:
    """The output type's schema in OpenAI's strict form, built once per type (pydantic rebuilds it on every call).

    The openai SDK's own conversion makes every property required and closes every object; the output
    types keep inside the subset every strict provider takes (no length or range keywords: bounded
    values are enums, lengths are checked by pydantic after parsing), which tests/test_schemas.py checks.
    """
    from openai.lib._pydantic import to_strict_json_schema  # here: the chat interface alone must not load the client

    return to_strict_json_schema(output_type)


def parse(output_type: type[T], completion: Completion) -> T:
    """The completion as `output_type`, or ValueError saying why it is not."""
    if completion.finish_reason == "length":
        raise ValueError("output was cut off at max_tokens")
    try:
        return output_type.model_validate(json.loads(completion.text, strict=False))  # allow raw newlines in strings
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at character {e.pos})") from None
    except ValidationError as e:
        raise ValueError(validation_message(e)) from None


async def structured(
    model: ChatModel,
    messages: list[Message],
    output_type: type[T],
    *,
    role: str,
    purpose: str,
    calls: list[Call],
    reasks: int = 2,
    seed: int | None = None,
    schema: dict | None = None,
    **options,
) -> T:
    """`output_type` parsed from the model, re-asking up to `reasks` times with the error shown.

    `schema`, when given, is what the model is asked to follow instead of `output_type`'s own (the same shape, with
    values narrowed to this call). Every attempt is appended to `calls`; after the last one fails, OutputError is raised.
    """
    schema = schema or json_schema(output_type)
    for attempt in range(reasks + 1):
        attempt_seed = None if seed is None else seed + attempt
        completion = await model.complete(messages, schema=schema, seed=attempt_seed, **options)
        try:
            value = parse(output_type, completion)
        except ValueError as e:
            calls.append(_call(role, purpose, model, attempt_seed, completion, error=str(e)))
            error = str(e)
            messages = [
                *messages,
                {"role": "assistant", "content": completion.text[:MAX_SHOWN_BACK_CHARS]},
                {"role": "user", "content": f"That answer was invalid: {error}. Reply with the JSON object only."},
            ]
            continue
        calls.append(_call(role, purpose, model, attempt_seed, completion))
        return value
    raise OutputError(f"{role} {purpose}: invalid output after {reasks + 1} attempts: {error}")
