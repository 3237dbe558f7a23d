"""Cost in money: prices.toml for self-hosted models, genai-prices for providers, 0 for the embedded engine; an unknown
price is 'unknown', never $0; cached prompt tokens are priced at the cached rate; --max-cost stops scheduling."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from stub_server import StubServer, answer
from test_power import pilot

from simulator.core.errors import UserError

# One call on the stub below: 1,000 prompt tokens of which 600 came from the endpoint's cache, 200 completion tokens.
# At $1 input, $0.25 cached input and $2 output per million: (400 * 1 + 600 * 0.25 + 200 * 2) / 1e6 = $0.00095.
PRICES = '["stub"]\ninput = 1.0\ncached_input = 0.25\noutput = 2.0\n'
CALL_COST = (400 * 1.0 + 600 * 0.25 + 200 * 2.0) / 1e6
GRID = ["--personas", "all", "--max-turns", "2", "--judges", "1"]


def cached_usage(n, body):
    """The stub's own answers, with usage that says 600 of 1,000 prompt tokens were served from the cache."""
    return 200, {}, {
        "id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer(body)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                  "prompt_tokens_details": {"cached_tokens": 600}},
    }  # fmt: skip


def shown_as(shown: float, dollars: float) -> bool:
    """Whether a printed amount is `dollars` as money is printed: cents from $0.01 up, else a few significant digits."""
    return abs(shown - dollars) <= (0.005 if dollars >= 0.01 else dollars * 0.01)


def nextstep(*args, cwd):
    keep = ("NEXTSTEP_CACHE", "NEXTSTEP_CACHE_DIR")  # the response cache stays off, as conftest sets it
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTSTEP_") or k in keep} | {"COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_cached_prompt_tokens_are_priced_at_the_cached_rate(tmp_path):
    from simulator.models.prices import load_prices, price_of

    (tmp_path / "prices.toml").write_text(PRICES)
    prices = load_prices(tmp_path / "prices.toml")
    price = price_of("stub", backend="openai-compatible", base_url="http://127.0.0.1:1/v1", prices=prices)
    assert price.cost(1000, 600, 200) == pytest.approx(0.00095)
    assert price.cost(1000, 0, 200) == pytest.approx(0.0014)  # no cache: all 1,000 at the input rate


def test_provider_models_are_priced_from_genai_prices_and_the_embedded_engine_is_free():
    from simulator.models.prices import price_of

    # OpenAI's list price for gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million tokens.
    price = price_of("gpt-4o-mini", backend="openai", base_url=None, prices={})
    assert price.cost(1_000_000, 400_000, 1_000_000) == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.60)
    assert price_of("SmolLM2-135M-Instruct", backend="local", base_url=None, prices={}).cost(10**6, 0, 10**6) == 0
    assert price_of("my-own-llama", backend="openai-compatible", base_url="http://127.0.0.1:8000/v1", prices={}) is None


