"""What a slow, throttling or verbose endpoint may cost at most (issue 24, items 6-8): a deadline per call, one
limiter for every request in flight, backoff with jitter, a rate that comes down on 429s and recovers, capped lines."""

from __future__ import annotations

import asyncio
import time

from stub_server import StubServer
from test_run_settings import nextstep

from simulator.core.errors import ModelError
from simulator.models.openai_backend import OpenAIChatModel, RetryPolicy
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
    with StubServer(fault=lambda n, body: "trickle") as url:
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
