"""`nextstep play`: a person's turns through LangGraph interrupts, bad ratings asked again, ending cleanly, stored."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ScriptedModel, persona_says, practitioner_says
from stub_server import StubServer, pinned

from simulator.conversation.play import Person, parse_intent, parse_rating, parse_yes_no
from simulator.conversation.runner import run_episode
from simulator.storage.store import Store


def test_ratings_and_yes_no_say_what_is_wrong():
    assert parse_rating(" 7 ") == 7 and parse_rating("0") == 0 and parse_yes_no("Y") is True and parse_yes_no("no") is False
    with pytest.raises(ValueError, match="11 is outside 0-10"):
        parse_rating("11")
    with pytest.raises(ValueError, match="'seven' is not a whole number from 0 to 10"):
        parse_rating("seven")
    with pytest.raises(ValueError, match="'maybe': answer y or n"):
        parse_yes_no("maybe")
    assert [parse_intent(a) for a in ("c", "decline", "L", "g")] == ["chat", "decline", "leave", "give_contact"]
    with pytest.raises(ValueError, match="'x': answer chat \\(c\\), decline \\(d\\), leave \\(l\\), give_contact \\(g\\)"):
        parse_intent("x")


def scripted_person(lines):
    said, lines = [], list(lines)

    def read(prompt):
        reply = lines.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    return Person(read=read, say=said.append), said


async def test_a_person_plays_the_persona_through_interrupts(make_context):
    p = ScriptedModel(practitioner_says("Hi there.", "small_talk") + practitioner_says("Coffee sometime?", "ask"), "p")
    q = ScriptedModel([], "q")  # the persona is the person: the model is never asked for it
    person, said = scripted_person(["Hello!", "6", "11", "5", "c", "x", "n", "Sure, why not.", "8", "7", "g", "y"])
    record = await run_episode(make_context(p, q, person="persona"), backend="scripted", answer=person.answer)
    p.assert_used_up()
    assert [(t.speaker, t.text, t.by) for t in record.turns] == [
        ("practitioner", "Hi there.", None), ("persona", "Hello!", "person"),
        ("practitioner", "Coffee sometime?", None), ("persona", "Sure, why not.", "person")]  # fmt: skip
    assert {k: getattr(record.turns[1], k) for k in ("interest", "comfort", "intent", "shares_contact", "would_share")} == {
        "interest": 6, "comfort": 5, "intent": "chat", "shares_contact": False, "would_share": False}  # fmt: skip
    assert record.outcome.end_reason == "exchanged"  # the stop rules read the person's answers as a model's
    assert said == ["  11 is outside 0-10; try again", "  'x': answer y or n; try again"]


@pytest.mark.parametrize("ending", ["", EOFError(), KeyboardInterrupt()])
async def test_an_empty_line_end_of_input_or_ctrl_c_ends_the_episode_cleanly(make_context, ending):
    p = ScriptedModel(practitioner_says("Hi there.", "small_talk") + practitioner_says("Nice shoes.", "small_talk"), "p")
    person, said = scripted_person(["Hello!", "6", "5", "c", "n", ending])
    record = await run_episode(make_context(p, ScriptedModel([], "q"), person="persona"), backend="scripted", answer=person.answer)
    p.assert_used_up()
    assert record.status == "succeeded" and len(record.turns) == 3  # the line left unanswered is kept
    assert (record.outcome.end_reason, record.outcome.ended_by) == ("ended_by_person", "persona")
    assert said == ["(you ended the episode)"]


async def test_enter_at_a_question_about_a_typed_line_keeps_the_line(make_context):
    # Enter at the contact question used to end the episode and drop "Hello!" with the four answers given for it.
    p = ScriptedModel(practitioner_says("Hi there.", "small_talk") + practitioner_says("Nice shoes.", "small_talk"), "p")
    person, said = scripted_person(["Hello!", "", "6", "5", "", "c", "", "n", ""])
    record = await run_episode(make_context(p, ScriptedModel([], "q"), person="persona"), backend="scripted", answer=person.answer)
    p.assert_used_up()
    assert [(t.text, t.by) for t in record.turns] == [("Hi there.", None), ("Hello!", "person"), ("Nice shoes.", None)]
    assert (record.turns[1].interest, record.turns[1].comfort, record.turns[1].would_share) == (6, 5, False)
    assert said == ["  your line is kept: answer the question (end of input or Ctrl-C ends the episode without it)"] * 3 + [
        "(you ended the episode)"]


def asked(role: str) -> list[str]:
    """The prompts `Person.answer` shows for one turn of `role`, in order."""
    prompts, replies = [], iter(["Hello!", "5", "5", "c", "n"])
    Person(read=lambda prompt: prompts.append(prompt.strip()) or next(replies), say=lambda _: None).answer({"role": role})
    return prompts


def test_the_readme_shows_the_prompts_play_asks():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for prompt in asked("persona") + asked("practitioner"):
        assert f"`{prompt}`" in readme, prompt


async def test_a_person_plays_the_practitioner_and_the_model_labels_their_intent(make_context):
    p = ScriptedModel([{"intent": "ask"}], "p")  # only the intent of the person's line is asked of the model
    q = ScriptedModel(persona_says("Sure!", 8, 7, True), "q")  # gives contact
    person, _ = scripted_person(["Can I get your number?"])
    record = await run_episode(make_context(p, q, person="practitioner"), backend="scripted", answer=person.answer)
    p.assert_used_up()
    q.assert_used_up()
    assert record.turns[0].model_dump() == {"index": 0, "speaker": "practitioner", "text": "Can I get your number?", "intent": "ask", "by": "person"}
    assert record.outcome.exchanged == "number"


def play(*args, stdin: str):
    return subprocess.run([sys.executable, "-m", "simulator", "play", *args], input=stdin, capture_output=True, text=True)


# The stub's practitioner labels every line small talk, so only the person can end the episode.
small_talk_only = pinned(practitioner_intent={"intent": "small_talk"})


def test_play_the_persona_end_to_end_on_the_stub(tmp_path):
    db = tmp_path / "n.db"
    with StubServer(fault=small_talk_only) as url:
        result = play("--as", "persona", "--persona", "unsure", "--setting", "workplace", "--base-url", url, "--db", str(db),
                      stdin="Hi, yes, it is.\n7\n11\nabc\n6\nchat\nmaybe\nn\n\n")
    assert result.returncode == 0, result.stderr
    assert "11 is outside 0-10; try again" in result.stdout and "'abc' is not a whole number" in result.stdout
    assert "'maybe': answer y or n" in result.stdout and "Traceback" not in result.stderr
    assert "WARNING" not in result.stderr, result.stderr  # e.g. the checkpointer meeting an object it cannot store
    with Store(db) as store:
        record, = store.episodes("play-persona")
        row = store.conn.execute("SELECT person, end_reason, ended_by FROM episodes").fetchone()
    assert tuple(row) == ("persona", "ended_by_person", "persona") and record.person == "persona"
    mine = [t for t in record.turns if t.by == "person"]
    assert [(t.text, t.interest, t.comfort, t.intent, t.would_share) for t in mine] == [("Hi, yes, it is.", 7, 6, "chat", False)]
    assert record.status == "succeeded" and len(record.verdicts) == 1  # graded like any other


def test_play_the_practitioner_hides_the_persona_state_until_the_end(tmp_path):
    db = tmp_path / "n.db"
    with StubServer() as url:
        result = play("--as", "practitioner", "--persona", "aloof", "--setting", "bar_club", "--strategy", "turn_back",
                      "--base-url", url, "--db", str(db), "--max-turns", "2", stdin="Hi, great band tonight.\n")  # then EOF
    assert result.returncode == 0, result.stderr
    during, _, after = result.stdout.partition("the whole episode")
    state = re.compile(r"persona\s+i\s*\d+ c\s*\d+")
    assert "them: " in during and not state.search(during) and state.search(after)
    with Store(db) as store:
        record, = store.episodes("play-practitioner")
    first = record.turns[0]  # (how it ended depends on the stub's random intent label)
    assert (record.person, first.text, first.by) == ("practitioner", "Hi, great band tonight.", "person")


def test_play_refuses_an_unknown_role():
    result = play("--as", "judge", stdin="")
    assert result.returncode == 2 and result.stderr.strip() == "nextstep: error: --as 'judge': choose practitioner or persona"


def test_ctrl_c_at_a_prompt_ends_the_episode_cleanly(tmp_path):
    import os
    import signal
    import time

    db, out = tmp_path / "n.db", tmp_path / "out.txt"
    with StubServer() as url, out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "simulator", "play", "--as", "practitioner", "--base-url", url,
                                 "--db", str(db)], stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while "you: " not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)  # as Ctrl-C at the prompt; stdin stays open, so only the signal can end it
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out.read_text()
    assert "(you ended the episode)" in out.read_text()
    with Store(db) as store:
        record, = store.episodes("play-practitioner")
    assert record.turns == [] and record.outcome.end_reason == "ended_by_person" and record.verdicts == []


async def test_compare_puts_people_played_personas_beside_simulated_ones(make_context, tmp_path, monkeypatch):
    """Three episodes where a person plays `unsure` and never gives contact, three where the model does each time."""
    import json

    from rich.console import Console
    from typer.testing import CliRunner

    import simulator.cli.compare as compare_cli
    from simulator.core.records import RunSpec
    from simulator.runs.played import save_played

    db = tmp_path / "n.db"
    ask = practitioner_says("Hi there.", "small_talk") + practitioner_says("Coffee sometime?", "ask")
    for interest in (2, 3, 2):
        person, _ = scripted_person(["Hello.", str(interest), "4", "c", "n", "I'd rather not.", str(interest), "4", "d", "n", ""])
        played = await run_episode(make_context(ScriptedModel(ask + practitioner_says("Fair enough.", "accept_no"), "p"),
                                                ScriptedModel([], "q"), person="persona"), backend="scripted", answer=person.answer)
        save_played(db, played, "persona")
    with Store(db) as store:
        store.create_run("sim", RunSpec(experiment={"grid": "scripted"}))
        for rep in range(3):
            record = await run_episode(make_context(ScriptedModel(ask, "p"), ScriptedModel(
                persona_says("Hello.", 6, 5) + persona_says("Sure, here's my number.", 8, 7, True), "q")), backend="scripted")
            store.save_episode("sim", "supermarket/unsure/common_interest/man-woman", rep, record)

    app, console = compare_cli.app, Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(compare_cli, "console", console)
    result = CliRunner().invoke(app, ["compare", "sim", "play-persona", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    c = json.loads(result.output)
    assert (c["people"], c["models"]) == ("play-persona", "sim")  # oriented by which run was played, not by order
    [row] = c["personas"]
    assert row["persona"] == "unsure" and (row["people"]["n"], row["models"]["n"]) == (3, 3)
    assert (row["people"]["contact"]["rate"], row["models"]["contact"]["rate"]) == (0.0, 1.0)
    assert row["people"]["mean_interest"]["mean"] == pytest.approx(7 / 3) and row["models"]["mean_interest"]["mean"] == 7
    assert row["tests"]["contact"]["p"] == pytest.approx(0.1)  # Fisher, 0/3 vs 3/3: 2 x 1/C(6,3)
    assert row["tests"]["mean_interest"]["test"] == "mann-whitney u"
    assert CliRunner().invoke(app, ["compare", "play-persona", "sim", "--db", str(db)]).exit_code == 0
    assert "people vs models" in console.file.getvalue()


def test_two_play_sessions_of_one_cell_saved_together_are_both_kept(tmp_path, monkeypatch):
    """Issue 22 item 11: each session read the next repetition (0) before either wrote; the second then replaced the
    first. Here both read before either writes (a barrier in next_rep), as two terminals saving at once can."""
    import threading

    from simulator.core.records import Episode
    from simulator.runs.played import save_played

    db, barrier = tmp_path / "n.db", threading.Barrier(2, timeout=5)
    read = getattr(Store, "next_rep", None)

    def next_rep_then_wait(self, run_id, cell):
        rep = read(self, run_id, cell)
        barrier.wait()  # the other session has read too
        return rep

    monkeypatch.setattr(Store, "next_rep", next_rep_then_wait, raising=False)  # gone once the insert allocates the rep
    played = [Episode(id=f"played{n:06d}", setting="supermarket", persona="unsure", strategy="common_interest",
                      profile={}, status="succeeded") for n in range(2)]  # fmt: skip
    threads = [threading.Thread(target=save_played, args=(db, record, "persona")) for record in played]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store(db) as store:
        kept = sorted((r.id, r.rep) for r in store.episodes("play-persona"))
    assert [i for i, _ in kept] == ["played000000", "played000001"] and sorted(r for _, r in kept) == [0, 1]
