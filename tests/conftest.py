"""Shared fixtures: a scripted chat model, and no real network outside loopback."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest

from simulator.conversation.catalog import Profile, load_catalog
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import Prompts
from simulator.core.errors import ModelError
from simulator.models.chat import Completion
from simulator.models.openai_backend import async_client

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise OSError(f"tests may not reach the network: {address}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Real model clients fail by default: only loopback (our own test servers) is reachable."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True)
def no_response_cache(monkeypatch, tmp_path_factory):
    """The response cache is off in tests unless a test turns it on (tests that count requests or run the same thing
    twice mean the endpoint); when one does, it gets a directory of its own, never the user's cache. Set in the
    environment, so the `nextstep` processes a test starts inherit both."""
    monkeypatch.setenv("NEXTSTEP_CACHE", "0")
    monkeypatch.setenv("NEXTSTEP_CACHE_DIR", str(tmp_path_factory.mktemp("response-cache")))


class ScriptedModel:
    """A chat model that answers from a script and records every call; each reply must be used."""

    def __init__(self, replies, name: str = "scripted"):
        self.replies = list(replies)
        self.name = name
        self.requests: list[dict] = []

    async def complete(self, messages, *, schema=None, max_tokens=128, temperature=0.7, seed=None, stop=None):
        self.requests.append({"messages": messages, "schema": schema, "seed": seed, "temperature": temperature})
        if not self.replies:
            raise AssertionError(f"{self.name}: no scripted reply left for call {len(self.requests)}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, dict):
            reply = json.dumps(reply)
        return Completion(text=reply, finish_reason="stop", prompt_tokens=10, completion_tokens=5, latency_s=0.01, model=self.name)

    def assert_used_up(self):
        assert not self.replies, f"{self.name}: unused scripted replies: {self.replies}"


def practitioner_says(text, intent):
    return [text, {"intent": intent}]


def persona_says(text, interest=5, comfort=5, shares=False, intent=None):
    """A persona line and its state call; `shares` is short for intent give_contact (gave contact in this line)."""
    return [text, {"interest": interest, "comfort": comfort, "intent": intent or ("give_contact" if shares else "chat")}]


@pytest.fixture
async def client():
    """Makes clients as nextstep does (`async_client`) and closes each one when the test ends."""
    made = []

    def make(url: str, api_key: str = "sk-test", timeout: float = 5.0):
        made.append(async_client(url, api_key, timeout))
        return made[-1]

    yield make
    for c in made:
        await c.close()


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture
def make_context(catalog):
    def make(practitioner, persona, *, max_turns=6, seed=7, scenario=None, **options):
        scenario = scenario or Scenario("supermarket", "unsure", "common_interest", Profile())
        return Context(practitioner, persona, catalog, Prompts(catalog.prompt_dirs), scenario, seed,
                       max_turns=max_turns, **options)
    return make


__all__ = ["ModelError", "ScriptedModel", "persona_says", "practitioner_says"]


def lenient_personas(folder):
    """The shipped personas with every first state allowed: a stub answers random states, and tests of the
    statistics' plumbing should not have every stub episode left out as out of character."""
    folder.mkdir(exist_ok=True)
    for persona in load_catalog().personas.values():
        wide = persona.model_copy(update={"expected_first_turn": persona.expected_first_turn.model_copy(
            update={"interest": (0, 10), "comfort": (0, 10)})})  # fmt: skip
        (folder / f"{persona.id}.yaml").write_text(wide.model_dump_json())  # JSON is YAML
    return folder
