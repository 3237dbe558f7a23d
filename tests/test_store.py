"""The SQLite store: round trips, retries, concurrency, re-grading, and plain-SQL readability."""

from __future__ import annotations

import multiprocessing as mp
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from simulator.core.errors import UserError
from simulator.core.records import Episode, RunSpec, Verdict
from simulator.storage.store import _TABLES, SCHEMA, Store

SPEC = RunSpec(experiment={"settings": ["supermarket"], "personas": ["unsure"], "strategies": ["common_interest"], "reps": 2},
               reasks=2)


def call(role: str, tokens: int = 10) -> dict:
    return {"role": role, "purpose": "utterance", "model": "m", "seed": 1, "prompt_tokens": tokens,
            "completion_tokens": 2, "latency_s": 0.5, "finish_reason": "stop", "ok": True, "error": None}  # fmt: skip


def verdict(judge: int = 0, score: int = 3) -> Verdict:
    grade = {"status": "scored", "score": score, "turn": 2, "quote": "coffee?", "reason": "asked warmly"}
    return Verdict.model_validate({
        "judge": judge, "model": "judge-m", "seed": 5, "temperature": 0.0, "rubric_hash": "r1", "prompts": {"evaluator_flags": "h9"},
        "unscored": ["turn 2 timing: no evidence"],
        "transitions": [{"turns": [2], "turn": 2, "ask_turn": 2, "has_ask": True, "source": "judge", "timing_objective": None,
                         "conditions": {"rapport": grade, "timing": {"status": "unscored", "score": None, "reason": "no evidence"}}}],
        "flags": {"status": "scored", "raised": [{"flag": "pushy", "turn": 2, "quote": "coffee?", "reason": "too soon"}], "rejected": []},
        "outcome": {"status": "scored"}, "fidelity": None, "calls": [call("judge", 100)],
    })  # fmt: skip


def record(episode_id: str, *, persona: str = "unsure", failed: bool = False, score: int = 3) -> Episode:
    """A small episode record in the runner's shape; a failed one has no outcome or verdicts."""
    base = {
        "id": episode_id, "setting": "supermarket", "persona": persona, "strategy": "common_interest",
        "profile": {"practitioner_gender": "man", "persona_gender": "woman"}, "seed": 7,
        "started_at": "2026-01-01T00:00:00+00:00",
        "provenance": {"backend": "fake", "models": {"practitioner": "p-m", "persona": "q-m"}, "temperature": 0.7,
                       "seed": 7, "max_turns": 4, "reasks": 2, "prompts": {"practitioner": "h1", "persona": "h2"},
                       "prompt_texts": {"h1": "You are {{ x }}.", "h2": "You are {{ y }}."}, "catalog": {}, "version": "0"},
    }  # fmt: skip
    if failed:
        return Episode.model_validate(base | {"status": "failed", "error": "ModelError: endpoint down", "turns": [], "outcome": None,
                       "fidelity": None, "verdicts": [], "calls": [call("practitioner")], "usage": None, "duration_s": 0.1})  # fmt: skip
    return Episode.model_validate(base | {
        "status": "succeeded", "error": None,
        "turns": [{"index": 0, "speaker": "practitioner", "text": "Hi", "intent": "rapport"},
                  {"index": 1, "speaker": "persona", "text": "Hello", "interest": 3, "comfort": 3, "shares_contact": False},
                  {"index": 2, "speaker": "practitioner", "text": "coffee?", "intent": "ask"}],
        "outcome": {"exchanged": "none", "next_meeting": None, "asked": True, "first_ask_turn": 2, "final_interest": 3,
                    "final_comfort": 3, "end_reason": "max_turns", "ended_by": "limit"},
        "fidelity": {"ok": True, "problems": []}, "verdicts": [verdict(score=score)],
        "calls": [call("practitioner"), call("persona")],
        "usage": {"calls": 3, "prompt_tokens": 120, "completion_tokens": 6, "latency_s": 1.5}, "duration_s": 2.0,
    })  # fmt: skip


