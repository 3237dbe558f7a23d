"""Endpoint faults from the scriptable loopback server: what is retried, what is re-asked, what fails."""

from __future__ import annotations

import time

import pytest
from stub_server import StubServer, completion

from simulator.conversation.episode import PersonaState
from simulator.core.errors import ModelError, OutputError
from simulator.models.chat import structured
from simulator.models.openai_backend import OpenAIChatModel, RetryPolicy, retry_after

FAST = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05)
HI = [{"role": "user", "content": "hi"}]


def model(client, *, retry=FAST):
    # the client's own retries on: the model must turn them off (ours is the only retry layer)
    return OpenAIChatModel(client.with_options(max_retries=2), "m", output_mode="json_object", retry=retry)


def first(n_faulty, outcome):
    """A fault script: the first n requests get `outcome`, the rest are answered normally."""
    return lambda n, body: outcome if n < n_faulty else None


@pytest.mark.parametrize("outcome", [
    (429, {"retry-after": "0.2"}, {"error": {"message": "slow down"}}),
    (500, {}, {"error": {"message": "boom"}}),
    (503, {}, {"error": {"message": "unavailable"}}),
    (408, {}, {"error": {"message": "timeout"}}),
    "reset",
])  # fmt: skip
async def test_transient_faults_are_retried(outcome, client):
    stub = StubServer(fault=first(2, outcome))
    with stub as url:
        start = time.monotonic()
        c = await model(client(url)).complete(HI)
        waited = time.monotonic() - start
    assert c.retries == 2 and c.text
    assert len(stub.requests) == 3  # our retries only: the client's own max_retries=2 was switched off
    if outcome[0] == 429:
        assert waited >= 0.4  # Retry-After honoured twice


async def test_a_call_that_hangs_past_the_timeout_is_retried(client):
    stub = StubServer(fault=first(1, "hang"))
    with stub as url:
        c = await model(client(url, timeout=0.5)).complete(HI)
    assert c.retries == 1 and len(stub.requests) == 2


async def test_persistent_5xx_fails_after_the_bounded_attempts(client):
    stub = StubServer(fault=lambda n, body: (502, {}, {"error": {"message": "bad gateway"}}))
    with stub as url, pytest.raises(ModelError, match=r"InternalServerError: .*bad gateway.* after 3 tries"):
        await model(client(url)).complete(HI)
    assert len(stub.requests) == 3


@pytest.mark.parametrize("fault, named", [("reset", "APIConnectionError: "), ("hang", "APITimeoutError: ")])
async def test_a_transport_failure_is_named_by_its_root_cause(fault, named, client):
    # aiohttp's transport raises every dropped connection as a timeout; the stored error must say what happened
    with StubServer(fault=lambda n, body: fault) as url, pytest.raises(ModelError, match=f"^{named}.* after 3 tries"):
        await model(client(url, timeout=0.3)).complete(HI)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_client_errors_are_not_retried(status, client):
    stub = StubServer(fault=lambda n, body: (status, {}, {"error": {"message": "no"}}))
    with stub as url, pytest.raises(ModelError):
        await model(client(url)).complete(HI)
    assert len(stub.requests) == 1


@pytest.mark.parametrize("bad", [
    completion({}, '{"interest": 3, "comf'),                       # invalid JSON
    completion({}, '{"interest": 3, "comfort": 4', "length"),       # cut off at max_tokens
    completion({}, ""),                                             # empty content
    completion({}, '{"interest": 30, "comfort": 4, "intent": "chat"}'),  # out of the schema
])  # fmt: skip
async def test_malformed_output_goes_to_the_bounded_reask(bad, client):
    stub = StubServer(fault=first(1, (200, {}, bad)))
    calls = []
    with stub as url:
        state = await structured(model(client(url)), HI, PersonaState, role="persona", purpose="state", calls=calls, reasks=2)
    assert isinstance(state, PersonaState)
    assert [c.ok for c in calls] == [False, True] and calls[0].error
    assert "That answer was invalid" in stub.requests[1]["messages"][-1]["content"]


async def test_output_that_stays_malformed_is_an_output_error(client):
    stub = StubServer(fault=lambda n, body: (200, {}, completion(body, "not json")))
    with stub as url, pytest.raises(OutputError, match="invalid output after 3 attempts"):
        await structured(model(client(url)), HI, PersonaState, role="persona", purpose="state", calls=[], reasks=2)


def test_retry_after_forms():
    import httpx

    assert retry_after(httpx.Response(429, headers={"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Response(429, headers={"retry-after-ms": "250"})) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= retry_after(httpx.Response(429, headers={"retry-after": date})) <= 10
    assert retry_after(httpx.Response(429)) is None and retry_after(None) is None
    assert RetryPolicy(cap_s=5).delay(10, None) <= 5 and 60 <= RetryPolicy(cap_s=5).delay(0, 60) <= 60.5  # jitter after it
    # a Retry-After beyond the cap fails the call: test_endpoint_limits
