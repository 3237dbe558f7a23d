"""`nextstep branch`: fork points, continuations from one LangGraph checkpoint, the store's links, the paired compare."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import ScriptedModel, persona_says, practitioner_says
from stub_server import StubServer, pinned
from test_cli import assert_one_line_error, nextstep

from simulator.conversation.runner import fork_point, run_episode
from simulator.core.errors import UserError
from simulator.core.records import Episode, RunSpec, Turn
from simulator.runs.branch import fork_turn
from simulator.storage.store import ADDED_CALL_COLUMNS, ADDED_COLUMNS, Store

TURNS = [Turn.model_validate(t) for t in [
    {"index": 0, "speaker": "practitioner", "text": "Hi.", "intent": "small_talk"},
    {"index": 1, "speaker": "persona", "text": "Hello.", "interest": 4, "comfort": 5, "shares_contact": False},
    {"index": 2, "speaker": "practitioner", "text": "Nice day.", "intent": "small_talk"},
    {"index": 3, "speaker": "persona", "text": "It is!", "interest": 7, "comfort": 6, "shares_contact": False},
    {"index": 4, "speaker": "practitioner", "text": "Swap numbers?", "intent": "ask"},
    {"index": 5, "speaker": "persona", "text": "Sure.", "interest": 6, "comfort": 6, "shares_contact": True},
]]


def test_fork_turn_resolves_index_first_ask_and_peak():
    assert fork_turn(TURNS, "3") == 3
    assert fork_turn(TURNS, "first-ask") == 4  # the turns before the ask are kept
    assert fork_turn(TURNS, "peak") == 4  # up to and including the persona's highest interest (turn 3)


@pytest.mark.parametrize("turns, at, message", [
    (TURNS, "6", "--at 6: episode e has turns 0-5: turn 6 is out of range (a fork keeps 1 to 5 turns)"),
    (TURNS, "0", "turn 0 is out of range"),
    (TURNS[:4], "first-ask", "--at first-ask: episode e has no ask"),
    (TURNS[4:], "first-ask", "asks in its opening line"),
    (TURNS[:4], "peak", "peaks in its last turn"),
    (TURNS, "middle", "--at 'middle': give a turn index, first-ask or peak"),
])  # fmt: skip
def test_fork_turn_refuses_what_cannot_be_forked(turns, at, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fork_turn(turns, at, "e")


async def test_continuations_fork_from_one_checkpoint_with_the_prefix_kept_exactly(make_context):
    config = await fork_point(TURNS[:3], "test-thread")  # the practitioner's line 2 is kept: the persona speaks next

    def continuation(seed):
        p = ScriptedModel(practitioner_says("Want to get a coffee sometime?", "ask"), "p")
        q = ScriptedModel(persona_says("Why not.", 5, 5) + persona_says("Sure, here's my number.", 8, 7, True), "q")
        return p, q, make_context(p, q, seed=seed)

    (p1, q1, c1), (p2, q2, c2) = continuation(1), continuation(2)
    a, b = await asyncio.gather(run_episode(c1, backend="scripted", fork=config), run_episode(c2, backend="scripted", fork=config))
    for record, p, q in ((a, p1, q1), (b, p2, q2)):
        p.assert_used_up()
        q.assert_used_up()
        assert record.turns[:3] == TURNS[:3]  # the prefix exactly, private states included
        assert [t.index for t in record.turns] == [0, 1, 2, 3, 4, 5]
        assert record.outcome.end_reason == "exchanged"
        assert len(record.calls) == 6  # only the continuation's own calls
    # the persona continued from the prefix: its first request carried the kept lines, seen from its side
    history = q1.requests[0]["messages"][1:-1]  # between the system message and her feelings now
    assert [m["content"] for m in history] == ["Hi.", "Hello.", "Nice day."]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]


def _parent_db(tmp_path, turns=TURNS):
    """A database with one stored episode of the given turns, in run 'base'."""
    db = tmp_path / "n.db"
    with Store(db) as store:
        store.create_run("base", RunSpec(experiment={}))
        store.save_episode("base", "supermarket/unsure/common_interest/man-woman", 0, Episode(
            id="parent000001", setting="supermarket", persona="unsure", strategy="common_interest", seed=5,
            status="succeeded", turns=turns, run_id="base"))  # fmt: skip
    return db


@pytest.mark.parametrize("args, fragment", [
    (["nosuch", "--at", "2", "--strategy", "turn_back"], "no run or episode 'nosuch' in"),
    (["parent000001", "--at", "9", "--strategy", "turn_back"], "--at 9: episode parent000001 has turns 0-3: turn 9 is out of range"),
    (["parent000001", "--at", "first-ask", "--strategy", "turn_back"], "--at first-ask: episode parent000001 has no ask"),
    (["parent000001", "--at", "2"], "nothing to change"),
    (["parent000001", "--at", "2", "--strategy", "beg"], "unknown strategy 'beg'"),
])  # fmt: skip
def test_branch_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    db = _parent_db(tmp_path, TURNS[:4])
    assert_one_line_error(nextstep("branch", *args, "--db", str(db), "--base-url", "http://127.0.0.1:9/v1"), fragment)


def test_old_databases_open_and_gain_the_link_columns(tmp_path):
    db = _parent_db(tmp_path)
    with sqlite3.connect(db) as conn:  # as a database made before branches (and prices) existed
        for table, columns in (("episodes", ADDED_COLUMNS), ("calls", ADDED_CALL_COLUMNS)):
            for column in columns:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with Store(db) as store:
        assert store.episode("parent000001").turns == TURNS
        for table, columns in (("episodes", ADDED_COLUMNS), ("calls", ADDED_CALL_COLUMNS)):
            have = {row[1] for row in store.conn.execute(f"PRAGMA table_info({table})")}
            assert set(columns) <= have, table


# Stub answers that never end a conversation early (no goodbye, no leaving), so every parent can be forked.
keep_talking = pinned(practitioner_intent={"intent": "small_talk"}, persona_state={"interest": 5, "comfort": 5, "intent": "chat"})


def test_branch_run_end_to_end_on_the_stub(tmp_path):
    db = tmp_path / "n.db"
    with StubServer(fault=keep_talking) as url:
        common = ["--db", str(db), "--base-url", url]
        base = nextstep("batch", "--personas", "aloof,friendly", "--reps", "2", "--max-turns", "3", "--run-id", "base", *common)
        assert base.returncode == 0, base.stderr
        result = nextstep("branch", "base", "--at", "2", "--strategy", "high_point_exit", "--reps", "2", *common)
        assert result.returncode == 0, result.stderr
        run = re.search(r"branch run (branch-\w+)", result.stdout).group(1)
        again = nextstep("branch", "base", "--at", "2", "--strategy", "high_point_exit", "--reps", "2", *common)
        assert re.search(r"branch run (branch-\w+)", again.stdout).group(1) == run and "continuations this session" not in again.stdout
    with Store(db) as store:
        parents = {r.id: r for r in store.episodes("base")}
        forked = [p for p in parents.values() if len(p.turns) > 2]
        records = store.episodes(run)
        links = store.conn.execute("SELECT id, parent_id, fork_turn, arm FROM episodes WHERE run_id = ?", (run,)).fetchall()
    assert len(records) == len(forked) * 2 * 2 and forked  # every forkable parent, 2 reps, 2 arms; run again adds nothing
    for r in records:
        parent, b = parents[r.branch.parent], r.branch
        assert r.turns[:2] == parent.turns[:2] and b.at == 2  # the identical prefix
        assert r.strategy == ("high_point_exit" if b.arm == "treatment" else parent.strategy)
        assert r.status == "succeeded" and len(r.verdicts) == 1  # graded like any other
    seeds = {(r.branch.prefix, r.rep, r.branch.arm): r.seed for r in records}
    assert all(seeds[(p, k, "control")] == seeds[(p, k, "treatment")] for p, k, _ in seeds)
    assert {(row["parent_id"], row["fork_turn"], row["arm"]) for row in links} == {
        (p, 2, arm) for p in (r.id for r in forked) for arm in ("control", "strategy=high_point_exit")}
    c = json.loads(nextstep("compare", run, "--db", str(db), "--format", "json", "--include-unfaithful").stdout)
    assert c["pairing"]["paired"] == len(forked) * 2
    assert c["tests"]["contact"]["test"] == "exact mcnemar" and c["tests"]["timing"]["test"].startswith("wilcoxon")
    assert {p["persona"] for p in c["personas"]} == {parents[r.branch.parent].persona for r in records}
    text = nextstep("compare", run, "--db", str(db)).stdout
    assert "treatment" in text and "control" in text
    html = nextstep("report", run, "--db", str(db), "-o", str(tmp_path / "r.html"))
    assert html.returncode == 0 and (tmp_path / "r.html").read_text().count('class="side"') == len(forked)


def test_a_branch_run_id_hashes_the_treatment_prompts_and_the_rubric_contents(tmp_path):
    """Issue 22 item 6: edit the treatment's prompt (or the rubric) in place and branch again: a new run, not the
    old continuations reused under the same id."""
    import shutil

    from simulator import api
    from simulator.core.files import data_dir

    base, treat = tmp_path / "base", tmp_path / "treat"
    shutil.copytree(data_dir("prompts"), base)
    shutil.copytree(data_dir("prompts"), treat)
    db = tmp_path / "n.db"
    with StubServer(fault=keep_talking) as url:
        api.run_batch({"personas": "friendly", "max_turns": 2, "judges": 0}, db=db, run_id="base", base_url=url,
                      prompts_dir=base)  # fmt: skip

        def branch() -> str:
            return api.branch("base", at="2", prompts_dir=treat, reps=1, judges=1, db=db, base_url=url)[0]

        first = branch()
        assert branch() == first  # nothing edited: the same run, resumed
        (treat / "practitioner.j2").write_text((treat / "practitioner.j2").read_text() + "\nBe brief.\n")
        edited = branch()
        rubric = yaml.safe_load((base / "rubric.yaml").read_text())
        rubric["conditions"]["timing"]["description"] += " Read the whole curve."
        (base / "rubric.yaml").write_text(yaml.safe_dump(rubric))
        regraded = branch()
    assert len({first, edited, regraded}) == 3
    with Store(db) as store:
        specs = [store.run(r)["spec"] for r in (first, edited, regraded)]
    assert [s.prompts["treatment/practitioner"] == specs[0].prompts["treatment/practitioner"] for s in specs] == [True, False, False]
    assert len({s.prompts["control/practitioner"] for s in specs}) == 1  # the control's prompts are the parents'
    assert [s.rubric_hash == specs[0].rubric_hash for s in specs] == [True, True, False]


def unsure_parent(db: Path) -> Path:
    """A database with run 'base' holding one succeeded unsure episode, 'parent000001', of TURNS."""
    from simulator.core.records import Fidelity

    with Store(db) as store:
        store.create_run("base", RunSpec(experiment={}))
        store.save_episode("base", "supermarket/unsure/common_interest/man-woman", 0, Episode(
            id="parent000001", setting="supermarket", persona="unsure", strategy="common_interest", seed=5,
            status="succeeded", turns=TURNS, fidelity=Fidelity(ok=True), run_id="base"))  # fmt: skip
    return db


def test_a_continuation_as_another_persona_is_judged_on_the_turns_it_generated(tmp_path):
    """Issue 22 item 1: the kept first persona turn (unsure's comfort 5) is the parent's, judged as the parent was; it
    is not aloof's first turn (her range is 1-3), so the treatment is in character and every pair is compared."""
    from simulator import api

    db = unsure_parent(tmp_path / "n.db")
    with StubServer(fault=keep_talking) as url:  # every later persona turn reports interest 5, comfort 5
        run, _, _ = api.branch("parent000001", at="2", persona="aloof", reps=2, judges=0, max_turns=3, db=db, base_url=url)
    records = api.load_episodes(run, db=db)
    assert sorted((r.branch.arm, r.persona, r.fidelity.ok) for r in records) == [
        ("control", "unsure", True), ("control", "unsure", True), ("treatment", "aloof", True), ("treatment", "aloof", True)]
    assert api.compare(run, db=db)["pairing"]["paired"] == 2


def test_a_branch_run_another_live_writer_holds_is_refused(tmp_path):
    """Issue 24 item 1 for branch: the same branch started twice is one run id; the second is refused, naming the holder."""
    from simulator import api

    db = unsure_parent(tmp_path / "n.db")
    branch = lambda: api.branch("parent000001", at="2", persona="aloof", reps=1, judges=0, max_turns=3, db=db, base_url=url)  # noqa: E731
    with StubServer(fault=keep_talking) as url:
        run, _, _ = branch()
        with Store(db) as other:  # another writer (this pid is alive) holds the run
            other.claim(run)
            with pytest.raises(UserError, match=rf"run '{run}' in .* is being written by pid {os.getpid()}"):
                branch()


def test_the_kept_prefix_keeps_the_parents_verdict_and_a_generated_first_turn_is_checked():
    from simulator.conversation.episode import fidelity_problems
    from simulator.core.records import Fidelity
    from simulator.runs.branch import continued_fidelity

    aloof = {"interest": (3, 7), "comfort": (1, 3)}
    turns = [t.model_dump() for t in TURNS]  # turn 1: interest 4, comfort 5
    assert fidelity_problems(turns, aloof, kept=1) == ["first-turn comfort 5 is outside the expected 1-3"]  # generated
    assert fidelity_problems(turns, aloof, kept=2) == []  # the parent's turn
    bad = Episode(id="p", setting="supermarket", persona="unsure", strategy="common_interest", status="succeeded",
                  turns=TURNS, fidelity=Fidelity(ok=False, problems=["first-turn interest 9 is outside the expected 2-6"]))
    assert continued_fidelity(bad, 2, Fidelity(ok=True)).model_dump() == {
        "ok": False, "problems": ["kept prefix: first-turn interest 9 is outside the expected 2-6"]}
    generated = Fidelity(ok=False, problems=["first-turn comfort 5 is outside the expected 1-3"])
    assert continued_fidelity(bad, 1, generated) == generated  # only the opening line kept: the parent's verdict is not about it


def test_a_branch_experiment_on_the_rule_stub(tmp_path):
    """Known by hand on the rule stub: aloof refuses the friends pretext (control) and shares her number with a plain
    ask (treatment common_interest) from the same first two turns, so every one of the 3 x 2 pairs moves 0 -> 1 and
    the exact McNemar p is 2 / 2^6."""
    from rule_stub import rule_server

    from simulator import api

    db = tmp_path / "n.db"
    with rule_server() as url:
        base = api.run_batch({"personas": "aloof", "strategies": "friends_pretext", "reps": 3}, db=db, base_url=url).run_id
        run, skipped, _ = api.branch(base, at="2", strategy="common_interest", reps=2, db=db, base_url=url)
    c = api.compare(run, db=db)
    contact = c["tests"]["contact"]
    assert skipped == [] and c["pairing"]["paired"] == 6
    assert (contact["a"], contact["b"], contact["b01"], contact["b10"]) == (0.0, 1.0, 6, 0)
    assert contact["p"] == pytest.approx(2 / 2**6)
