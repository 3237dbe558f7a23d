"""Token usage an endpoint does not report is unknown (None), never a zero; a run says so once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from stub_server import StubServer, answer, completion as stub_completion

from evaluations.analysis.frame import load_run
from simulator.core.records import Call, usage
from simulator.models.openai_backend import completion
from simulator.storage.store import Store


def test_a_completion_without_usage_has_unknown_tokens():
    body = {"model": "m", "messages": []}
    reported = completion(stub_completion(body, "hi"), "m", 0.1, 0)
    assert (reported.prompt_tokens, reported.completion_tokens) == (50, 10)
    missing = completion({k: v for k, v in stub_completion(body, "hi").items() if k != "usage"}, "m", 0.1, 0)
    assert (missing.prompt_tokens, missing.completion_tokens) == (None, None)
    zero = completion(stub_completion(body, "hi") | {"usage": {"prompt_tokens": 0, "completion_tokens": 0}}, "m", 0.1, 0)
    assert (zero.prompt_tokens, zero.completion_tokens) == (0, 0)  # a reported zero stays a zero
    call = Call(role="r", purpose="p", model="m", seed=0, prompt_tokens=5, completion_tokens=2, latency_s=0.1, finish_reason="stop")
    assert usage([call, call]).prompt_tokens == 10
    unknown = call.model_copy(update={"prompt_tokens": None})
    assert usage([call, unknown]).prompt_tokens is None  # a partial sum would undercount


def no_usage(n, body):
    """A stub hook: the stub's own answers, without the usage object."""
    return 200, {}, {k: v for k, v in stub_completion(body, answer(body)).items() if k != "usage"}


def test_a_run_on_an_endpoint_without_usage_stores_unknown_and_warns_once(tmp_path):
    db = tmp_path / "n.db"
    env = {**os.environ, "COLUMNS": "250"}
    with StubServer(fault=no_usage) as url:
        result = subprocess.run([sys.executable, "-m", "simulator", "batch", "--personas", "all", "--max-turns", "2",
                                 "--run-id", "r", "--max-tokens", "100", "--base-url", url, "--db", str(db)],
                                capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "no token usage" in line]
    assert len(warnings) == 1 and "--max-tokens 100 cannot be enforced" in warnings[0]
    assert "tokens per succeeded episode: unknown" in result.stdout
    assert "not held to --max-tokens" in result.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM episodes WHERE status = 'succeeded'").fetchone()[0] == 3  # the budget did not stop it
        assert conn.execute("SELECT count(*) FROM episodes WHERE prompt_tokens IS NOT NULL").fetchone()[0] == 0
        calls = conn.execute("SELECT count(*), count(prompt_tokens), count(completion_tokens) FROM calls").fetchone()
    assert calls[0] > 0 and calls[1:] == (0, 0)
    with Store(db) as store:
        assert store.runs()[0]["tokens"] is None
    assert load_run("r", db)["prompt_tokens"].isna().all()
    listing = subprocess.run([sys.executable, "-m", "simulator", "runs", "--db", str(db)], capture_output=True, text=True, env=env)
    assert "unknown" in listing.stdout
