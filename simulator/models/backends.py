"""From a Config to chat models per role: the local server, OpenAI, or any compatible endpoint."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from simulator.core.errors import UserError

from .config import Config
from .local import DEFAULT_SLOTS, MODEL_NAME, local_server
from .openai_backend import OpenAIChatModel, OutputMode, async_client

OPENAI_DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class Endpoint:
    backend: str
    base_url: str | None
    api_key: str
    output_mode: OutputMode
    default_model: str
    concurrency: int = 8  # episodes in flight unless --concurrency says otherwise: the slots of the local engine
    exit_reason: Callable[[], str | None] = lambda: None  # the local server: why it is gone, if it died

    @contextlib.asynccontextmanager
    async def models(self, config: Config) -> AsyncIterator[dict]:
        """Chat models by role, sharing one client that is closed when the block ends.

        'evaluators' is a list: --evaluator-model may name several models, which judges take in turn.
        """
        names = role_models(config)
        async with async_client(self.base_url, self.api_key, config.timeout) as client:

            def model(name: str | None) -> OpenAIChatModel:
                return OpenAIChatModel(client, name or self.default_model, output_mode=self.output_mode)

            yield {"practitioner": model(names["practitioner"]), "persona": model(names["persona"]),
                   "evaluators": [model(n) for n in names["evaluators"]]}  # fmt: skip


def role_models(config: Config) -> dict:
    """The model each role is set to, None for the endpoint's default: {'practitioner', 'persona', 'evaluators': [...]}."""
    evaluators = [n.strip() for n in (config.evaluator_model or "").split(",") if n.strip()] or [None]
    return {"practitioner": config.practitioner_model or config.model, "persona": config.persona_model or config.model,
            "evaluators": [n or config.model for n in evaluators]}  # fmt: skip


def check_reachable(base_url: str, timeout: float = 5.0) -> None:
    """A UserError if nothing answers at base_url; any HTTP answer (even 401) counts as reachable."""
    try:
        urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"--base-url {base_url}: unreachable ({reason})") from None


@contextlib.contextmanager
def endpoint(config: Config, concurrency: int | None = None) -> Iterator[Endpoint]:
    """The endpoint the config names; the local server runs only inside this block, with one parallel slot
    per episode in flight (`concurrency`, default DEFAULT_SLOTS)."""
    if config.base_url:
        check_reachable(config.base_url)
        key = os.environ.get(config.api_key_env) or "none"  # many self-hosted servers need no key
        yield Endpoint("openai-compatible", config.base_url, key, config.output_mode or "json_schema", config.model or "default",
                       concurrency or 8)
    elif config.backend == "openai":
        key = os.environ.get(config.api_key_env)
        if not key:
            raise UserError(f"--backend openai needs an API key in ${config.api_key_env}")
        yield Endpoint("openai", None, key, config.output_mode or "json_schema", OPENAI_DEFAULT_MODEL, concurrency or 8)
    else:
        with local_server(slots=concurrency or DEFAULT_SLOTS) as server:
            yield Endpoint("local", server.url, "local", config.output_mode or "llguidance", MODEL_NAME,
                           server.slots, server.exit_reason)  # fmt: skip