def test_a_broken_prices_file_is_one_clear_error(tmp_path):
    from simulator.models.prices import load_prices

    bad = tmp_path / "prices.toml"
    bad.write_text('["m"]\ninput = 1.0\noutput = 2.0\ncahced_input = 0.5\n')
    with pytest.raises(UserError, match="cahced_input"):
        load_prices(bad)
    result = nextstep("batch", "--dry-run", "--prices", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("nextstep: error:") and "cahced_input" in result.stderr


def test_a_priced_batch_records_cached_tokens_and_money_everywhere_tokens_appear(tmp_path):
    (tmp_path / "prices.toml").write_text(PRICES)  # found in the working directory, as nextstep.toml is
    with StubServer(fault=cached_usage) as url:
        result = nextstep("batch", *GRID, "--run-id", "r", "--base-url", url, "--model", "stub", "--db", "n.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "n.db") as conn:
        calls, cached = conn.execute("SELECT count(*), sum(cached_tokens) FROM calls").fetchone()
        episodes = conn.execute("SELECT count(*) FROM episodes WHERE status = 'succeeded'").fetchone()[0]
    assert cached == 600 * calls and episodes == 3
    spent = calls * CALL_COST
    run_cost, per_episode = map(float, re.search(r"cost of the run: \$([\d.]+), \$([\d.]+) per succeeded episode", result.stdout).groups())
    assert shown_as(run_cost, spent) and shown_as(per_episode, spent / 3)
    assert re.search(rf"this session: 3 succeeded.*; cost \${spent:.2f}", result.stdout)
    listing = nextstep("runs", "--db", "n.db", cwd=tmp_path)
    row = next(line for line in listing.stdout.splitlines() if line.split()[:1] == ["r"])  # i23a: no box, ids whole
    assert row.rstrip().endswith(f"${spent:.2f}")
    episode = json.loads(nextstep("export", "r", "-o", "e.jsonl", "--db", "n.db", cwd=tmp_path) and (tmp_path / "e.jsonl").read_text().splitlines()[0])
    shown = nextstep("show", episode["id"], "--db", "n.db", cwd=tmp_path)
    shown_cost = float(re.search(r"cost: \$([\d.]+)", shown.stdout).group(1))  # 2 decimals from $0.01 up, else 2 significant
    assert shown_as(shown_cost, episode["usage"]["calls"] * CALL_COST)
    report = nextstep("report", "r", "-o", "r.html", "--db", "n.db", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert f"${spent:.2f}" in (tmp_path / "r.html").read_text()


def test_an_unknown_price_says_unknown_never_zero(tmp_path):
    with StubServer(fault=cached_usage) as url:
        result = nextstep("batch", *GRID, "--run-id", "r", "--base-url", url, "--model", "stub", "--db", "n.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cost of the run: unknown" in result.stdout and "cost unknown" in result.stdout
    listing = nextstep("runs", "--db", "n.db", cwd=tmp_path)
    row = next(line for line in listing.stdout.splitlines() if line.split()[:1] == ["r"])  # i23a: no box, ids whole
    assert row.rstrip().endswith("unknown") and "$0" not in row


def test_max_cost_stops_scheduling_and_needs_a_known_price(tmp_path):
    (tmp_path / "prices.toml").write_text(PRICES)
    with StubServer(fault=cached_usage) as url:
        # one episode is well over 10 calls: a budget of 5 calls' cost is spent inside the first episode
        args = [*GRID, "--run-id", "r", "--base-url", url, "--model", "stub", "--db", "n.db", "--concurrency", "1"]
        result = nextstep("batch", *args, "--max-cost", str(5 * CALL_COST), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"cost budget of ${5 * CALL_COST:.5f} reached" in result.stdout.replace("\n", " ")
        with sqlite3.connect(tmp_path / "n.db") as conn:
            assert conn.execute("SELECT count(*) FROM episodes").fetchone()[0] == 1
        (tmp_path / "prices.toml").unlink()
        unpriced = nextstep("batch", *args, "--max-cost", "1", cwd=tmp_path)
    assert unpriced.returncode == 2
    assert unpriced.stderr.strip() == "nextstep: error: --max-cost: no price known for stub; give one in prices.toml (--prices FILE; see README 'Cost')"


def test_dry_run_prices_its_bound_and_a_typical_batch(tmp_path):
    """Each call is priced at its own size. A conversation call at 2 rounds: 280 tokens of instructions and 2 lines of
    48 tokens, 376 in all. A judge's: its shared system message here is 400 characters (100 tokens), its transcript
    2 lines a round of 48 tokens, its question 150 tokens: 100 + 2 x 2 x 48 + 150 = 442. Each answers 100 tokens; the
    test call is 50 tokens. By hand, over 3 cells of 2 rounds and 1 judge: typically 8 conversation calls a cell
    (2 roles x 2 calls x 2 rounds) and 4 judge calls (the transitions, one transition, the flags, the outcome); at most
    3 tries each, 24 conversation calls a cell and 3 + 3 x 9 = 30 judge calls."""
    (tmp_path / "prices.toml").write_text(PRICES)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "evaluator.j2").write_text("x" * 400)
    args = ["batch", "--dry-run", *GRID, "--prompts-dir", "p"]
    result = nextstep(*args, "--base-url", "http://127.0.0.1:1/v1", "--model", "stub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"at most {3 * (24 + 30) + 1} LLM calls" in out
    assert f"roughly {3 * (8 * 476 + 4 * 542) + 50:,} tokens" in out  # 17,978
    talk, judge = (376 * 1.0 + 100 * 2.0) / 1e6, (442 * 1.0 + 100 * 2.0) / 1e6  # $1 and $2 a million, none cached
    at_most, typical = 3 * (24 * talk + 30 * judge), 3 * (8 * talk + 4 * judge)
    assert f"cost: at most ${at_most:.2f} if every re-ask happens, typically ${typical:.2f}" in out
    assert "476 tokens a conversation call and 542 a judge's" in out
    unpriced = nextstep(*args, "--base-url", "http://127.0.0.1:1/v1", "--model", "other", cwd=tmp_path)
    assert "cost: at most unknown" in unpriced.stdout
    local = nextstep(*args, cwd=tmp_path)
    assert "cost: at most $0 if every re-ask happens, typically $0" in local.stdout


def test_a_dry_runs_conversation_calls_grow_with_its_rounds(tmp_path):
    """A conversation call sees more of the transcript the longer the episode: at 8 rounds 280 + 8 x 48 = 664 tokens
    of prompt and 100 of answer, where a flat 400 + 100 was assumed whatever the rounds. By hand, 3 cells of 8 rounds
    and no judge: typically 2 roles x 2 calls x 8 rounds = 32 calls a cell at 764 tokens, and the test call's 50."""
    result = nextstep("batch", "--dry-run", "--personas", "all", "--max-turns", "8", "--judges", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"roughly {3 * 32 * 764 + 50:,} tokens" in out  # 73,394
    assert "roughly 764 tokens a conversation call, none from a cache" in out


def test_plan_states_what_its_recommendation_costs():
    from evaluations.analysis.power import plan
    from evaluations.analysis.tables import plan_costs

    frame = pilot(np.random.default_rng(14))  # 8 cells x 40 reps, all succeeded
    frame["prompt_tokens"], frame["completion_tokens"], frame["cost_usd"] = 1000, 200, 0.0125  # 1,200 tokens, $0.0125 each
    r = plan(frame, contact_change=0.15, score_change=0.5)
    contact = r["measures"]["contact"]
    episodes = 2 * contact["reps_per_cell"] * 8  # both runs of the paired comparison, 8 cells each
    assert (contact["episodes"], contact["tokens"], contact["cost_usd"]) == (episodes, episodes * 1200, pytest.approx(episodes * 0.0125))
    line = f"${episodes * 0.0125:,.2f} ({episodes * 1200:,} tokens) to detect +0.15 contact at 80% power"
    assert plan_costs(r)[0].startswith(line)
    frame["cost_usd"] = None  # no price known: the plan's cost is unknown, never $0; its tokens are still known
    unknown = plan(frame, contact_change=0.15)["measures"]["contact"]
    assert unknown["cost_usd"] is None and unknown["tokens"] == episodes * 1200
    assert plan_costs(plan(frame, contact_change=0.15))[0].startswith(f"unknown ({episodes * 1200:,} tokens) to detect")
