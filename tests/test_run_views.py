"""Finding and trusting runs: ids whole and prefixes everywhere, done / planned in every view, episodes listed with
filters, JSON for scripts, and `run` stored too."""

from __future__ import annotations

import json
import re

import pytest
from stub_server import StubServer
from test_outputs import nextstep, one_line_error

import simulator.api as api
from simulator.storage.store import Store




@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Three runs: 'alpha-1' (complete), 'alpha-2' (stopped after 1 of 6 planned) and one under its default id."""
    path = tmp_path_factory.mktemp("views") / "n.db"
    grid = {"personas": "aloof,unsure", "strategies": "no_ask", "max_turns": 1, "judges": 0}
    with StubServer() as url:
        api.run_batch(grid | {"reps": 2}, db=path, base_url=url, run_id="alpha-1")
        # another seed, so no answer comes from the response cache and the first episode spends the budget
        api.run_batch(grid | {"reps": 3, "seed": 1}, db=path, base_url=url, run_id="alpha-2", concurrency=1, max_tokens=61)
        api.run_batch(grid | {"personas": "friendly"}, db=path, base_url=url)
    return path


def default_id(db) -> str:
    with Store(db) as store:
        return next(r["id"] for r in store.runs() if r["id"].startswith("run-"))


def test_run_ids_are_whole_at_80_columns_and_a_unique_prefix_works_everywhere(db, tmp_path):
    run_id = default_id(db)
    listing = nextstep("runs", "--db", str(db))
    assert listing.returncode == 0 and {run_id, "alpha-1", "alpha-2"} <= set(re.findall(r"[\w-]+", listing.stdout))
    assert max(map(len, listing.stdout.splitlines())) <= 80
    prefix = run_id[:6]
    for command in (["show", prefix], ["compare", prefix], ["episodes", prefix], ["personas", prefix],
                    ["plan", prefix], ["export", prefix, "-o", str(tmp_path / "e.csv")],
                    ["report", prefix, "-o", str(tmp_path / "r.html")]):  # fmt: skip
        result = nextstep(*command, "--db", str(db))
        assert result.returncode == 0, (command, result.stderr)
    assert run_id in nextstep("show", prefix, "--db", str(db)).stdout
    with StubServer() as url:
        resumed = nextstep("batch", "--resume", prefix, "--base-url", url, "--db", str(db))
    assert resumed.returncode == 0 and f"--resume {run_id} " not in resumed.stdout, resumed.stderr  # complete: no resume line


def test_an_ambiguous_or_unknown_run_id_lists_the_candidates_or_the_closest(db):
    line = one_line_error(nextstep("show", "alpha", "--db", str(db)), "alpha-1", "alpha-2")
    assert "more than one" in line
    one_line_error(nextstep("compare", "alpah-2", "--db", str(db)), "no run 'alpah-2'", "alpha-2")
    one_line_error(nextstep("export", "alpha", "--db", str(db)), "alpha-1", "alpha-2")


def test_every_view_says_done_of_planned_and_how_to_resume(db, tmp_path):
    with Store(db) as store:
        assert store.run("alpha-2")["spec"].planned == 6 and store.run("alpha-1")["spec"].planned == 4
    listing = [line for line in nextstep("runs", "--db", str(db)).stdout.splitlines() if "alpha-" in line]
    assert any("alpha-2" in line and "1/6" in line for line in listing), listing
    assert any("alpha-1" in line and "4/4" in line for line in listing), listing
    resume = f"nextstep batch --resume alpha-2 --db {db}"
    shown = " ".join(nextstep("show", "alpha-2", "--db", str(db)).stdout.split())
    assert "1/6 episodes done" in shown and resume in shown
    assert resume not in " ".join(nextstep("show", "alpha-1", "--db", str(db)).stdout.split())
    compared = nextstep("compare", "alpha-2", "--db", str(db)).stdout.splitlines()
    assert "incomplete" in compared[0] and "unbalanced" in compared[0] and "1/6" in compared[0], compared[:2]
    assert "incomplete" not in nextstep("compare", "alpha-1", "--db", str(db)).stdout.splitlines()[0]
    assert nextstep("report", "alpha-2", "-o", str(tmp_path / "r.html"), "--db", str(db)).returncode == 0
    first = re.search(r"<h1>.*?</h1>\s*<p[^>]*>(.*?)</p>", (tmp_path / "r.html").read_text(), re.S).group(1)
    assert "incomplete" in first and "unbalanced" in first and "1/6" in first


def test_episodes_are_listed_with_filters_and_as_json(db):
    with Store(db) as store:
        records = store.episodes("alpha-1")
    listed = json.loads(nextstep("episodes", "alpha-1", "--format", "json", "--db", str(db)).stdout)
    assert sorted(e["episode_id"] for e in listed) == sorted(r.id for r in records)
    aloof = json.loads(nextstep("episodes", "alpha-1", "--persona", "aloof", "--format", "json", "--db", str(db)).stdout)
    assert sorted(e["episode_id"] for e in aloof) == sorted(r.id for r in records if r.persona == "aloof")
    contact = {r.id for r in records if r.outcome and r.outcome.exchanged in ("number", "email")}
    for flag, expected in (("--contact", contact), ("--no-contact", {r.id for r in records} - contact)):
        found = json.loads(nextstep("episodes", "alpha-1", flag, "--format", "json", "--db", str(db)).stdout)
        assert {e["episode_id"] for e in found} == expected, flag
    assert json.loads(nextstep("episodes", "alpha-1", "--status", "failed", "--format", "json", "--db", str(db)).stdout) == []
    table = nextstep("episodes", "alpha-1", "--db", str(db))
    assert table.returncode == 0 and all(r.id in table.stdout for r in records)  # whole ids, at 80 columns
    assert max(map(len, table.stdout.splitlines())) <= 80
    one_line_error(nextstep("episodes", "alpha-1", "--status", "done", "--db", str(db)), "--status 'done'")


def test_runs_and_show_print_json_for_scripts(db):
    runs = json.loads(nextstep("runs", "--format", "json", "--db", str(db)).stdout)
    by_id = {r["id"]: r for r in runs}
    assert (by_id["alpha-2"]["done"], by_id["alpha-2"]["planned"]) == (1, 6) and by_id["alpha-1"]["succeeded"] == 4
    run = json.loads(nextstep("show", "alpha-1", "--format", "json", "--db", str(db)).stdout)
    assert run["run"]["id"] == "alpha-1" and run["run"]["spec"]["planned"] == 4 and run["summary"]["succeeded"] == 4
    with Store(db) as store:
        record = store.episodes("alpha-1")[0]
    shown = json.loads(nextstep("show", record.id[:6], "--format", "json", "--db", str(db)).stdout)
    assert shown["episode"]["id"] == record.id and shown["episode"]["turns"][0]["text"] == record.turns[0].text


def test_run_stores_the_watched_episode_in_the_database_too(tmp_path):
    db, out = tmp_path / "n.db", tmp_path / "episodes"
    with StubServer() as url:
        result = nextstep("run", "--max-turns", "1", "--judges", "0", "--out", str(out), "--db", str(db), "--base-url", url)
    assert result.returncode == 0, result.stderr
    [saved] = out.glob("*.json")
    with Store(db) as store:
        [record] = store.episodes("watch")
    assert saved.stem == record.id and json.loads(saved.read_text())["turns"][0]["text"] == record.turns[0].text
    assert nextstep("show", record.id, "--db", str(db)).returncode == 0
