"""The OpenAI-compatible chat model: OpenAI, vLLM, Ollama, llama.cpp, our local server."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import random
import time
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import openai

from simulator.core.errors import ModelError
from simulator.core.redact import redact

from .chat import MAX_REQUEST_CHARS, MAX_STRING_CHARS, Completion, Message
from .limiter import Limiter
from .prices import Price, call_cost

OutputMode = Literal["json_schema", "json_object", "llguidance"]
# Compact JSON: llama.cpp's default JSON grammar lets a small model pad between tokens with newlines until
# max_tokens runs out; LLGuidance's options fix the separators instead.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
def bounded(schema, defs: dict | None = None):
    """The schema with the bounds a grammar enforces while decoding, so a small model cannot ramble or repeat itself
    until max_tokens runs out: every free string capped at MAX_STRING_CHARS, and a list of choices (items from an enum,
    or objects led by one, as a flag with its evidence) at one item per choice, since a repeated choice says nothing
    more (`choices`). Strict json_schema forbids these keywords; lengths are checked after parsing on every backend.
    `bounded({'type': 'string'})` -> {'type': 'string', 'maxLength': 300}."""
    if isinstance(schema, list):
        return [bounded(v, defs) for v in schema]
    if not isinstance(schema, dict):
        return schema
    defs = schema.get("$defs", {}) if defs is None else defs
    out = {k: bounded(v, defs) for k, v in schema.items()}
    if out.get("type") == "string" and "enum" not in out:
        out.setdefault("maxLength", MAX_STRING_CHARS)
    if out.get("type") == "array" and (n := choices(out.get("items"), defs)):
        out.setdefault("maxItems", n)
    return out


def choices(item, defs: dict) -> int | None:
    """How many distinct values a list item can take, where an enum decides it (its own, or its first property's):
    `choices({'enum': [0, 2]}, {})` -> 2; None where it is free."""
    if isinstance(item, dict) and "$ref" in item:
        item = defs.get(item["$ref"].rpartition("/")[2])
    if not isinstance(item, dict):
        return None
    if "enum" in item:
        return len(item["enum"])
    first = next(iter((item.get("properties") or {}).values()), None)
    return len(first["enum"]) if isinstance(first, dict) and "enum" in first else None


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
    """Capped exponential backoff with full jitter, after the server's Retry-After when it gives one (so calls
    throttled together do not all come back together); a Retry-After beyond `max_retry_after_s` fails the call."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0  # a server may ask for a long pause; beyond this we would rather fail

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try `attempt + 1`: `RetryPolicy(base_s=1).delay(2, None)` is in [0, 4],
        `RetryPolicy(base_s=1).delay(0, 3)` in [3, 4]."""
        return max(retry_after or 0.0, 0.0) + random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


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


def failure(error: openai.APIError | TimeoutError, deadline: float | None = None) -> str:
    """`BadRequestError: …`; a transport failure is named by its root cause (the aiohttp transport reports
    a refused or dropped connection as a timeout): `APIConnectionError: Server disconnected`."""
    if isinstance(error, TimeoutError):  # our own deadline on the whole request
        return f"APITimeoutError: no whole answer within the {deadline:g} s timeout"
    if not isinstance(error, openai.APIConnectionError):
        return f"{type(error).__name__}: {error}"
    root = error
    while root.__cause__ or root.__context__:
        root = root.__cause__ or root.__context__
    timeout = isinstance(root, (TimeoutError, asyncio.TimeoutError)) or (root is error and isinstance(error, openai.APITimeoutError))
    return f"{'APITimeoutError' if timeout else 'APIConnectionError'}: {root}"


class OpenAIChatModel:
    """One model name on one OpenAI-compatible endpoint; several roles may share the client and the limiter."""

    def __init__(self, client: openai.AsyncOpenAI, name: str, *, output_mode: OutputMode = "json_schema",
                 retry: RetryPolicy = RetryPolicy(), deadline: float | None = None, limiter: Limiter | None = None,
                 price: Price | None = None):
        # Ours is the only retry layer: the client's own retries would multiply with it.
        self.client = client.with_options(max_retries=0)
        self.name = name
        self.output_mode = output_mode
        self.retry = retry
        self.price = price  # None: unknown, so every call's cost is unknown
        self.limiter = limiter or Limiter(10**6)  # alone, no bound; Endpoint.models gives its roles one limiter
        # The client's timeout bounds each read; `deadline` (default: the same seconds) bounds a request from sending
        # it to the answer's last byte, so a server that trickles bytes cannot hold a call for minutes.
        self.deadline = deadline or (client.timeout if isinstance(client.timeout, (int, float)) else None)

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
        size = sum(len(m.get("content") or "") for m in messages)
        if size > MAX_REQUEST_CHARS:
            raise ModelError(f"request of {size:,} characters not sent: over the cap of {MAX_REQUEST_CHARS:,}")
        body = {"model": self.name, "messages": messages, "max_tokens": max_tokens}
        if schema:
            body |= structured_fields(schema, self.output_mode)
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        body["temperature"] = temperature
        for attempt in range(self.retry.attempts):
            ticket = await self.limiter.enter()
            try:
                start = time.perf_counter()
                async with asyncio.timeout(self.deadline):
                    response = await self.client.post(  # security: send the API key as create() does
                        "/chat/completions", body=body, cast_to=object, options={"security": {"bearer_auth": True}}
                    )
                ticket.ok = True
                break
            except (openai.APIError, TimeoutError) as e:
                ticket.throttled, error = getattr(e, "status_code", None) == 429, e
            finally:
                self.limiter.leave(ticket)  # before the wait below: a retry's wait holds no slot
            tries = f" after {attempt + 1} tries" if attempt else ""
            if isinstance(error, openai.APIError) and not retryable(error) or attempt == self.retry.attempts - 1:
                raise ModelError(self._hidden(f"{failure(error, self.deadline)}{tries}"))
            wait = retry_after(getattr(error, "response", None))
            if wait is not None and wait > self.retry.max_retry_after_s:
                raise ModelError(self._hidden(f"{failure(error)}{tries}: the endpoint asks to wait {wait:.0f} s (Retry-After), "
                                              f"longer than the {self.retry.max_retry_after_s:.0f} s nextstep waits"))
            await asyncio.sleep(self.retry.delay(attempt, wait))
        latency = time.perf_counter() - start
        c = completion(response, self.name, latency, attempt)
        return dataclasses.replace(c, cost_usd=call_cost(self.price, c.prompt_tokens, c.cached_tokens, c.completion_tokens))

    def _hidden(self, message: str) -> str:
        """An error message without the key or other credentials an endpoint may quote back (it is stored and logged)."""
        return redact(message, [self.client.api_key, urllib.parse.urlsplit(str(self.client.base_url)).password])


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
