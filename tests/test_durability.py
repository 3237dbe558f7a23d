"""Nothing lost: two writers on one run, failing re-grades, full disks, locked and read-only databases (issue 24)."""

from __future__ import annotations

import json
import re
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from stub_server import StubServer

from simulator.storage.store import Store

JUDGE_OUTPUTS = {"transition_turns", "transition_grades", "flags", "outcome"}


def nextstep(*args, limit_file_bytes: int | None = None, cwd=None):
    """The CLI in a child process; `limit_file_bytes` caps the size of any file it writes (RLIMIT_FSIZE): a full disk."""
    cap = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))) if limit_file_bytes else None
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, preexec_fn=cap)  # fmt: skip


def judge_call(body: dict) -> bool:
    fmt = body.get("response_format") or {}
    return ((fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}).get("title")) in JUDGE_OUTPUTS


# --- 3: every file is written whole or not at all ---------------------------------------------------------------------


def test_grading_an_episode_file_on_a_full_disk_leaves_the_file_as_it_was(tmp_path):
    """`grade EPISODE.json` rewrote the only copy in place: when the disk filled, the file was cut short (invalid JSON).
    Here the child may write no file bigger than the episode file already is (the graded one is bigger)."""
    import simulator.api as api

    with StubServer() as url:
        record = api.run_episode("workplace", "aloof", "no_ask", judges=0, max_turns=2, base_url=url)
        path = api.save_episode(record, tmp_path)
        before = path.read_bytes()
        result = nextstep("grade", str(path), "--base-url", url, "--db", str(tmp_path / "n.db"),
                          limit_file_bytes=len(before) + 100)  # fmt: skip
    assert path.read_bytes() == before  # whole, unchanged
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{path}: cannot write" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left behind


# --- 1: two processes on one run ------------------------------------------------------------------------------------

GRID = ["--personas", "all", "--strategies", "all", "--judges", "0", "--max-turns", "2", "--concurrency", "2"]  # 21 episodes


