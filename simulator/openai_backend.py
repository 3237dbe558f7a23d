"""The OpenAI-compatible chat model: OpenAI, vLLM, Ollama, llama.cpp, our local server."""

from __future__ import annotations

import time
from typing import Literal

import openai

from .chat import Completion, Message
from .errors import ModelError

OutputMode = Literal["json_schema", "json_object"]


def response_format(schema: dict, mode: OutputMode) -> dict:
    """The request's response_format: OpenAI's strict json_schema, or llama.cpp's json_object+schema."""
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": schema.get("title", "output"), "schema": schema, "strict": True}}


class OpenAIChatModel:
    """One model name on one OpenAI-compatible endpoint; several roles may share the client."""

    def __init__(self, client: openai.AsyncOpenAI, name: str, *, output_mode: OutputMode = "json_schema"):
        self.client = client
        self.name = name
        self.output_mode = output_mode

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
        extra = {"response_format": response_format(schema, self.output_mode)} if schema else {}
        if seed is not None:
            extra["seed"] = seed
        if stop:
            extra["stop"] = stop
        start = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(
                model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature, **extra
            )
        except openai.APIError as e:
            raise ModelError(f"{type(e).__name__}: {e}") from None
        latency = time.perf_counter() - start
        if not response.choices:
            raise ModelError("the endpoint returned no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=(choice.message.content or "").strip(),
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
            model=response.model or self.name,
        )
