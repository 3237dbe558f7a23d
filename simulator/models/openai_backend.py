"""The OpenAI-compatible chat model: OpenAI, vLLM, Ollama, llama.cpp, our local server."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Literal

import openai

from simulator.core.errors import ModelError

from .chat import MAX_STRING_CHARS, Completion, Message
from .prices import Price, call_cost

OutputMode = Literal["json_schema", "json_object", "llguidance"]
# Compact JSON: llama.cpp's default JSON grammar lets a small model pad between tokens with newlines until
# max_tokens runs out; LLGuidance's options fix the separators instead.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
def bounded(schema):
    """Every free string capped at MAX_STRING_CHARS, which a grammar enforces while decoding (so a small model
    cannot ramble until max_tokens runs out): `bounded({'type': 'string'})` -> {'type': 'string', 'maxLength': 300}."""
    if isinstance(schema, list):
        return [bounded(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    if out.get("type") == "string" and "enum" not in out:
        out.setdefault("maxLength", MAX_STRING_CHARS)
    return out


def structured_fields(schema: dict, mode: OutputMode) -> dict:
    """The request fields that constrain the answer to `schema`.

    json_schema: OpenAI's strict response_format; json_object: llama.cpp's json_object with a schema;
    llguidance: a llama.cpp `grammar` (servers built with LLGuidance, as the embedded engine is): compact JSON,
    strings no longer than any output type accepts.
    """
    if mode == "llguidance":
        return {"grammar": "%llguidance {}\nstart: %json " + json.dumps(bounded(schema) | {"x-guidance": COMPACT})}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    name = schema.get("title", "output")
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}


def async_client(base_url: str | None, api_key: str, timeout: float | None = None) -> openai.AsyncOpenAI:
    """The client the roles share: openai's aiohttp transport, with no retries of its own (ours is the only layer).

    aiohttp takes about half the client CPU per call of the default httpx2 transport, whose pool probes
    every idle connection on each request (benchmarks/README.md); use it as `async with async_client(...) as client`.
    """
    options = {"timeout": timeout} if timeout else {}
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                              http_client=openai.DefaultAioHttpClient(**options), **options)  # fmt: skip


RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; the server's Retry-After wins when it gives one."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0  # a server may ask for a long pause; beyond this we would rather fail

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try `attempt + 1`: `RetryPolicy(base_s=1).delay(2, None)` is in [0, 4]."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        return random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


def retry_after(response) -> float | None:
    """Seconds from a `retry-after-ms` or `retry-after` header (seconds or an HTTP date), else None."""
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def retryable(error: openai.APIError) -> bool:
    """Timeouts, dropped connections, 408/409/429 and 5xx are worth another try; other 4xx are not."""
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    status = getattr(error, "status_code", None)
    return status is not None and (status in RETRYABLE_STATUS or status >= 500)


def failure(error: openai.APIError) -> str:
    """`BadRequestError: …`; a transport failure is named by its root cause (the aiohttp transport reports
    a refused or dropped connection as a timeout): `APIConnectionError: Server disconnected`."""
    if not isinstance(error, openai.APIConnectionError):
        return f"{type(error).__name__}: {error}"
    root = error
    while root.__cause__ or root.__context__:
        root = root.__cause__ or root.__context__
    timeout = isinstance(root, (TimeoutError, asyncio.TimeoutError)) or (root is error and isinstance(error, openai.APITimeoutError))
    return f"{'APITimeoutError' if timeout else 'APIConnectionError'}: {root}"


class OpenAIChatModel:
    """One model name on one OpenAI-compatible endpoint; several roles may share the client."""

    def __init__(self, client: openai.AsyncOpenAI, name: str, *, output_mode: OutputMode = "json_schema",
                 retry: RetryPolicy = RetryPolicy(), price: Price | None = None):
        # Ours is the only retry layer: the client's own retries would multiply with it.
        self.client = client.with_options(max_retries=0)
        self.name = name
        self.output_mode = output_mode
        self.retry = retry
        self.price = price  # None: unknown, so every call's cost is unknown

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion:
        # The body chat.completions.create() would send, in its key order; posting it directly skips the
        # client's per-call type-driven transform and response model construction (the largest client CPU
        # costs: benchmarks/RESULTS.md) which are identities for plain dicts of strings and numbers.
        body = {"model": self.name, "messages": messages, "max_tokens": max_tokens}
        if schema:
            body |= structured_fields(schema, self.output_mode)
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        body["temperature"] = temperature
        for attempt in range(self.retry.attempts):
            start = time.perf_counter()
            try:
                response = await self.client.post(  # security: send the API key as create() does
                    "/chat/completions", body=body, cast_to=object, options={"security": {"bearer_auth": True}}
                )
                break
            except openai.APIError as e:
                if not retryable(e) or attempt == self.retry.attempts - 1:
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    raise ModelError(f"{failure(e)}{tries}") from None
                await asyncio.sleep(self.retry.delay(attempt, retry_after(getattr(e, "response", None))))
        latency = time.perf_counter() - start
        c = completion(response, self.name, latency, attempt)
        return dataclasses.replace(c, cost_usd=call_cost(self.price, c.prompt_tokens, c.cached_tokens, c.completion_tokens))


def completion(response: object, name: str, latency: float, retries: int) -> Completion:
    """A Completion from a chat completion's JSON; `name` stands in when the endpoint names no model."""
    if not isinstance(response, dict):
        raise ModelError(f"the endpoint answered {type(response).__name__}, not a chat completion object")
    choices = response.get("choices")
    if not choices:
        raise ModelError("the endpoint returned no choices")
    choice = choices[0]
    usage = response.get("usage") or {}
    return Completion(
        text=((choice.get("message") or {}).get("content") or "").strip(),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),  # None when not reported: unknown, not zero
        completion_tokens=usage.get("completion_tokens"),
        latency_s=latency,
        model=response.get("model") or name,
        retries=retries,
        cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
    )