def batch_process(url: str, db: Path, *, resume: bool = False) -> subprocess.Popen:
    """`nextstep batch` of GRID as run 'r', or `--resume r`, in a child process."""
    run = ["--resume", "r"] if resume else [*GRID, "--run-id", "r"]
    return subprocess.Popen([sys.executable, "-m", "simulator", "batch", *run, "--base-url", url, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def stored(db: Path) -> dict[str, int]:
    """Episodes of run 'r' by status, read with plain SQL (0 while the file does not exist yet)."""
    import sqlite3

    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM episodes WHERE run_id = 'r' GROUP BY status").fetchall())
    except sqlite3.OperationalError:  # the tables are not made yet
        return {}
    finally:
        conn.close()


def wait_for(db: Path, n: int, proc: subprocess.Popen) -> None:
    import time

    deadline = time.monotonic() + 120
    while sum(stored(db).values()) < n:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
        time.sleep(0.05)


def held_after(n_free: int, gate: threading.Event):
    """A stub fault that holds every request after the first `n_free` until `gate` is set (then answers normally), or
    for 60 s at most: then the gate opens for all (so a test on code that lets both writers on waits once, not forever)."""

    def fault(n, body):
        if n >= n_free and not gate.wait(timeout=60):
            gate.set()
        return None

    return fault


def test_a_second_batch_on_a_run_being_written_is_refused_naming_the_holder(tmp_path):
    """Two processes on one run both simulated every episode (about twice the requests of one run). The second is
    refused, in one line naming the first (pid, host, since when), before it sends a request."""
    import socket

    alone = StubServer(latency=0.02)
    with alone as url:
        assert batch_process(url, tmp_path / "alone.db").wait(timeout=300) == 0
    gate = threading.Event()
    both = StubServer(fault=held_after(30, gate))  # the first is still at work when the second starts
    with both as url:
        first = batch_process(url, tmp_path / "n.db")
        wait_for(tmp_path / "n.db", 3, first)
        second = batch_process(url, tmp_path / "n.db")
        _, err = second.communicate(timeout=300)
        gate.set()
        first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"run 'r' in {tmp_path / 'n.db'} is being written by pid {first.pid} on {socket.gethostname()} since " in err
    assert len(both.requests) == len(alone.requests)  # the episodes were simulated once
    assert stored(tmp_path / "n.db") == {"succeeded": 21}


def test_a_failing_second_process_cannot_replace_successes(tmp_path):
    """A healthy and a failing process on one run: the failures replaced all the successes, both exiting 0."""
    db, gate = tmp_path / "n.db", threading.Event()
    with StubServer(fault=held_after(30, gate)) as good, StubServer(fault=lambda n, body: (400, {}, {"error": {"message": "no"}})) as bad:
        healthy = batch_process(good, db)
        wait_for(db, 3, healthy)
        failing = batch_process(bad, db, resume=True)
        failing.communicate(timeout=300)
        gate.set()
        healthy.communicate(timeout=300)
    assert healthy.returncode == 0 and failing.returncode != 0
    assert stored(db) == {"succeeded": 21}


def test_a_killed_holder_does_not_block_the_resume(tmp_path):
    """SIGKILL leaves no chance to let go of the run: a holder whose process is gone is stale at once."""
    db = tmp_path / "n.db"
    with StubServer(latency=0.02) as url:
        first = batch_process(url, db)
        wait_for(db, 2, first)
        first.kill()
        first.wait()
        again = batch_process(url, db, resume=True)
        _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert stored(db) == {"succeeded": 21}


def test_a_save_never_replaces_a_success_with_a_failure_and_keeps_every_attempt(tmp_path):
    from test_store import SPEC, record

    with Store(tmp_path / "n.db") as store:
        store.create_run("r", SPEC)
        store.save_episode("r", "a", 0, record("aaaa00000001", failed=True))  # a failure, then its retry succeeds
        store.save_episode("r", "a", 0, record("aaaa00000002"))
        store.save_episode("r", "a", 0, record("aaaa00000003", failed=True))  # a late failure of the same cell
        current = store.episodes("r")
        history = store.conn.execute("SELECT episode_id, status FROM episode_history ORDER BY id").fetchall()
    assert [(e.id, e.status) for e in current] == [("aaaa00000002", "succeeded")]
    assert [tuple(row) for row in history] == [("aaaa00000001", "failed"), ("aaaa00000003", "failed")]


# --- 2: re-grading a run --------------------------------------------------------------------------------------------


def current_verdicts(db: Path) -> dict[str, list[str]]:
    """Each episode's current verdicts (as stored JSON) and its status, read with plain SQL."""
    import sqlite3

    conn = sqlite3.connect(db)
    rows = conn.execute("""SELECT e.id, e.status, group_concat(v.verdict_json, '|') FROM episodes e
                           LEFT JOIN verdicts v ON v.episode_id = e.id GROUP BY e.id ORDER BY e.id""").fetchall()
    conn.close()
    return {eid: [status, verdicts] for eid, status, verdicts in rows}


@pytest.fixture
def graded_run(tmp_path):
    """Run 'r' of three episodes, each graded by one judge; returns the database."""
    db = tmp_path / "n.db"
    with StubServer() as url:
        result = nextstep("batch", "--personas", "all", "--max-turns", "2", "--run-id", "r", "--base-url", url, "--db", str(db))
    assert result.returncode == 0, result.stderr
    return db


def test_a_regrade_against_a_failing_endpoint_keeps_the_old_verdicts_current_and_fails(graded_run):
    """It demoted 3 of 3 good episodes to 'ungraded' and said 'saved: new verdicts', exit 0."""
    before = current_verdicts(graded_run)
    assert [status for status, _ in before.values()] == ["succeeded"] * 3
    with StubServer(fault=lambda n, body: None if PREFLIGHT in json.dumps(body) else (400, {}, {"error": {"message": "no"}})) as url:
        result = nextstep("grade", "r", "--seed", "1", "--base-url", url, "--db", str(graded_run))  # another panel
    assert current_verdicts(graded_run) == before
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kept the earlier verdicts of 3 episode(s)" in result.stdout and "saved: new verdicts" not in result.stdout


def test_grade_run_again_skips_the_episodes_already_graded_with_this_rubric_and_panel(graded_run):
    first, again, other_seed = StubServer(), StubServer(), StubServer()
    with first as url:
        assert nextstep("grade", "r", "--seed", "4", "--base-url", url, "--db", str(graded_run)).returncode == 0
    graded = current_verdicts(graded_run)
    with again as url:
        result = nextstep("grade", "r", "--seed", "4", "--base-url", url, "--db", str(graded_run))
    assert result.returncode == 0, result.stderr
    assert first.requests and [b for b in again.requests if PREFLIGHT not in json.dumps(b)] == []  # nothing graded twice
    assert "3 episode(s) already graded with this rubric and panel" in result.stdout
    assert current_verdicts(graded_run) == graded
    with other_seed as url:  # another panel (judge seeds differ): graded again
        assert nextstep("grade", "r", "--seed", "5", "--base-url", url, "--db", str(graded_run)).returncode == 0
    regraded = current_verdicts(graded_run)
    assert other_seed.requests and all(regraded[e] != graded[e] for e in graded)  # every episode graded anew


def test_an_interrupted_regrade_under_a_new_rubric_is_named_by_show_and_resumes(graded_run, tmp_path):
    """A re-grade under another rubric that fails part way leaves some episodes under each rubric: `show` says so, and
    the same `grade` again grades only the rest."""
    from simulator.core.files import data_dir

    rubric = tmp_path / "rubric.yaml"
    rubric.write_text((data_dir("prompts") / "rubric.yaml").read_text().replace("says what the contact is for", "says plainly what the contact is for", 1))
    args = ["grade", "r", "--rubric", str(rubric), "--db", str(graded_run)]
    first = first_line(graded_run)  # of the episode graded first (the run's first cell)
    only_first = lambda n, body: None if first in json.dumps(body) or PREFLIGHT in json.dumps(body) else (400, {}, {"error": {"message": "gone"}})  # noqa: E731
    with StubServer(fault=only_first) as url:  # the first episode is graded, then the endpoint is gone
        result = nextstep(*args, "--base-url", url)
    assert result.returncode == 1 and "kept the earlier verdicts of 2 episode(s)" in result.stdout, result.stdout
    shown = nextstep("show", "r", "--db", str(graded_run))
    assert "graded under 2 rubrics" in shown.stdout, shown.stdout
    cut = current_verdicts(graded_run)
    rest = StubServer()
    with rest as url:
        assert nextstep(*args, "--base-url", url).returncode == 0
    assert rest.requests and not any(first in json.dumps(body) for body in rest.requests)  # only the two left
    after = current_verdicts(graded_run)
    assert [after[e] == cut[e] for e in sorted(after)].count(True) == 1  # the first episode's verdicts untouched
    assert "graded under" not in nextstep("show", "r", "--db", str(graded_run)).stdout


PREFLIGHT = '"preflight"'  # in the body of the test call a command makes before it fans out (not an episode's)


def first_line(db: Path) -> str:
    """The first line of the run's first episode in cell order (how `grade RUN` goes through a run)."""
    import sqlite3

    conn = sqlite3.connect(db)
    [(text,)] = conn.execute("""SELECT t.text FROM turns t JOIN episodes e ON e.id = t.episode_id
                                WHERE t.turn = 0 ORDER BY e.cell, e.rep LIMIT 1""").fetchall()
    conn.close()
    return text


# --- 5: storage errors mid-batch, and read-only media --------------------------------------------------------------


def test_a_disk_that_fills_mid_batch_stops_it_in_one_line_with_the_resume_command(tmp_path):
    """The child may write no file past 400 kB: the database fills part way through the 21 episodes."""
    db = tmp_path / "n.db"
    with StubServer() as url:
        full = nextstep("batch", *GRID, "--run-id", "r", "--base-url", url, "--db", str(db), limit_file_bytes=400_000)
        kept = stored(db)
        assert full.returncode == 2, full.stdout + full.stderr
        assert full.stderr.count("\n") == 1 and "Traceback" not in full.stderr, full.stderr
        assert f"{db}: cannot write" in full.stderr and f"nextstep batch --resume r --db {db}" in full.stderr
        assert 0 < kept.get("succeeded", 0) < 21 and set(kept) == {"succeeded"}  # what finished stays
        assert f"{kept['succeeded']} succeeded episode(s) of run r stored" in full.stderr
        again = nextstep("batch", "--resume", "r", "--base-url", url, "--db", str(db))
    assert again.returncode == 0, again.stderr
    assert stored(db) == {"succeeded": 21}
    with Store(db) as store:
        assert store.integrity_ok()


async def test_a_lock_held_past_the_busy_timeout_stops_the_batch_with_the_resume_command(tmp_path, monkeypatch):
    """Another connection takes the write lock after the 4th request and keeps it: the batch's next save waits the
    busy timeout (cut to 0.3 s here), then the batch stops with one clear error; the episodes saved before stay."""
    import sqlite3
    import threading

    import simulator.storage.store as store_module
    from simulator.core.errors import UserError
    from simulator.runs.batch import run_grid

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
    db, holder, saved = tmp_path / "n.db", [], threading.Event()

    def lock_after_some(n, body):
        if n == 40 and not holder:  # by then a few episodes (about 5 calls each) are saved
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            holder.append(conn)
        return None

    with StubServer(fault=lock_after_some) as url:
        with pytest.raises(UserError) as raised:
            await run_grid({"personas": "all", "strategies": "all", "max_turns": 2, "judges": 0}, db=db, run_id="r",
                           base_url=url, concurrency=1)  # fmt: skip
    holder[0].execute("ROLLBACK")
    message = str(raised.value)
    assert "database is locked" in message and f"nextstep batch --resume r --db {db}" in message and "\n" not in message
    assert 0 < stored(db).get("succeeded", 0) < 21


def test_a_database_on_read_only_media_can_be_read(tmp_path):
    """runs, show, export and compare on a database in a folder mounted read-only (a user namespace's bind mount)."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare (user and mount namespaces) to mount a folder read-only")
    media, out = tmp_path / "media", tmp_path / "out"
    media.mkdir()
    out.mkdir()
    with StubServer() as url:
        assert nextstep("batch", "--personas", "aloof,unsure", "--max-turns", "2", "--run-id", "r", "--base-url", url,
                        "--db", str(media / "n.db")).returncode == 0  # fmt: skip
    commands = [["runs"], ["show", "r"], ["export", "r", "--format", "csv", "-o", str(out / "r.csv")], ["compare", "r"]]
    python = f"{sys.executable} -m simulator"
    script = " && ".join([f"mount --bind {media} {media}", f"mount -o remount,ro,bind {media}", f"touch {media}/x 2>/dev/null; test ! -e {media}/x"]
                         + [f"{python} {' '.join(c)} --db {media}/n.db > {out}/{c[0]}.out 2>&1" for c in commands])  # fmt: skip
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    outputs = {c[0]: (out / f"{c[0]}.out").read_text() if (out / f"{c[0]}.out").exists() else "" for c in commands}
    assert result.returncode == 0, outputs
    assert re.search(r"^r ", outputs["runs"], re.M) and "aloof" in outputs["show"] and (out / "r.csv").read_text().count("\n") == 3


# --- 14: summaries read scalars, not records held at once ---------------------------------------------------------


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """Runs of 200 and of 2,000 synthetic episodes (benchmarks/show_scale.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import show_scale

    made = {n: tmp_path_factory.mktemp("scale") / f"{n}.db" for n in (200, 2_000)}
    for n, db in made.items():
        show_scale.generate(db, n)
    return show_scale, made


@pytest.mark.parametrize("command", ["show", "report", "personas"])
def test_summary_memory_grows_with_scalars_not_records(scaled, command):
    """Holding every record cost about 60 kB an episode (1.15 GB for 20,160); one record at a time and a frame of
    scalars (and, for the audit, each persona's states), a few kB."""
    show_scale, made = scaled
    rss = {n: show_scale.measure(db, command=command)["peak_rss_mb"] for n, db in made.items()}
    per_episode_kb = (rss[2_000] - rss[200]) * 1024 / 1_800
    assert per_episode_kb < 15, rss


# --- 4: calibrate -o saves as it goes, and resumes ------------------------------------------------------------------


def gold_set(path: Path, items: int) -> Path:
    """The first `items` transcripts of the shipped gold set."""
    lines = (Path(__file__).resolve().parents[1] / "evaluations" / "gold" / "team.jsonl").read_text().splitlines()
    path.write_text("\n".join(lines[:items]) + "\n")
    return path


def test_an_interrupted_calibration_keeps_its_verdicts_and_resumes(tmp_path):
    """Killed part way, `calibrate -o` wrote nothing; now the file holds the verdicts so far, and the same command
    again grades only the items not in it."""
    import signal
    import time

    gold, out = gold_set(tmp_path / "gold.jsonl", 4), tmp_path / "cal.json"
    slow = StubServer(latency=0.3)
    with slow as url:
        child = subprocess.Popen([sys.executable, "-m", "simulator", "calibrate", str(gold), "-o", str(out), "--base-url", url],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while not (out.exists() and json.loads(out.read_text())["verdicts"]):
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
    saved = json.loads(out.read_text())
    assert saved["report"] is None and 1 <= len(saved["verdicts"]) < 4  # the verdicts so far, no report yet
    items = {json.loads(line)["id"]: json.loads(line) for line in gold.read_text().splitlines()}
    rest = StubServer()
    with rest as url:
        again = nextstep("calibrate", str(gold), "-o", str(out), "--base-url", url)
    assert again.returncode == 0, again.stderr
    done = json.loads(out.read_text())
    assert sorted(done["verdicts"]) == sorted(items) and done["report"]["items"] == 4
    assert all(done["verdicts"][i] == saved["verdicts"][i] for i in saved["verdicts"])  # kept, not graded again
    first_lines = [items[i]["turns"][0]["text"] for i in saved["verdicts"]]
    assert rest.requests and not any(line in json.dumps(body) for body in rest.requests for line in first_lines)
