"""Chaos, bad input, secrets and concurrent writers: nothing lost, nothing leaked, one clear line."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from stub_server import StubServer, completion

from simulator.runs.batch import run_grid
from simulator.storage.store import Store

SENTINEL = "sk-SENTINEL-0123456789abcdef"


def nextstep(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def chaos(rate: float, seed: int = 3):
    """Fault 20% of requests at random: transient faults (retried) and fatal ones (failing the episode)."""
    rng = random.Random(seed)
    faults = [(429, {"retry-after": "0"}, {"error": {"message": "rate"}}), (500, {}, {"error": {"message": "boom"}}),
              (503, {}, {}), "reset", (400, {}, {"error": {"message": "fatal"}})]

    def fault(n, body):
        if rng.random() >= rate:
            return None
        pick = rng.choice(faults + ["invalid"])
        return (200, {}, completion(body, "{not json")) if pick == "invalid" else pick

    return fault


async def test_chaos_batch_stores_every_episode_once_and_resume_completes_it(tmp_path, monkeypatch):
    import simulator.models.openai_backend as backend

    monkeypatch.setattr(backend.RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)  # keep the test quick
    grid = {"personas": "all", "strategies": "all", "reps": 3, "max_turns": 2, "judges": 1}  # 63 episodes
    db = tmp_path / "n.db"
    stub = StubServer(fault=chaos(0.2))
    with stub as url:
        # fail_fast=0: whether the first three episodes to end all meet the seeded 400 depends on the order requests
        # arrive in; stopping early is test_batch's subject, every episode kept under faults is this one's.
        run_id = await run_grid(grid, db=db, base_url=url, concurrency=8, fail_fast=0)
    with Store(db) as store:
        first = store.episodes(run_id)
        errors = store.conn.execute("SELECT count(*) FROM errors").fetchone()[0]
    keys = [(e.cell, e.rep) for e in first]
    assert len(keys) == len(set(keys)) == 63  # none missing, none duplicated
    failed = [e for e in first if e.status == "failed"]
    ungraded = [e for e in first if e.status == "ungraded"]  # a judge's call failed: the conversation is kept
    assert failed and errors == len(failed) + len(ungraded)  # 400s are not retried: some episodes must fail, each with its error
    assert all(e.error for e in failed + ungraded)
    retried = sum(c.retries for e in first for c in e.all_calls())
    assert retried > 0  # transient faults were retried, not failed
    with StubServer() as url:
        assert await run_grid(grid, db=db, base_url=url, concurrency=8) == run_id  # the same experiment resumes its run
    with Store(db) as store:
        second = store.episodes(run_id)
        assert store.integrity_ok()
        assert store.conn.execute("SELECT count(*) FROM errors").fetchone()[0] == errors  # failures stay on record
    assert len(second) == 63 and {e.status for e in second} == {"succeeded"}
    kept = {e.id for e in first if e.status == "succeeded"}
    assert kept <= {e.id for e in second}  # succeeded episodes were skipped, not re-run
    again = {e.id: e for e in second}
    assert all(again[e.id].turns == e.turns for e in ungraded)  # ungraded ones were graded, not re-simulated


def test_max_failures_stops_scheduling(tmp_path):
    def fault(n, body):  # the model's test call passes (else nothing would run), every episode's call fails
        tested = ((body.get("response_format") or {}).get("json_schema") or {}).get("name") == "preflight"
        return None if tested else (400, {}, {"error": {"message": "no"}})

    with StubServer(fault=fault) as url:
        result = nextstep("batch", "--personas", "all", "--strategies", "all", "--judges", "0", "--max-failures", "2",
                          "--concurrency", "1", "--base-url", url, "--db", str(tmp_path / "n.db"))
    assert result.returncode == 1
    assert "2 failures reached --max-failures" in result.stdout
    with Store(tmp_path / "n.db") as store:
        assert len(store.conn.execute("SELECT id FROM episodes").fetchall()) == 2


@pytest.mark.parametrize("args, fragment", [
    (["batch", "--concurrency", "-1"], "Invalid value for '--concurrency'"),
    (["batch", "--reps", "0"], "grid flags: reps: Input should be greater than or equal to 1"),
    (["batch", "--settings", "moon"], "unknown setting 'moon'"),
    (["batch", "--profiles", "man"], "--profiles 'man': write practitioner-persona genders"),
    (["batch", "--experiment", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read"),
    (["batch", "--resume", "nope"], "no run 'nope'"),
    (["show", "nope"], "no such database"),
    (["export", "r", "--format", "xlsx"], "no such database"),
    (["calibrate", "/nonexistent.jsonl"], "cannot read"),
])  # fmt: skip
def test_bad_input_table(tmp_path, args, fragment):
    if "--resume" in args:
        Store(tmp_path / "nextstep.db").close()
    result = nextstep(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr


def test_bad_experiment_file_and_undefined_prompt_variable(tmp_path):
    (tmp_path / "exp.yaml").write_text("settings: [bar_club]\npersonas: all\nrepetitions: 2\n")
    result = nextstep("batch", "--experiment", str(tmp_path / "exp.yaml"), "--dry-run")
    assert result.returncode == 2 and "exp.yaml: repetitions: Extra inputs are not permitted" in result.stderr
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "practitioner.j2").write_text("You are {{ practitioner_gender }} at {{ venue }}.")
    with StubServer() as url:
        result = nextstep("batch", "--prompts-dir", str(prompts), "--base-url", url, "--db", str(tmp_path / "n.db"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "practitioner.j2: undefined variable(s): venue" in result.stderr


def test_a_sentinel_key_reaches_no_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {"MY_KEY": SENTINEL}
    stub = StubServer()
    with stub as url:
        common = ["--base-url", url, "--api-key-env", "MY_KEY"]
        batch = nextstep("batch", "--personas", "aloof", "--max-turns", "2", "--run-id", "s", "--db", str(out / "n.db"), *common, env=env)
        run = nextstep("run", "--max-turns", "2", "--out", str(out / "episodes"), "--db", str(out / "n.db"), *common, env=env)
    assert batch.returncode == 0 and run.returncode == 0, batch.stderr + run.stderr
    for fmt in ("jsonl", "csv", "parquet"):
        assert nextstep("export", "s", "--format", fmt, "-o", str(out / f"e.{fmt}"), "--db", str(out / "n.db")).returncode == 0
    assert nextstep("report", "s", "-o", str(out / "report.html"), "--db", str(out / "n.db")).returncode == 0
    assert stub.authorizations and set(stub.authorizations) == {f"Bearer {SENTINEL}"}  # the key was in use, yet:
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) >= 6  # the database, three exports, the report, the episode JSON
    for path in written + list((Path(__file__).parent / "cassettes").glob("*.yaml")):
        assert SENTINEL.encode() not in path.read_bytes(), path
    assert SENTINEL not in batch.stdout + batch.stderr + run.stdout + run.stderr


def test_two_batches_writing_one_database_lose_nothing(tmp_path):
    db = str(tmp_path / "n.db")
    with StubServer(latency=0.01) as url:
        procs = [subprocess.Popen([sys.executable, "-m", "simulator", "batch", "--personas", "all", "--strategies", "all",
                                   "--judges", "0", "--max-turns", "2", "--run-id", f"r{i}", "--concurrency", "4",
                                   "--base-url", url, "--db", db], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]  # fmt: skip
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
    with Store(tmp_path / "n.db") as store:
        assert [r["succeeded"] for r in store.runs()] == [21, 21]
        assert store.integrity_ok()
