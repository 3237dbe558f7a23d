"""Batch runs against a loopback stub endpoint: grid and seeds, concurrency, resume after SIGKILL, export."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from stub_server import StubServer

from evaluations.analysis.frame import export, load_run, summary
from simulator.conversation.catalog import Profile
from simulator.core.errors import UserError
from simulator.core.records import Episode
from simulator.models.openai_backend import RetryPolicy
from simulator.runs.batch import Experiment, cell_seed, expand, run_grid
from simulator.storage.store import Store


def test_grid_expansion_and_seeds():
    exp = Experiment(settings=["bar_club", "workplace"], personas=["aloof", "unsure"], strategies=["turn_back"],
                     profiles=[Profile(), Profile(practitioner_gender="woman", persona_gender="man")], reps=3, seed=1)
    cells = expand(exp)
    assert len(cells) == 2 * 2 * 1 * 2 * 3
    assert cells[0].key == "bar_club/aloof/turn_back/man-woman" and cells[3].key == "bar_club/aloof/turn_back/woman-man"
    assert len({(c.key, c.rep) for c in cells}) == len(cells)
    assert len({c.seed for c in cells}) == len(cells)  # every episode has its own seed
    assert [c.seed for c in expand(exp)] == [c.seed for c in cells]  # ... the same every time
    assert cells[0].seed == cell_seed(1, "bar_club/aloof/turn_back/man-woman", 0) != cell_seed(2, cells[0].key, 0)


def test_experiment_file_is_validated(tmp_path):
    from simulator.runs.batch import load_experiment

    (tmp_path / "exp.yaml").write_text("settings: [bar_club]\nrepetitions: 3\n")
    with pytest.raises(UserError, match=r"exp.yaml: repetitions: Extra inputs are not permitted"):
        load_experiment(tmp_path / "exp.yaml")
    (tmp_path / "exp.yaml").write_text("settings: all\nreps: 0\n")
    with pytest.raises(UserError, match=r"exp.yaml: reps: Input should be greater than or equal to 1"):
        load_experiment(tmp_path / "exp.yaml")


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_episodes_overlap_up_to_the_concurrency_limit(tmp_path, concurrency):
    # no judges: an episode's judges call the endpoint at once (issue 14), so only a conversation's calls are one per episode
    grid = {"personas": "all", "strategies": "turn_back,no_ask", "max_turns": 2, "judges": 0}
    stub = StubServer(latency=0.03)
    with stub as url:
        run_id = await run_grid(grid, db=tmp_path / "n.db", base_url=url, concurrency=concurrency)
    assert stub.max_in_flight == concurrency  # episodes really overlapped, and never beyond the limit
    frame = load_run(run_id, tmp_path / "n.db")
    assert len(frame) == 6 and set(frame["status"]) == {"succeeded"}
    assert (frame["judges"] == 0).all()


def _stored(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM episodes").fetchone()[0]
    except sqlite3.Error:
        return 0


def _batch_under_way(db, args: list[str], **popen) -> subprocess.Popen:
    """`nextstep batch ARGS` started, once it has stored 5 episodes (or ended, or after 60 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "batch", *args], **popen)
    deadline = time.monotonic() + 60
    while _stored(db) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    return proc


