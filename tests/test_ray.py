"""`batch --ray`: the grid's episodes on Ray actors of a local instance (2 CPUs, started once for the file), against the
loopback stub; the driver alone writes the store."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys

import pytest
import ray
from stub_server import StubServer
from test_batch import _batch_under_way, _stored

from simulator.core.errors import UserError
from simulator.runs import ray_pool
from simulator.runs.batch import Experiment, expand, run_grid
from simulator.storage.store import Store

# What differs between two runs of the same episode however it is run: ids, clocks and timings.
VOLATILE = {"id", "run_id", "started_at", "duration_s", "latency_s", "created_at", "at"}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the whole file (starting one takes seconds); its address, for `--ray ADDRESS`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             _node_ip_address="127.0.0.1")  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def scrub(value):
    """A record's content without what differs between two runs of the same episode (`VOLATILE`)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def stored(db, run_id: str) -> dict:
    """{(cell, rep): the episode's scrubbed content}, each (cell, rep) once (a second one fails here)."""
    with Store(db) as store:
        records = store.episodes(run_id)
    keys = [(e.cell, e.rep) for e in records]
    assert len(keys) == len(set(keys)), "an episode was stored twice"
    return {(e.cell, e.rep): scrub(e.model_dump(mode="json")) for e in records}


def planned(grid: dict) -> set:
    return {(c.key, c.rep) for c in expand(Experiment(**grid))}


async def test_the_same_seeds_give_the_same_records_with_and_without_ray(cluster, tmp_path):
    grid = {"personas": ["friendly", "aloof", "unsure"], "strategies": ["common_interest", "turn_back"], "reps": 2,
            "max_turns": 2, "judges": 1}  # fmt: skip
    with StubServer(latency=0.01) as url:  # answers are a hash of the request: the same request, the same answer
        await run_grid(grid, db=tmp_path / "here.db", run_id="r", base_url=url, concurrency=3)
        await run_grid(grid, db=tmp_path / "ray.db", run_id="r", base_url=url, concurrency=3, ray="")
    here, there = stored(tmp_path / "here.db", "r"), stored(tmp_path / "ray.db", "r")
    assert set(here) == set(there) == planned(grid)
    assert {e["status"] for e in there.values()} == {"succeeded"}
    assert all(e["verdicts"] and e["turns"] for e in there.values())  # graded conversations, not empty records
    differ = [key for key in here if here[key] != there[key]]
    assert differ == []


class Watched(ray_pool.Pool):
    """The pool, kept where the test can reach its actors' processes."""

    made: list[Watched] = []

    def __init__(self, *args):
        super().__init__(*args)
        Watched.made.append(self)


async def test_a_worker_killed_mid_batch_loses_no_episode_and_stores_none_twice(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_pool, "Pool", Watched)
    Watched.made.clear()
    grid = {"personas": ["friendly", "aloof", "unsure"], "reps": 6, "max_turns": 2, "judges": 0}
    db, killed = tmp_path / "n.db", []

    async def kill_a_busy_worker():
        """Once 3 episodes are stored, kill the process of an actor with episodes in flight."""
        while not (Watched.made and _stored(db) >= 3 and max(Watched.made[0].load) > 0):
            await asyncio.sleep(0.01)
        pool = Watched.made[0]
        busy = max(range(len(pool.load)), key=pool.load.__getitem__)
        killed.append((pool.load[busy], _stored(db)))
        os.kill(pool.pids[busy], signal.SIGKILL)

    with StubServer(latency=0.03) as url:
        killer = asyncio.ensure_future(kill_a_busy_worker())
        await run_grid(grid, db=db, run_id="k", base_url=url, concurrency=2, ray="")
        killer.cancel()
    assert killed, "the batch ended before a worker could be killed"
    in_flight, before = killed[0]
    assert in_flight > 0 and before < 18  # the worker died with episodes in flight, part way through
    episodes = stored(db, "k")
    assert set(episodes) == planned(grid)  # each (cell, rep) once: those in flight were run again, none stored twice
    assert {e["status"] for e in episodes.values()} == {"succeeded"}


@pytest.mark.parametrize("first, then", [("", None), (None, "")], ids=["ray, then without", "without, then ray"])
async def test_a_batch_stopped_part_way_resumes_with_or_without_ray(cluster, tmp_path, first, then):
    grid = {"personas": ["friendly", "aloof", "unsure"], "reps": 4, "max_turns": 2, "judges": 0}
    db = tmp_path / "n.db"
    with StubServer(latency=0.01) as url:
        # the stub reports 60 tokens a call, an episode of 2 rounds makes 8 calls: the budget ends it after a few
        await run_grid(grid, db=db, run_id="b", base_url=url, concurrency=1, max_tokens=1500, ray=first)
        part = len(stored(db, "b"))
        await run_grid(None, db=db, resume="b", base_url=url, concurrency=2, ray=then)
    assert 0 < part < 12
    episodes = stored(db, "b")
    assert set(episodes) == planned(grid) and {e["status"] for e in episodes.values()} == {"succeeded"}


async def test_more_actors_than_the_cluster_has_cpus_is_refused(cluster, tmp_path):
    with StubServer() as url:
        with pytest.raises(UserError, match=r"--actors 3: the Ray cluster has 2 CPU\(s\), and each actor takes one"):
            await run_grid({"personas": ["aloof"], "judges": 0, "max_turns": 1}, db=tmp_path / "n.db", base_url=url,
                           ray="", actors=3)  # fmt: skip


