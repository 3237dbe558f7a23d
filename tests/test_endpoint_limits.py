"""What a slow, throttling or verbose endpoint may cost at most (issue 24, items 6-8): a deadline per call, one
limiter for every request in flight, backoff with jitter, a rate that comes down on 429s and recovers, capped lines."""

from __future__ import annotations

import asyncio
import json
import time

from stub_server import StubServer
from test_run_settings import nextstep

from simulator.core.errors import ModelError
from simulator.models.backends import Endpoint
from simulator.models.config import Config
from simulator.models.openai_backend import OpenAIChatModel, RetryPolicy
from simulator.runs.batch import run_grid
from simulator.storage.store import Store

HI = [{"role": "user", "content": "hi"}]


async def _bounded(call, seconds: float):
    """(error text or None, seconds taken) of `call`, given up after `seconds` so a test on a broken deadline ends."""
    start = time.monotonic()
    try:
        await asyncio.wait_for(call, seconds)
        error = None
    except ModelError as e:
        error = str(e)
    except TimeoutError:
        error = None
    return error, time.monotonic() - start


async def test_a_trickling_answer_is_abandoned_at_the_call_deadline(client):
    stub = StubServer(fault=lambda n, body: "trickle")  # about 300 bytes at 5 a second: a minute per answer
    with stub as url:
        model = OpenAIChatModel(client(url, timeout=1.0), "m", retry=RetryPolicy(attempts=2, base_s=0.01, cap_s=0.01))
        error, took = await _bounded(model.complete(HI), 10)
    assert error and error.startswith("APITimeoutError") and "after 2 tries" in error, error
    assert took < 3.5  # two tries of at most 1 s each, not a minute each
    assert len(stub.requests) == 2


def test_batch_takes_timeout(tmp_path):
    db = tmp_path / "n.db"
    def trickle(n, body):  # every call but the batch's preflight test call (so that an episode runs and fails)
        return None if '"preflight"' in json.dumps(body) else "trickle"

    with StubServer(fault=trickle) as url:
        start = time.monotonic()
        result = nextstep("batch", "--personas", "aloof", "--max-turns", "1", "--judges", "0", "--run-id", "t",
                          "--timeout", "0.5", "--base-url", url, "--db", str(db))
        took = time.monotonic() - start
    assert "nextstep: error" not in result.stderr, result.stderr  # the flag is taken
    with Store(db) as store:
        [episode] = store.episodes("t")
        settings = store.run("t")["settings"]
    assert episode.status == "failed" and "APITimeoutError" in episode.error, episode.error
    assert settings["timeout"] == 0.5  # a resume keeps it
    assert took < 40  # five tries of 0.5 s and their backoff, plus start-up; not minutes


async def test_every_request_in_flight_counts_against_concurrency_judges_too(tmp_path):
    stub = StubServer(latency=0.03)
    with stub as url:
        await run_grid({"personas": "all", "max_turns": 2, "judges": 3}, db=tmp_path / "n.db", base_url=url, concurrency=2)
    assert stub.max_in_flight == 2  # reached, never passed: three judges' parts at once wait their turn


def _capacity(stub: StubServer, most: int, answered: list):
    """A fault: 429 (Retry-After 0.05 s) to a request arriving while `most` others are in flight; appends each outcome."""

    def fault(n, body):
        busy = stub.in_flight > most
        answered.append(429 if busy else 200)
        return (429, {"retry-after": "0.05"}, {"error": {"message": "rate limited"}}) if busy else None

    return fault


async def test_repeated_429s_bring_the_window_down_and_it_recovers():
    answered: list[int] = []
    stub = StubServer(latency=0.05)
    stub.fault = _capacity(stub, 1, answered)
    with stub as url:
        ep = Endpoint("openai-compatible", url, "k", "json_object", "m", concurrency=4)
        async with ep.models(Config(timeout=5)) as models:
            model = models["persona"]
            outcomes = await asyncio.gather(*(model.complete(HI) for _ in range(16)), return_exceptions=True)
            throttled = answered.count(429)
            stub.fault, stub.max_in_flight = None, 0  # the endpoint has room again
            await asyncio.gather(*(model.complete(HI) for _ in range(24)))
    assert not [o for o in outcomes if isinstance(o, BaseException)]  # every call answered in the end
    # the rate came down (7-10 in 3 runs: the first window's burst, then one probe per 4 successes); without the
    # limiter 15 of the first 16 were throttled, and every lock-step retry again
    assert throttled <= 14, answered
    assert stub.max_in_flight == 4  # ... and went back up to the bound, not past it