@pytest.fixture
def db(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        store.create_run("r1", SPEC)
        yield store


def count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_round_trip(db):
    db.save_episode("r1", "cell-a", 0, record("aaaa11112222"))
    rec = record("aaaa11112222").model_copy(update={"run_id": "r1", "cell": "cell-a", "rep": 0})  # the store files it
    assert db.episode("aaaa11112222") == rec
    assert db.episode("aaaa") == rec  # a unique prefix is enough
    assert db.episodes("r1") == [rec]
    assert db.done("r1") == {("cell-a", 0)}
    assert (count(db, "turns"), count(db, "calls"), count(db, "verdicts"), count(db, "scores"), count(db, "flags")) == (3, 3, 1, 2, 1)
    judged = db.conn.execute("SELECT count(*) FROM calls WHERE judge = 0").fetchone()[0]
    assert judged == 1
    assert db.conn.execute("SELECT text FROM prompts WHERE hash = 'h1'").fetchone()[0] == "You are {{ x }}."
    assert db.run("r1")["counts"] == {"succeeded": 1}
    assert db.runs()[0] | {"created_at": None} == {"id": "r1", "created_at": None, "episodes": 1, "succeeded": 1, "ungraded": 0,
                                                    "failed": 0, "tokens": 126, "saved_tokens": 0, "cost_usd": None,
                                                    "planned": None}  # fmt: skip
    with pytest.raises(UserError, match="no episode 'zzz'"):
        db.episode("zzz")


def test_retry_replaces_failed_attempt_and_keeps_error(db):
    db.save_episode("r1", "cell-a", 0, record("fail00000001", failed=True))
    db.save_episode("r1", "cell-a", 0, record("fail00000002", failed=True))
    assert db.done("r1") == set()
    assert db.episodes("r1", include_failed=False) == []
    db.save_episode("r1", "cell-a", 0, record("good00000001"))
    assert [e.id for e in db.episodes("r1")] == ["good00000001"]
    assert db.done("r1") == {("cell-a", 0)}
    errors = db.conn.execute("SELECT episode_id, error FROM errors ORDER BY id").fetchall()
    assert [tuple(e) for e in errors] == [("fail00000001", "ModelError: endpoint down"), ("fail00000002", "ModelError: endpoint down")]
    # The failed attempts' child rows went with them.
    assert db.conn.execute("SELECT count(*) FROM calls WHERE episode_id LIKE 'fail%'").fetchone()[0] == 0


def test_same_cell_twice_makes_no_duplicates(db):
    db.save_episode("r1", "cell-a", 0, record("aaaa00000001"))
    db.save_episode("r1", "cell-a", 0, record("aaaa00000001"))
    assert (count(db, "episodes"), count(db, "turns"), count(db, "scores"), count(db, "prompts")) == (1, 3, 2, 2)


def test_not_a_nextstep_database(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 50)
    with pytest.raises(UserError, match="notes.txt: not a nextstep database$"):
        Store(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE birds (name TEXT)")
    conn.close()
    with pytest.raises(UserError, match="other.db: not a nextstep database$"):
        Store(other)
    assert not (tmp_path / "other.db-wal").exists()  # we left their file alone


def test_reopen_existing(tmp_path):
    Store(tmp_path / "runs.db").close()
    with Store(tmp_path / "runs.db") as store:
        assert store.conn.execute("SELECT value FROM meta").fetchone()[0] == "nextstep/1"


def test_create_run_idempotent_and_conflict(db):
    db.create_run("r1", SPEC.model_copy())
    assert db.run("r1")["spec"] == SPEC
    with pytest.raises(UserError, match="was made with a different reasks; start a new run"):
        db.create_run("r1", SPEC.model_copy(update={"reasks": 3}))
    with pytest.raises(UserError, match="no run 'r2'"):
        db.run("r2")
    with pytest.raises(UserError, match="no run 'r2'"):
        db.save_episode("r2", "cell-a", 0, record("aaaa00000001"))


def test_runs_newest_first(db):
    db.create_run("r2", SPEC)
    db.save_episode("r2", "c", 0, record("bbbb00000001", failed=True))
    assert [(r["id"], r["failed"]) for r in db.runs()] == [("r2", 1), ("r1", 0)]


def _save_many(path, worker: int) -> None:
    with Store(path) as store:
        store.create_run("r1", SPEC)
        for rep in range(50):
            store.save_episode("r1", f"worker-{worker}", rep, record(f"w{worker}-{rep:09d}"))


def test_two_processes_lose_nothing(tmp_path):
    path = tmp_path / "runs.db"
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_save_many, args=(path, w)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]
    with Store(path) as store:
        assert len(store.done("r1")) == 100
        assert count(store, "turns") == 300
        assert store.integrity_ok()


def test_opening_waits_for_a_writer_on_a_file_not_yet_in_wal_mode(tmp_path):
    """A new file is in rollback mode until a Store switches it to WAL, and that switch writes the file. SQLite refuses
    `PRAGMA journal_mode = WAL` at once, without the busy timeout, while another connection writes to a rollback-mode
    file, so two batches opening one new database together could fail with 'database is locked'. Here a connection
    writes the tables in rollback mode for half a second while a Store opens the file: the Store must wait, not fail."""
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    for statement in filter(str.strip, _TABLES.split(";")):
        writer.execute(statement)
    writer.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
    threading.Timer(0.5, writer.execute, ("COMMIT",)).start()
    started = time.monotonic()
    with Store(path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert time.monotonic() - started >= 0.4  # it waited for the writer
    writer.close()


def test_integrity_ok(db):
    db.save_episode("r1", "cell-a", 0, record("aaaa00000001"))
    assert db.integrity_ok()


def test_replace_verdicts_keeps_history(db):
    db.save_episode("r1", "cell-a", 0, record("aaaa00000001", score=1))
    db.replace_verdicts("aaaa", [verdict(score=4), verdict(judge=1, score=5)])
    assert [s for (s,) in db.conn.execute("SELECT score FROM scores WHERE condition = 'rapport' ORDER BY judge")] == [4, 5]
    assert [v.judge for v in db.episode("aaaa00000001").verdicts] == [0, 1]
    assert db.episode("aaaa00000001").usage.prompt_tokens == 220
    assert count(db, "verdict_history") == 1 and count(db, "flags") == 2
    assert db.conn.execute("SELECT count(*) FROM calls WHERE judge IS NOT NULL").fetchone()[0] == 2
    db.replace_verdicts("aaaa00000001", [verdict(score=2)])
    assert count(db, "verdict_history") == 3  # every earlier verdict is still on record


def test_readable_with_plain_sql(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.create_run("r1", SPEC)
        store.save_episode("r1", "a", 0, record("aaaa00000001", persona="unsure", score=2))
        store.save_episode("r1", "a", 1, record("aaaa00000002", persona="unsure", score=4))
        store.save_episode("r1", "b", 0, record("bbbb00000001", persona="keen", score=5))
    conn = sqlite3.connect(path)
    rows = conn.execute("""SELECT e.persona, AVG(s.score) FROM episodes e JOIN scores s ON s.episode_id = e.id
                           WHERE s.status = 'scored' GROUP BY e.persona ORDER BY e.persona""").fetchall()
    conn.close()
    assert rows == [("keen", 5.0), ("unsure", 3.0)]


def test_only_the_store_runs_sql():
    """Queries live in the store; analysis and commands call its methods (once compare read `store.conn` itself).
    The response cache is a file of its own under the models, which every call passes (README: the response cache)."""
    root = Path(__file__).resolve().parents[1]
    sql = re.compile(r"\.conn\b|\bsqlite3\b|\.execute\(")
    own = {root / "simulator" / "models" / "cache.py"}
    found = [f"{path.relative_to(root)}:{n}" for folder in ("simulator", "evaluations") for path in (root / folder).rglob("*.py")
             if "storage" not in path.parts and path not in own for n, line in enumerate(path.read_text().splitlines(), start=1) if sql.search(line)]
    assert found == []


def _judged_in_character(v: Verdict, in_character: bool) -> Verdict:
    return Verdict.model_validate(v.model_dump() | {"fidelity": {"status": "scored", "reason": "x", "in_character": in_character}})


def test_out_of_character_and_usable_have_one_definition(db):
    """Issue 22 items 12-13: the store's columns and the frame say the same; a judge's fidelity check counts, and an
    episode a person abandoned (`play`: an empty line) is no outcome to count."""
    from evaluations.analysis.frame import episode_row

    judged_out = record("j").model_copy(update={"verdicts": [_judged_in_character(verdict(), False)]})
    abandoned = record("p").model_copy(update={"outcome": record("p").outcome.model_copy(
        update={"end_reason": "ended_by_person", "ended_by": "persona"})})  # fmt: skip
    episodes = {"j": judged_out, "p": abandoned, "f": record("f", failed=True), "ok": record("ok")}
    for rep, (name, e) in enumerate(episodes.items()):
        db.save_episode("r1", "c", rep, e)
    columns = {row[1] for row in db.conn.execute("PRAGMA table_info(episodes)")}
    assert "usable" in columns
    stored = {r[0]: (r[1], r[2]) for r in db.conn.execute("SELECT id, fidelity_ok, usable FROM episodes")}
    # by hand: rules pass on j but its judge found her out of character; p was abandoned; f failed
    assert stored == {"j": (0, 0), "p": (1, 0), "f": (None, 0), "ok": (1, 1)}
    rows = {e: episode_row(r) for e, r in episodes.items()}
    assert {e: (r["fidelity_ok"], r["usable"]) for e, r in rows.items()} == {
        "j": (False, False), "p": (True, False), "f": (None, False), "ok": (True, True)}
    db.replace_verdicts("j", [_judged_in_character(verdict(), True)])  # re-graded: now in character
    assert tuple(db.conn.execute("SELECT fidelity_ok, usable FROM episodes WHERE id = 'j'").fetchone()) == (1, 1)


def test_a_run_id_resolves_from_a_unique_prefix_and_names_candidates_or_the_closest(db):
    for run_id in ("run-aa11", "run-aa22", "run-bb33"):
        db.create_run(run_id, RunSpec(play={}))
    assert db.resolve_run("run-b") == "run-bb33" and db.resolve_run("r1") == "r1"
    with pytest.raises(UserError, match=r"'run-aa' is the start of more than one run id in .*: run-aa11, run-aa22; give more"):
        db.resolve_run("run-aa")
    with pytest.raises(UserError, match=r"no run 'run-bx33' in .*; the closest: run-bb33$"):
        db.resolve_run("run-bx33")
    assert db.find("run-bb") == ("run", "run-bb33")


def test_completion_counts_done_of_planned_and_balance_by_cell(db):
    db.create_run("g", RunSpec(experiment={"reps": 2}, planned=6))  # three cells of two repetitions
    for cell, rep, failed in (("a", 0, False), ("a", 1, False), ("b", 0, False), ("b", 1, True)):
        db.save_episode("g", cell, rep, record(f"{cell}{rep}0000000000", failed=failed))
    c = db.completion("g")
    assert (c["done"], c["planned"], c["failed"], c["complete"], c["balanced"]) == (3, 6, 1, False, False)
    assert c["resume"] == f"nextstep batch --resume g --db {db.path}"
    db.save_episode("g", "b", 1, record("b1ok00000000"))
    for rep in (0, 1):
        db.save_episode("g", "c", rep, record(f"c{rep}ok00000000"))
    c = db.completion("g")
    assert (c["done"], c["complete"], c["balanced"]) == (6, True, True)
    assert db.completion("r1")["planned"] is None and db.completion("r1")["complete"] is None
