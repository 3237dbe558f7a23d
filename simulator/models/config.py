"""Configuration: command-line flags > NEXTSTEP_* environment > a TOML config file."""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from simulator.core.errors import UserError
from simulator.core.files import validation_message

from .cache import duration

DEFAULT_CONFIG_FILE = Path("nextstep.toml")
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_file", default=None)


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXTSTEP_", extra="forbid")

    backend: Literal["local", "openai"] = Field("local", description="local: the embedded model; openai: OpenAI or --base-url.")
    base_url: str | None = Field(None, description="Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp).")
    api_key_env: str = Field("OPENAI_API_KEY", description="The environment variable holding the API key.")
    model: str | None = Field(None, description="Model for every role unless a role names its own.")
    practitioner_model: str | None = None
    persona_model: str | None = None
    evaluator_model: str | None = None
    output_mode: Literal["json_schema", "json_object", "llguidance"] | None = Field(None, description="Structured output request style.")
    temperature: float = Field(0.7, ge=0, le=2)
    max_turns: int | None = Field(None, ge=1, le=100, description="Most rounds per episode; unset, each command has its own default.")
    reasks: int = Field(2, ge=0, le=10)
    timeout: float = Field(120.0, gt=0, description="Seconds one request may take in all before it is abandoned (and retried).")
    personas_dir: Path | None = None
    prompts_dir: Path | None = None
    prices_file: Path | None = Field(None, description="TOML of prices per million tokens for self-hosted models.")
    cache: bool = Field(True, description="Answer a request asked before from the response cache (NEXTSTEP_CACHE=0: off).")
    cache_dir: Path | None = Field(None, description="Directory of the response cache; unset, the user cache directory.")
    cache_expiry: str | None = Field(None, description="Entries older than this (90s, 30m, 12h, 7d) are asked again.")
    cache_max_mb: int = Field(1024, ge=1, description="Size bound of the response cache; least recently used entries go first.")

    @field_validator("cache_expiry")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration(value)
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file.get())


def load_config(config_file: Path | None = None, **flags) -> Config:
    """The merged configuration; flags that are None are left to the environment and the file."""
    path = config_file or (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    if config_file is not None and not config_file.is_file():
        raise UserError(f"--config {config_file}: no such file")
    token = _config_file.set(path)
    try:
        return Config(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as e:
        raise UserError(f"configuration{f' ({path})' if path else ''}: {validation_message(e)}") from None
    except ValueError as e:  # a TOML syntax error
        raise UserError(f"{path}: {e}") from None
    finally:
        _config_file.reset(token)
