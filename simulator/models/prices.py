"""Tokens to money: a user's prices.toml for self-hosted models, the genai-prices database for provider models,
nothing for the embedded engine. A model whose price is unknown costs None ("unknown"), never $0."""

from __future__ import annotations

import ipaddress
import math
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from simulator.core.errors import UserError
from simulator.core.files import validation_message

DEFAULT_PRICES_FILE = Path("prices.toml")


class Price(Protocol):
    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """US dollars for one call; `cached_tokens` are the part of `prompt_tokens` the endpoint served from its cache."""
        ...


class Rates(BaseModel):
    """US dollars per million tokens, as a prices.toml entry gives them; cached input costs as input unless given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    output: float = Field(ge=0)

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """`Rates(input=1, cached_input=0.25, output=2).cost(1000, 600, 200)` -> 0.00095."""
        cached = min(cached_tokens, prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt_tokens - cached) * self.input + cached * cached_rate + completion_tokens * self.output) / 1e6


FREE = Rates(input=0, output=0)


@dataclass(frozen=True)
class Listed:
    """A provider's list price from genai-prices (tiers and cache rates as the database has them)."""

    model: str
    provider_id: str | None = None
    provider_api_url: str | None = None

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        from genai_prices import Usage, calc_price

        usage = Usage(input_tokens=prompt_tokens, cache_read_tokens=min(cached_tokens, prompt_tokens), output_tokens=completion_tokens)
        where = {"provider_id": self.provider_id} if self.provider_id else {"provider_api_url": self.provider_api_url}
        return float(calc_price(usage, self.model, **where).total_price)


class PriceFile(RootModel[dict[str, Rates]]):
    """prices.toml: a table per model name, `["my-model"]` with input, cached_input (optional) and output per million tokens."""


def load_prices(path: Path | None) -> dict[str, Rates]:
    """The prices a file gives ({} without one; ./prices.toml when present and none is named); bad files are a UserError."""
    if path is None:
        if not DEFAULT_PRICES_FILE.is_file():
            return {}
        path = DEFAULT_PRICES_FILE
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prices {path}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {e}") from None
    try:
        return PriceFile.model_validate(data).root
    except ValidationError as e:
        raise UserError(f"{path}: {validation_message(e)}") from None


def _on_this_machine(url: str) -> bool:
    """Loopback or private addresses: a self-hosted server, which no price list knows."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def price_of(model: str, *, backend: str, base_url: str | None, prices: dict[str, Rates]) -> Price | None:
    """What one call to `model` costs on this endpoint, or None when no price is known.

    The embedded engine is free; a prices.toml entry wins; else genai-prices by provider (OpenAI) or by the
    endpoint's URL (a provider's OpenAI-compatible API).
    """
    if backend == "local":
        return FREE
    if model in prices:
        return prices[model]
    if base_url and _on_this_machine(base_url):
        return None
    listed = Listed(model, provider_id="openai") if backend == "openai" else Listed(model, provider_api_url=base_url)
    try:
        listed.cost(1, 0, 1)
    except LookupError:
        return None
    return listed


def call_cost(price: Price | None, prompt_tokens: int | None, cached_tokens: int | None, completion_tokens: int | None) -> float | None:
    """A call's cost in dollars; None when the price or the tokens are unknown: `call_cost(FREE, 5, None, 2)` -> 0.0."""
    if price is None or prompt_tokens is None or completion_tokens is None:
        return None
    return price.cost(prompt_tokens, cached_tokens or 0, completion_tokens)


def money(dollars: float | None) -> str:
    """`money(None)` -> 'unknown'; `money(0)` -> '$0'; `money(12.5)` -> '$12.50'; `money(0.00095)` -> '$0.00095'."""
    if dollars is None:
        return "unknown"
    if dollars == 0:
        return "$0"
    places = 2 if dollars >= 0.01 else 2 - math.floor(math.log10(dollars))
    return f"${dollars:,.{places}f}".rstrip("0") if places > 2 else f"${dollars:,.2f}"
