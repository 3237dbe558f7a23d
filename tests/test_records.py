"""Typed records: a database written by nextstep 0.1.0 reads as records; a stored row that does not is one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says
from stub_server import StubServer
from test_cli import assert_one_line_error, nextstep

from evaluations.analysis.frame import export, load_run
from simulator.conversation.catalog import Profile
from simulator.conversation.graph import Scenario
from simulator.conversation.runner import run_episode
from simulator.core.errors import UserError
from simulator.core.records import SCHEMA_VERSION, Episode, RunSpec
from simulator.runs.batch import Cell, _crashed, run_grid
from simulator.storage.store import Store

OLD_DB = Path(__file__).parent / "fixtures" / "nextstep-0.1.0.db"  # made by tests/fixtures/make_old_db.py


@pytest.fixture
def old_db(tmp_path) -> Path:
    """A copy of the 0.1.0 database: opening it adds columns and a WAL, and the fixture must stay as 0.1.0 wrote it."""
    return Path(shutil.copy(OLD_DB, tmp_path / "old.db"))


def stored_json(db: Path) -> dict[str, dict]:
    """{episode id: record} exactly as it is stored, read with plain SQL."""
    with sqlite3.connect(db) as conn:
        return {i: json.loads(r) for i, r in conn.execute("SELECT id, record_json FROM episodes")}


def within(new, old) -> bool:
    """Whether `new` holds everything `old` does, lists item by item: `within({'a': [{'b': 1, 'c': 2}]}, {'a': [{'b': 1}]})`."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and within(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(map(within, new, old))
    return new == old


def test_a_database_written_by_0_1_0_reads_as_records(old_db):
    written = stored_json(old_db)
    with Store(old_db) as store:
        runs = {r["id"]: store.run(r["id"]) for r in store.runs()}
        episodes = [e for run in runs for e in store.episodes(run)]
    assert set(runs) == {"old-batch", "old-branch", "play-persona"}
    assert {r["version"] for r in runs.values()} == {"0.1.0"}
    assert all(isinstance(r["spec"], RunSpec) for r in runs.values()) and runs["old-branch"]["spec"].branch["at"] == "1"
    assert len(episodes) == len(written) == 6 and all(isinstance(e, Episode) for e in episodes)
    by_status = {e.status: e for e in episodes if e.run_id == "old-batch"}
    assert set(by_status) == {"succeeded", "ungraded", "failed"}
    graded = by_status["succeeded"]
    assert graded.verdicts[0].graded and graded.verdicts[0].transitions[0].conditions  # scores read as grades
    assert by_status["ungraded"].verdicts[0].error and by_status["failed"].error.startswith("BadRequestError")
    assert {e.branch.arm for e in episodes if e.branch} == {"control", "treatment"}
    assert [e.person for e in episodes if e.run_id == "play-persona"] == ["persona"]
    assert any(t.by == "person" and t.would_share is False for e in episodes for t in e.turns)
    for e in episodes:
        # Nothing renamed or lost: every key and value 0.1.0 wrote is in the record's JSON now, beside the new ones.
        assert within(json.loads(e.model_dump_json()), written[e.id]), e.id
        assert Episode.model_validate_json(e.model_dump_json()) == e


def test_the_commands_read_a_0_1_0_database(old_db, tmp_path):
    graded = next(i for i, r in stored_json(old_db).items() if r["status"] == "succeeded" and r["run_id"] == "old-batch")
    shown = nextstep("show", graded[:6], "--db", str(old_db))
    assert shown.returncode == 0 and "verdict" in shown.stdout and "Traceback" not in shown.stderr, shown.stderr
    summary = nextstep("show", "old-batch", "--db", str(old_db), env={**os.environ, "COLUMNS": "200"})  # the summary tables
    assert summary.returncode == 0 and "contact: number or email exchanged" in summary.stdout, summary.stderr
    for run in ("old-batch", "old-branch", "play-persona"):
        assert export(run, old_db, "jsonl", tmp_path / f"{run}.jsonl") == len(load_run(run, old_db)) > 0
        assert nextstep("export", run, "--format", "csv", "-o", str(tmp_path / f"{run}.csv"), "--db", str(old_db)).returncode == 0
    assert nextstep("report", "old-branch", "--db", str(old_db), "-o", str(tmp_path / "r.html")).returncode == 0
    assert nextstep("compare", "old-batch", "--db", str(old_db), "--include-unfaithful").returncode == 0


def _prompts_of(db: Path, folder: Path) -> Path:
    """The prompt templates the database's runs were made with, as files in `folder` (the store keeps their texts)."""
    folder.mkdir()
    with sqlite3.connect(db) as conn:
        for name, text in conn.execute("SELECT name, text FROM prompts WHERE name != 'rubric'"):
            (folder / f"{name}.j2").write_text(text)
    return folder