def test_resume_after_sigkill_yields_exactly_the_grid(tmp_path):
    db = tmp_path / "n.db"
    with StubServer(latency=0.02) as url:
        common = ["--base-url", url, "--db", str(db), "--concurrency", "4"]
        grid = ["--personas", "all", "--strategies", "all", "--reps", "2", "--max-turns", "2", "--judges", "0", "--run-id", "crash"]
        proc = _batch_under_way(db, [*grid, *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _stored(db)
        assert 0 < before < 42, "the batch must be killed part way through"
        resumed = subprocess.run([sys.executable, "-m", "simulator", "batch", "--resume", "crash", *common],
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
    with Store(db) as store:
        assert store.integrity_ok()
        episodes = store.episodes("crash")
    keys = [(e.cell, e.rep) for e in episodes]
    expected = {(c.key, c.rep) for c in expand(Experiment(personas=["friendly", "aloof", "unsure"], strategies=[
        "turn_back", "common_interest", "high_point_exit", "work_need", "friends_pretext", "social_media", "no_ask"], reps=2))}
    assert len(keys) == len(set(keys)) == 42 and set(keys) == expected
    assert {e.status for e in episodes} == {"succeeded"}


def test_ctrl_c_says_what_was_stored_and_how_to_resume(tmp_path):
    db = tmp_path / "n.db"
    with StubServer(latency=0.02) as url:
        common = ["--base-url", url, "--db", str(db), "--concurrency", "4"]
        proc = _batch_under_way(db, ["--reps", "30", "--judges", "0", "--run-id", "cut", *common],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C finds it
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        said = " ".join(out.split())  # rich wraps lines off a terminal
        stored = _stored(db)
        assert proc.returncode == 130 and err.endswith("nextstep: interrupted\n"), err
        assert 0 < stored < 90, "the batch must be interrupted part way through"
        counted = re.search(r"this session: (\d+) succeeded, 0 ungraded, 0 failed", said)
        assert counted and stored - 4 <= int(counted[1]) <= stored, out  # a save under way when the signal came lands, uncounted
        assert "stopped scheduling: interrupted; continue with: nextstep batch --resume cut --db" in said, out
        resumed = subprocess.run([sys.executable, "-m", "simulator", "batch", "--resume", "cut", *common], capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
    assert _stored(db) == 90


async def test_export_round_trips(tmp_path):
    db = tmp_path / "n.db"
    with StubServer() as url:
        run_id = await run_grid({"personas": "aloof,unsure", "max_turns": 2}, db=db, base_url=url)
    with Store(db) as store:
        records = store.episodes(run_id)
        texts = dict(store.conn.execute("SELECT name, text FROM prompts").fetchall())
    assert {"practitioner", "persona", "evaluator_transition", "rubric"} <= texts.keys()  # provenance: the texts hashed
    assert "agenda_clarity" in texts["rubric"]
    export(run_id, db, "jsonl", tmp_path / "e.jsonl")
    assert [Episode.model_validate_json(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()] == records
    frame = load_run(run_id, db)
    export(run_id, db, "parquet", tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "e.parquet"), frame)
    export(run_id, db, "csv", tmp_path / "e.csv")
    csv = pd.read_csv(tmp_path / "e.csv")
    assert list(csv.columns) == list(frame.columns) and csv["episode_id"].tolist() == frame["episode_id"].tolist()
    assert csv["final_interest"].tolist() == frame["final_interest"].tolist()


async def test_token_budget_stops_scheduling(tmp_path):
    seen = []
    grid = {"personas": "all", "strategies": "all", "max_turns": 2, "judges": 0}
    with StubServer() as url:  # the stub reports 60 tokens a call; the model's test call comes first
        run_id = await run_grid(grid, db=tmp_path / "n.db", base_url=url, concurrency=2, max_tokens=61, on_progress=seen.append)
    final = seen[-1]
    assert final.finished and final.stopped == "token budget of 61 reached" and final.total == 21
    # the first episode to end spends the budget; the one already in flight beside it still ends and is kept
    assert final.done == 2 and len(load_run(run_id, tmp_path / "n.db")) == 2
    with StubServer() as url:  # a budget the test call spends already: no episode starts
        await run_grid(grid, db=tmp_path / "m.db", base_url=url, max_tokens=60, on_progress=seen.append)
    assert (seen[-1].stopped, seen[-1].done, seen[-1].failed, seen[-1].tokens) == ("token budget of 60 reached", 0, 0, 60)


JUDGE_OUTPUTS = {"transition_turns", "transition_grades", "flags", "outcome"}


def _test_call(body: dict) -> bool:
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("name") == "preflight"


def _judge_call(body: dict) -> bool:
    fmt = body.get("response_format") or {}
    return ((fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}).get("title")) in JUDGE_OUTPUTS


async def test_an_episode_whose_judge_endpoint_failed_is_graded_again_on_resume_without_simulating_it(tmp_path, monkeypatch):
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)  # retry dropped connections at once
    db, grid = tmp_path / "n.db", {"personas": "aloof,unsure", "max_turns": 2}
    with StubServer(fault=lambda n, body: "reset" if _judge_call(body) else None) as url:  # every judge call dropped
        run_id = await run_grid(grid, db=db, base_url=url)
    with Store(db) as store:
        before = {e.id: e for e in store.episodes(run_id)}
        assert store.done(run_id) == set() and len(store.ungraded(run_id)) == 2
    assert {e.status for e in before.values()} == {"ungraded"}
    assert all(e.error.startswith("judge 0: APIConnectionError") and e.turns for e in before.values())
    frame = load_run(run_id, db)
    assert frame[["agenda_clarity", "judged_exchanged"]].isna().all().all()  # no judge column from an ungraded episode
    assert [(r["ungraded"], r["failed"], r["n"]) for r in summary(frame)] == [(1, 0, 0), (1, 0, 0)]

    resumed = StubServer()
    with resumed as url:
        await run_grid(resume=run_id, db=db, base_url=url)
    graded = [body for body in resumed.requests if not _test_call(body)]  # the evaluator model's one test call aside
    assert len(resumed.requests) == len(graded) + 1
    assert graded and all(_judge_call(body) for body in graded)  # graded again, never re-simulated
    with Store(db) as store:
        after = {e.id: e for e in store.episodes(run_id)}
        history = store.conn.execute("SELECT count(*) FROM verdict_history").fetchone()[0]
    assert after.keys() == before.keys() and history == 2  # the same episodes; the ungraded verdicts kept as history
    for eid, episode in after.items():
        assert episode.status == "succeeded" and episode.error is None
        assert episode.turns == before[eid].turns and episode.calls == before[eid].calls
        assert [v.status for v in episode.verdicts] == ["graded"]
    assert [r["ungraded"] for r in summary(load_run(run_id, db))] == [0, 0]


def nextstep(*args):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_batch_runs_show_grade_export(tmp_path):
    db = str(tmp_path / "n.db")
    with StubServer() as url:
        batch = nextstep("batch", "--personas", "aloof,unsure", "--max-turns", "2", "--run-id", "r1", "--base-url", url, "--db", db)
        assert batch.returncode == 0, batch.stderr
        assert "agreement between judges" not in batch.stdout  # one judge: nothing to agree on
        assert "run r1" in batch.stdout and "contact: number or email exchanged" in batch.stdout and "nextstep show r1" in batch.stdout
        listing = nextstep("runs", "--db", db)
        assert "r1" in listing.stdout and listing.returncode == 0
        regrade = nextstep("grade", "r1", "--judges", "2", "--base-url", url, "--db", db)
        assert regrade.returncode == 0, regrade.stderr
        assert "agreement between judges" in regrade.stdout
        assert "agreement between judges" in nextstep("show", "r1", "--db", db).stdout  # now two judges per episode
    with Store(tmp_path / "n.db") as store:
        episode = store.episodes("r1")[0]
        history = store.conn.execute("SELECT count(*) FROM verdict_history").fetchone()[0]
    assert len(episode.verdicts) == 2 and history == 2  # one old verdict per episode kept
    shown = nextstep("show", episode.id[:8], "--db", db)
    assert shown.returncode == 0 and episode.turns[0].text[:20] in shown.stdout
    out = tmp_path / "r1.csv"
    assert nextstep("export", "r1", "--format", "csv", "-o", str(out), "--db", db).returncode == 0
    assert len(pd.read_csv(out)) == 2
    missing = nextstep("show", "nope", "--db", db)
    assert missing.returncode == 2 and "no run or episode 'nope'" in missing.stderr.lower()
    not_ours = tmp_path / "other.db"
    sqlite3.connect(not_ours).execute("CREATE TABLE t (x)").connection.commit()
    bad = nextstep("runs", "--db", str(not_ours))
    assert bad.returncode == 2 and "not a nextstep database" in bad.stderr


async def test_a_batch_collects_garbage_less_often_and_restores_the_threshold(tmp_path, monkeypatch):
    """Hundreds of young-generation collections per batch walked the long-lived heap (benchmarks/README.md): a batch runs
    its episodes with the young threshold raised, and leaves the process's threshold as it found it."""
    import gc

    import simulator.runs.batch as batch

    seen, run_episode = [], batch.run_episode

    async def watched(ctx, **kwargs):
        seen.append(gc.get_threshold()[0])
        return await run_episode(ctx, **kwargs)

    monkeypatch.setattr(batch, "run_episode", watched)
    before = gc.get_threshold()
    with StubServer() as url:
        await run_grid({"personas": "aloof,unsure", "max_turns": 1, "judges": 0}, db=tmp_path / "n.db", base_url=url)
    assert len(seen) == 2 and min(seen) >= 10 * before[0] and gc.get_threshold() == before


async def test_ungraded_episodes_are_counted_apart_from_failed_ones(tmp_path, monkeypatch):
    """Issue 22 item 12: an episode whose judge's endpoint failed is ungraded (its conversation is kept and graded on
    resume), neither 'failed' in the batch line nor a failure against --max-failures."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)
    seen = []
    with StubServer(fault=lambda n, body: "reset" if _judge_call(body) else None) as url:  # every judge call dropped
        await run_grid({"personas": "all", "max_turns": 2}, db=tmp_path / "n.db", base_url=url, max_failures=1, concurrency=1,
                       on_progress=seen.append)  # fmt: skip
    p = seen[-1]
    assert (p.done, p.failed, p.stopped) == (0, 0, None)  # was (0, 1, '1 failures reached --max-failures')
    assert p.ungraded == 3
