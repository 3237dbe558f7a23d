"""From a Config to chat models per role: the local server, OpenAI, or any compatible endpoint."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from simulator.core.errors import UserError

from .config import Config
from .local import DEFAULT_SLOTS, MODEL_NAME, local_server
from .openai_backend import OpenAIChatModel, OutputMode, async_client
from .prices import Rates, load_prices, price_of

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
    prices: dict[str, Rates] = field(default_factory=dict)  # the user's prices.toml

    @contextlib.asynccontextmanager
    async def models(self, config: Config) -> AsyncIterator[dict]:
        """Chat models by role, sharing one client that is closed when the block ends.

        'evaluators' is a list: --evaluator-model may name several models, which judges take in turn.
        """
        default = config.model or self.default_model
        evaluators = [n.strip() for n in (config.evaluator_model or "").split(",") if n.strip()] or [None]
        async with async_client(self.base_url, self.api_key, config.timeout) as client:

            def model(name: str | None) -> OpenAIChatModel:
                name = name or default
                price = price_of(name, backend=self.backend, base_url=self.base_url, prices=self.prices)
                return OpenAIChatModel(client, name, output_mode=self.output_mode, price=price)

            yield {"practitioner": model(config.practitioner_model), "persona": model(config.persona_model),
                   "evaluators": [model(n) for n in evaluators]}  # fmt: skip


def backend_of(config: Config) -> str:
    """The backend a config names, as Endpoint.backend and the records say it."""
    return "openai-compatible" if config.base_url else config.backend


def default_model(config: Config) -> str:
    """The model a role gets when no flag names one."""
    if config.model:
        return config.model
    return {"openai-compatible": "default", "openai": OPENAI_DEFAULT_MODEL}.get(backend_of(config), MODEL_NAME)


def role_prices(config: Config) -> dict:
    """Each role's price ('evaluators': a list, as `Endpoint.models` gives them), without starting an endpoint."""
    prices = load_prices(config.prices_file)
    evaluators = [n.strip() for n in (config.evaluator_model or "").split(",") if n.strip()] or [None]

    def price(name: str | None):
        return price_of(name or default_model(config), backend=backend_of(config), base_url=config.base_url, prices=prices)

    return {"practitioner": price(config.practitioner_model), "persona": price(config.persona_model),
            "evaluators": [price(n) for n in evaluators]}  # fmt: skip


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
    prices = load_prices(config.prices_file)
    if config.base_url:
        check_reachable(config.base_url)
        key = os.environ.get(config.api_key_env) or "none"  # many self-hosted servers need no key
        yield Endpoint("openai-compatible", config.base_url, key, config.output_mode or "json_schema", default_model(config),
                       concurrency or 8, prices=prices)
    elif config.backend == "openai":
        key = os.environ.get(config.api_key_env)
        if not key:
            raise UserError(f"--backend openai needs an API key in ${config.api_key_env}")
        yield Endpoint("openai", None, key, config.output_mode or "json_schema", default_model(config), concurrency or 8,
                       prices=prices)
    else:
        with local_server(slots=concurrency or DEFAULT_SLOTS) as server:
            yield Endpoint("local", server.url, "local", config.output_mode or "llguidance", MODEL_NAME,
                           server.slots, server.exit_reason, prices)  # fmt: skip