async def test_a_0_1_0_run_resumes_under_its_own_id(old_db, tmp_path):
    # The shipped prompts have changed since 0.1.0 (issue 25 laid them out for prefix caches), and an edited prompt
    # makes a new run: the old run resumes with the prompts it was made with.
    prompts = _prompts_of(old_db, tmp_path / "prompts-0.1.0")
    with StubServer() as url:
        assert await run_grid(resume="old-batch", db=old_db, base_url=url, prompts_dir=prompts) == "old-batch"
        # The same grid again finds the same run (its id is the hash of the spec 0.1.0 stored) and has nothing left to do.
        grid = {"personas": "friendly,aloof,unsure", "strategies": "common_interest", "max_turns": 2, "judges": 1}
        assert await run_grid(grid, db=old_db, base_url=url, run_id="old-batch", prompts_dir=prompts) == "old-batch"
    with Store(old_db) as store:
        episodes = store.episodes("old-batch")
    assert [e.status for e in episodes] == ["succeeded"] * 3  # the failed one retried, the ungraded one graded again
    assert sorted(e.schema_version for e in episodes) == [SCHEMA_VERSION] * 3


def _save_one(db: Path) -> Episode:
    episode = Episode(id="abcd00000001", setting="supermarket", persona="unsure", strategy="common_interest", status="failed",
                      error="boom")  # fmt: skip
    with Store(db) as store:
        store.create_run("r", RunSpec(experiment={}))
        store.save_episode("r", "c", 0, episode)
    return episode


@pytest.mark.parametrize("change, fragment", [
    ({"status": "finished"}, "status: Input should be 'succeeded', 'ungraded' or 'failed'"),
    ({"mood": "sunny"}, "mood: Extra inputs are not permitted"),
    ({"schema_version": 3}, "schema 3 is not one this nextstep reads (1 to 2): upgrade nextstep"),
])  # fmt: skip
def test_a_stored_record_that_does_not_validate_is_one_line_naming_the_episode(tmp_path, change, fragment):
    db = tmp_path / "n.db"
    _save_one(db)
    with sqlite3.connect(db) as conn:
        record = json.loads(conn.execute("SELECT record_json FROM episodes").fetchone()[0])
        conn.execute("UPDATE episodes SET record_json = ?", (json.dumps(record | change),))
    conn.close()
    with Store(db) as store, pytest.raises(UserError) as caught:
        store.episodes("r")
    message = str(caught.value)
    assert message.startswith(f"{db}: episode abcd00000001 is not a valid episode record: ") and fragment in message
    assert "\n" not in message
    assert_one_line_error(nextstep("show", "abcd", "--db", str(db)), "episode abcd00000001", fragment)
    assert_one_line_error(nextstep("export", "r", "--db", str(db), "-o", str(tmp_path / "e.jsonl")), "episode abcd00000001")


def test_records_say_which_schema_wrote_them(tmp_path):
    db = tmp_path / "n.db"
    _save_one(db)
    with sqlite3.connect(db) as conn:
        record, spec = (json.loads(x) for x in conn.execute("SELECT record_json, spec_json FROM episodes, runs").fetchone())
    conn.close()
    assert record["schema_version"] == spec["schema_version"] == SCHEMA_VERSION == 2


async def test_a_crashed_episode_and_a_simulated_one_are_the_same_record(make_context, tmp_path):
    p = ScriptedModel(practitioner_says("Hi.", "small_talk") + practitioner_says("Bye.", "goodbye"), "p")
    q = ScriptedModel(persona_says("Hello.", 5, 5) + persona_says("Bye."), "q")
    simulated = await run_episode(make_context(p, q), backend="scripted")
    crashed = _crashed(Cell(Scenario("bar_club", "aloof", "turn_back", Profile()), 0, 11), RuntimeError("a bug"))
    assert type(simulated) is type(crashed) is Episode
    assert (crashed.status, crashed.error, crashed.seed, crashed.profile) == ("failed", "RuntimeError: a bug", 11, Profile())
    assert crashed.usage.calls == 0 and crashed.turns == [] and crashed.provenance is None
    with Store(tmp_path / "n.db") as store:
        store.create_run("r", RunSpec(experiment={}))
        for rep, episode in enumerate((simulated, crashed)):
            store.save_episode("r", "c", rep, episode)
        assert store.episodes("r") == [e.model_copy(update={"run_id": "r", "cell": "c", "rep": rep})
                                       for rep, e in enumerate((simulated, crashed))]