async def test_retries_after_a_429_are_spread_not_in_lock_step(client):
    first: dict[str, float] = {}
    waited: list[float] = []

    def fault(n, body):  # each call's first try is throttled; how long until its retry came is noted
        said = body["messages"][0]["content"]
        if said not in first:
            first[said] = time.monotonic()
            return 429, {"retry-after": "0.3"}, {"error": {"message": "slow down"}}
        waited.append(time.monotonic() - first[said])
        return None

    with StubServer(fault=fault) as url:
        model = OpenAIChatModel(client(url), "m", retry=RetryPolicy(attempts=2, base_s=0.2, cap_s=1))
        await asyncio.gather(*(model.complete([{"role": "user", "content": f"hi {i}"}]) for i in range(8)))
    assert len(waited) == 8 and min(waited) >= 0.3  # Retry-After honoured
    assert max(waited) - min(waited) > 0.05  # 8 draws of jitter over 0.2 s after it; in lock-step all ~0.3 s


async def test_a_retry_after_beyond_the_cap_fails_the_call_at_once(client):
    stub = StubServer(fault=lambda n, body: (429, {"retry-after": "3600"}, {"error": {"message": "quota"}}))
    with stub as url:
        model = OpenAIChatModel(client(url), "m", retry=RetryPolicy(attempts=3, max_retry_after_s=60))
        error, took = await _bounded(model.complete(HI), 5)
    assert error and "Retry-After" in error and "3600 s" in error and "60 s" in error, error
    assert took < 2 and len(stub.requests) == 1


LONG = "la " * 40_000  # a 120,000-character line with no newline in it


def _long_lines(first: int | None):
    """Dialogue answered with LONG for the first `first` dialogue requests (None: all of them); states that keep talking."""
    from stub_server import completion
    from test_branch import keep_talking

    seen = []

    def fault(n, body):
        if body.get("response_format"):
            return keep_talking(n, body)
        seen.append(n)
        return (200, {}, completion(body, LONG)) if first is None or len(seen) <= first else None

    return fault


async def test_an_over_long_line_is_reasked_like_an_invalid_answer_and_never_sent_back(tmp_path):
    stub = StubServer(fault=_long_lines(1))
    with stub as url:
        run_id = await run_grid({"personas": "aloof", "max_turns": 2, "judges": 0}, db=tmp_path / "n.db", base_url=url)
    with Store(tmp_path / "n.db") as store:
        [episode] = store.episodes(run_id)
    assert episode.status == "succeeded" and len(episode.turns) == 4
    assert max(len(t.text) for t in episode.turns) <= 1_000  # the cap the README states
    [refused] = [c for c in episode.calls if not c.ok]
    assert refused.purpose == "utterance" and "119,999 characters" in refused.error  # stripped
    assert max(len(str(r)) for r in stub.requests) < 50_000  # no later prompt carries it


async def test_lines_that_stay_over_long_fail_the_episode(tmp_path):
    stub = StubServer(fault=_long_lines(None))
    with stub as url:
        run_id = await run_grid({"personas": "aloof", "max_turns": 2, "judges": 0}, db=tmp_path / "n.db",
                                base_url=url, reasks=1)
    with Store(tmp_path / "n.db") as store:
        [episode] = store.episodes(run_id)
    assert episode.status == "failed" and "over the 1,000 a line may have after 2 attempts" in episode.error and not episode.turns


async def test_an_invalid_structured_answer_is_shown_back_capped(client):
    from stub_server import completion

    from simulator.conversation.episode import PersonaState
    from simulator.models.chat import structured

    stub = StubServer(fault=lambda n, body: (200, {}, completion(body, "{" + "x" * 200_000)) if n == 0 else None)
    calls = []
    with stub as url:
        model = OpenAIChatModel(client(url), "m", output_mode="json_object")
        await structured(model, HI, PersonaState, role="persona", purpose="state", calls=calls, reasks=1)
    echoed = stub.requests[1]["messages"][-2]["content"]
    assert len(echoed) < 5_000 and echoed.startswith("{xxx"), len(echoed)
    assert [c.ok for c in calls] == [False, True]


async def test_a_request_over_the_cap_is_not_sent(client):
    stub = StubServer()
    with stub as url:
        model = OpenAIChatModel(client(url), "m")
        error, _ = await _bounded(model.complete([{"role": "user", "content": "x" * 2_000_000}]), 10)
    assert error and "characters" in error and not stub.requests, error


async def test_a_waiter_cancelled_in_line_leaves_no_slot_taken():
    from simulator.models.limiter import Limiter

    limiter, order = Limiter(1), []

    async def request(name: str, seconds: float):
        ticket = await limiter.enter()
        order.append(name)
        try:
            await asyncio.sleep(seconds)
        finally:
            limiter.leave(ticket)

    first = asyncio.create_task(request("first", 0.05))
    await asyncio.sleep(0)
    cancelled, last = asyncio.create_task(request("cancelled", 0)), asyncio.create_task(request("last", 0))
    await asyncio.sleep(0)
    assert limiter.in_flight == 1 and len(limiter._waiting) == 2  # both wait in line behind the first
    cancelled.cancel()
    await asyncio.gather(first, last, return_exceptions=True)
    assert order == ["first", "last"] and limiter.in_flight == 0
