"""A misconfigured endpoint stops a command before it fans out; a batch whose first episodes all fail alike stops; a
command whose every episode failed exits non-zero."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from stub_server import StubServer

import simulator.api as api
from simulator.runs.batch import run_grid

GOLD = Path(__file__).resolve().parents[1] / "evaluations" / "gold" / "team.jsonl"


def nextstep(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "80"})


def not_found(*models: str):
    """A stub fault: 404 for every call to one of `models` (a wrong model name on a real endpoint)."""
    return lambda n, body: (404, {}, {"error": {"message": f"model {body['model']} not found"}}) if body["model"] in models else None


def preflight_call(body: dict) -> bool:
    return (body.get("response_format") or {}).get("json_schema", {}).get("name") == "preflight"


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM episodes").fetchone()[0]


def test_a_wrong_model_stops_the_batch_before_any_episode(tmp_path):
    # Before: every episode failed (a warning each), nothing succeeded, and the batch exited 0.
    stub, db = StubServer(fault=not_found("gone")), tmp_path / "n.db"
    with stub as url:
        result = nextstep("batch", "--personas", "all", "--reps", "5", "--max-turns", "1", "--model", "ok",
                          "--evaluator-model", "gone", "--base-url", url, "--db", str(db))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "evaluator model 'gone'" in result.stderr and "404" in result.stderr
    assert [b["model"] for b in stub.requests] == ["ok", "gone"]  # one call per distinct model, then nothing
    assert stored(db) == 0


def test_grade_calibrate_and_branch_check_their_models_first(tmp_path):
    db = tmp_path / "n.db"
    with StubServer() as url:
        assert nextstep("batch", "--personas", "aloof", "--max-turns", "2", "--run-id", "r1", "--base-url", url,
                        "--db", str(db)).returncode == 0
    for command, role, calls in ((["grade", "r1", "--model", "gone", "--db", str(db)], "evaluator", 1),
                                 (["calibrate", str(GOLD), "--model", "gone"], "evaluator", 1),
                                 (["branch", "r1", "--at", "1", "--persona-model", "gone", "--db", str(db)], "treatment persona", 2)):
        stub = StubServer(fault=not_found("gone"))
        with stub as url:
            result = nextstep(*command, "--base-url", url)
        assert result.returncode == 2 and f"the {role} model 'gone' failed a first test call" in result.stderr, result.stderr
        assert len(stub.requests) == calls, command  # the branch's other model ('default') answered its test call


async def test_a_batch_stops_when_its_first_episodes_all_fail_alike(tmp_path):
    # The model answers the test call but refuses every episode's calls (as for a prompt longer than its context).
    def refuse_persona(n, body):
        return None if preflight_call(body) else (400, {}, {"error": {"message": "context too long"}})

    grid = {"personas": "aloof", "strategies": "no_ask", "reps": 8, "max_turns": 1, "judges": 0}
    seen = []
    with StubServer(fault=refuse_persona) as url:
        await run_grid(grid, db=tmp_path / "a.db", base_url=url, concurrency=1, on_progress=seen.append)
    assert (seen[-1].done, seen[-1].failed) == (0, 3) and stored(tmp_path / "a.db") == 3
    assert seen[-1].stopped.startswith("the first 3 episodes all failed with the same error") and seen[-1].fault
    with StubServer(fault=refuse_persona) as url:  # switched off: every episode runs, and the command exits 1
        result = nextstep("batch", "--personas", "aloof", "--strategies", "no_ask", "--reps", "8", "--max-turns", "1",
                          "--judges", "0", "--fail-fast", "0", "--base-url", url, "--db", str(tmp_path / "b.db"))
    assert result.returncode == 1 and stored(tmp_path / "b.db") == 8, result.stdout + result.stderr


def test_the_dry_run_bound_counts_the_test_calls(tmp_path):
    # One episode of one round without judges or re-asks makes 4 calls; one distinct model adds its test call.
    grid = {"personas": "aloof", "strategies": "no_ask", "max_turns": 1, "judges": 0}
    _, _, bound = api.plan_batch(grid, reasks=0)
    stub = StubServer()
    with stub as url:
        result = api.run_batch(grid, db=tmp_path / "n.db", base_url=url, reasks=0)
    assert len(stub.requests) == bound["calls_at_most"] == 5 and sum(map(preflight_call, stub.requests)) == 1
    assert result.progress.tokens == 5 * 60  # the stub reports 60 tokens a call: the test call is counted too