def test_ray_without_a_shared_endpoint_or_with_a_silent_cluster_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "simulator", "batch", "--ray", "--db", str(tmp_path / "n.db")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("nextstep: error: --ray needs an endpoint every machine can reach: give --base-url")
    assert "the embedded engine runs on this machine only" in result.stderr and result.stderr.count("\n") == 1
    with StubServer() as url:  # Ray would wait minutes for a cluster at a port where nothing listens
        result = subprocess.run([sys.executable, "-m", "simulator", "batch", "--ray", "127.0.0.1:1", "--base-url", url,
                                 "--db", str(tmp_path / "n.db")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "nextstep: error: --ray 127.0.0.1:1: no Ray cluster answers there (Connection refused)\n"
    assert not (tmp_path / "n.db").exists()


def test_a_ray_batch_stopped_by_sigterm_says_what_it_stored_and_resumes(cluster, tmp_path):
    """Joining Ray sets a SIGTERM handler of Ray's own (exit at once); the batch keeps its own, which unwinds as Ctrl-C
    does (Ray leaves SIGINT alone: a local batch's Ctrl-C test covers that path). Joins the file's instance by address."""
    db = tmp_path / "n.db"
    with StubServer(latency=0.02) as url:
        common = ["--base-url", url, "--db", str(db), "--concurrency", "2", "--ray", cluster]
        proc = _batch_under_way(db, ["--reps", "8", "--judges", "0", "--max-turns", "2", "--run-id", "cut", *common],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        said, part = " ".join(out.split()), _stored(db)
        assert proc.returncode == 130 and err.endswith("nextstep: interrupted\n"), err
        assert 0 < part < 24, "the batch must be stopped part way through"
        assert "stopped scheduling: interrupted; continue with: nextstep batch --resume cut --db" in said, out
        resumed = subprocess.run([sys.executable, "-m", "simulator", "batch", "--resume", "cut", *common],
                                 capture_output=True, text=True)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
    assert set(stored(db, "cut")) == planned({"personas": ["friendly", "aloof", "unsure"], "reps": 8})


def test_ray_takes_the_next_word_as_its_address_only_when_it_is_one():
    from simulator.cli.options import ray_address

    assert ray_address(["batch", "--ray"]) == ["batch", "--ray="]
    assert ray_address(["batch", "--ray", "--reps", "2"]) == ["batch", "--ray=", "--reps", "2"]
    assert ray_address(["batch", "--ray", "10.0.0.5:6379", "--reps", "2"]) == ["batch", "--ray=10.0.0.5:6379", "--reps", "2"]
    assert ray_address(["grade", "--ray", "run-1dd45ef2d2"]) == ["grade", "--ray=", "run-1dd45ef2d2"]  # a run id, not an address
    assert ray_address(["batch", "--ray=ray://head:10001"]) == ["batch", "--ray=ray://head:10001"]


async def test_a_branch_on_ray_continues_as_one_here_does(cluster, tmp_path):
    import sqlite3

    from test_branch import keep_talking

    from simulator.runs.branch import Treatment, run_branches

    here, there = tmp_path / "here.db", tmp_path / "ray.db"
    with StubServer(fault=keep_talking) as url:
        await run_grid({"personas": ["aloof", "friendly"], "reps": 2, "max_turns": 3, "judges": 0}, db=here, run_id="base",
                       base_url=url)  # fmt: skip
        with sqlite3.connect(here) as a, sqlite3.connect(there) as b:
            a.backup(b)  # the same parents in both
        runs = [await run_branches("base", at="2", treatment=Treatment(strategy="high_point_exit"), reps=2, db=db,
                                   base_url=url, ray=ray) for db, ray in ((here, None), (there, ""))]  # fmt: skip
    assert runs[0] == runs[1]
    mine, theirs = stored(here, runs[0][0]), stored(there, runs[1][0])
    assert len(mine) == 4 * 2 * 2  # 4 parents, each continued twice in each arm
    assert {e["status"] for e in theirs.values()} == {"succeeded"} and all(e["verdicts"] for e in theirs.values())
    assert [key for key in mine if mine[key] != theirs[key]] == []


def test_grade_on_ray_gives_the_verdicts_grading_here_gives(cluster, tmp_path):
    import sqlite3

    from simulator import api

    here, there = tmp_path / "here.db", tmp_path / "ray.db"
    with StubServer(latency=0.01) as url:
        api.run_batch({"personas": "all", "reps": 2, "max_turns": 2, "judges": 0}, db=here, run_id="r", base_url=url)
        with sqlite3.connect(here) as a, sqlite3.connect(there) as b:
            a.backup(b)
        graded = [api.grade(["r"], db=db, judges=2, base_url=url, ray=ray) for db, ray in ((here, None), (there, ""))]
    assert [g["graded"] for g in graded] == [6, 6] and not graded[1]["failed"]
    mine, theirs = stored(here, "r"), stored(there, "r")
    assert all(len(e["verdicts"]) == 2 and all(v["status"] == "graded" for v in e["verdicts"]) for e in theirs.values())
    assert [key for key in mine if mine[key] != theirs[key]] == []
