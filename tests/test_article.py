"""Issue 13: the article's techniques, personas and grading, each checked against what the article says."""

from __future__ import annotations

from itertools import product
from pathlib import Path

from simulator.conversation.catalog import Profile, load_catalog
from simulator.conversation.graph import Scenario
from simulator.conversation.prompts import Prompts


# --- personas (point 8) and their ablation (point 9) -----------------------------------------------


def _fits(persona, interest: int, comfort: int) -> bool:
    r = persona.expected_first_turn
    return r.interest[0] <= interest <= r.interest[1] and r.comfort[0] <= comfort <= r.comfort[1]


def test_a_first_state_fits_one_persona_at_most(catalog):
    # Before, interest 3 / comfort 5 passed all three ranges, so the fidelity rule could not tell them apart.
    for interest, comfort in product(range(11), repeat=2):
        fitting = [p for p in catalog.personas.values() if _fits(p, interest, comfort)]
        assert len(fitting) <= 1, (interest, comfort, [p.id for p in fitting])
    for persona in catalog.personas.values():  # and each persona's own baseline fits her own range
        assert _fits(persona, persona.baseline.interest, persona.baseline.comfort), persona.id


def test_each_persona_decides_by_its_own_rules(catalog):
    personas = list(catalog.personas.values())
    for a, b in [(a, b) for i, a in enumerate(personas) for b in personas[i + 1:]]:
        for rule in ("on_agendas", "on_ambiguity", "on_pressure"):
            words_a, words_b = set(getattr(a, rule).lower().split()), set(getattr(b, rule).lower().split())
            overlap = len(words_a & words_b) / len(words_a | words_b)
            assert overlap < 0.35, f"{a.id} and {b.id} share most of {rule} ({overlap:.2f})"
    # The article's aloof person may like him and only plays it down: her first interest can be above the unsure one's.
    assert catalog.personas["aloof"].expected_first_turn.interest[1] > catalog.personas["unsure"].expected_first_turn.interest[1]


def test_the_ablation_set_keeps_the_people_and_drops_the_article_rules(catalog):
    ablation = load_catalog(Path("ablation"))  # a shipped persona set, named like a directory
    assert sorted(ablation.personas) == sorted(catalog.personas)
    for name, persona in ablation.personas.items():
        assert (persona.on_agendas, persona.on_ambiguity, persona.on_pressure) == (None, None, None)
        assert persona.baseline == catalog.personas[name].baseline
        assert persona.expected_first_turn == catalog.personas[name].expected_first_turn
        prompt = Prompts(ablation.prompt_dirs).render(
            "persona", setting=ablation.settings["bar_club"], persona=persona, practitioner_gender="man",
            persona_gender="woman", interest=5, comfort=5)  # fmt: skip
        assert "None" not in prompt and persona.temperament in prompt
        assert catalog.personas[name].on_agendas not in prompt


# --- the rubric (point 12) ------------------------------------------------------------------------


def test_every_condition_has_anchors_and_a_null_rule_and_the_toolkit_flag_is_marked():
    from evaluations.judge.rubric import load_rubric

    rubric, _ = load_rubric()
    for c in rubric.conditions.values():
        assert set(c.anchors) == {1, 3, 5}
    assert rubric.conditions["timing"].not_applicable is None  # no ask is scored low, never left blank
    assert "purpose" not in rubric.conditions["setting_fit"].description  # that is agenda_clarity's job
    assert {f for f, x in rubric.flags.items() if x.source == "toolkit"} == {"ignores_no"}
    assert "softly" in rubric.flags["ignores_no"].description


def test_the_judge_prompt_shows_the_anchors_and_null_rules(catalog):
    from evaluations.judge.rubric import load_rubric

    rubric, _ = load_rubric()
    prompt = Prompts(catalog.prompt_dirs).render("evaluator", setting=catalog.settings["bar_club"], persona=catalog.personas["aloof"],
                                                 transcript="[0] x", conditions=rubric.conditions, flags=rubric.flags)
    for c in rubric.conditions.values():
        assert c.anchors[1] in prompt and c.anchors[5] in prompt
    assert "Null: never; always give a score." in prompt


# --- friends_pretext, a labelled negative baseline (point 14) ------------------------------------------


async def test_a_negative_baseline_is_labelled_wherever_its_transcripts_are_shown(tmp_path, catalog):
    from stub_server import StubServer
    from typer.testing import CliRunner

    from evaluations.analysis.report import render_report
    from simulator.runs.batch import run_grid
    from simulator.cli.app import app

    caution = catalog.strategies["friends_pretext"].caution
    assert caution and "not advice" in caution
    assert [s for s, x in catalog.strategies.items() if x.caution] == ["friends_pretext"]
    db = tmp_path / "n.db"
    with StubServer() as url:
        run_id = await run_grid({"strategies": "friends_pretext,no_ask", "personas": "aloof", "max_turns": 2, "judges": 0},
                                db=db, base_url=url)
    from simulator.storage.store import Store

    with Store(db) as store:
        records = {r.strategy: r for r in store.episodes(run_id)}
    assert records["friends_pretext"].caution == caution and records["no_ask"].caution is None
    html = render_report(run_id, db)
    assert html.count("not advice") == 2  # under the strategy table, and on its one transcript
    runner = CliRunner()
    shown = runner.invoke(app, ["show", records["friends_pretext"].id, "--db", str(db)])
    assert shown.exit_code == 0 and "not advice" in shown.output
    assert "not advice" not in runner.invoke(app, ["show", records["no_ask"].id, "--db", str(db)]).output
    assert "not advice" in runner.invoke(app, ["show", run_id, "--db", str(db)]).output
    assert "not advice" in runner.invoke(app, ["catalog"]).output.replace("\n", " ")


# --- the practitioner's prompt: no turn counter (point 2), a real reason to leave (point 3), a work need (point 4) ---


def _practitioner_prompt(catalog, strategy: str, **extra) -> str:
    return Prompts(catalog.prompt_dirs).render(
        "practitioner", setting=catalog.settings["workplace"], strategy=catalog.strategies[strategy],
        practitioner_gender="man", persona_gender="woman", **({"parting": False} | extra))  # fmt: skip


async def test_the_practitioner_is_not_told_the_turn_limit(make_context):
    """The ask should land where the conversation says, so every turn's system prompt is the same."""
    from conftest import ScriptedModel, persona_says, practitioner_says

    p = ScriptedModel(practitioner_says("Hi.", "small_talk") + practitioner_says("Nice day.", "small_talk")
                      + practitioner_says("Lovely.", "small_talk"), "p")  # fmt: skip
    q = ScriptedModel(persona_says("Hello.") + persona_says("It is.") + persona_says("Yes."), "q")
    from simulator.conversation.runner import run_episode

    await run_episode(make_context(p, q, max_turns=3), backend="scripted")
    systems = {r["messages"][0]["content"] for r in p.requests if r["schema"] is None}
    assert len(systems) == 1, systems
    assert "of at most" not in systems.pop()


def test_high_point_exit_has_a_real_reason_to_leave(catalog):
    situation = catalog.strategies["high_point_exit"].situation
    assert situation and "leave" in situation
    assert f"Your situation: {situation}" in _practitioner_prompt(catalog, "high_point_exit")
    assert "Your situation" not in _practitioner_prompt(catalog, "common_interest")


def test_work_need_gives_a_practical_reason_and_keeps_the_agenda_open(catalog):
    work = catalog.strategies["work_need"]
    assert not work.baseline and "reach" in work.situation and "plainly" in work.instructions
    assert f"Your situation: {work.situation}" in _practitioner_prompt(catalog, "work_need")


# --- the persona's state call (point 5), what a line did (points 6, 7), the parting (point 1) -----------------

from conftest import ScriptedModel, persona_says, practitioner_says  # noqa: E402

from simulator.conversation.runner import run_episode  # noqa: E402


def _scripted(*rounds):
    p = ScriptedModel([x for r in rounds for x in r[0]], "practitioner")
    q = ScriptedModel([x for r in rounds for x in r[1]], "persona")
    return p, q


async def _run(make_context, p, q, setting="workplace", persona="aloof", strategy="common_interest", **options):
    ctx = make_context(p, q, scenario=Scenario(setting, persona, strategy, Profile()), **options)
    record = await run_episode(ctx, backend="scripted")
    p.assert_used_up(), q.assert_used_up()
    assert record.status == "succeeded", record.error
    return record


def _state_prompts(q: ScriptedModel) -> list[str]:
    return [r["messages"][0]["content"] for r in q.requests if r["schema"] is not None]


async def test_the_state_call_sees_the_persona_the_setting_and_its_previous_state(make_context, catalog):
    p, q = _scripted(
        (practitioner_says("Busy day?", "small_talk"), persona_says("Very.", 6, 2)),
        (practitioner_says("Coffee helps.", "small_talk"), persona_says("It does.", 7, 3)),
    )
    await _run(make_context, p, q, max_turns=2)
    first, second = _state_prompts(q)
    aloof, workplace = catalog.personas["aloof"], catalog.settings["workplace"]
    for prompt in (first, second):
        assert aloof.temperament in prompt and aloof.on_agendas in prompt and workplace.assumption in prompt
    assert "interest 5 out of 10, comfort 2 out of 10" in first  # her baseline before her first line
    assert "interest 6 out of 10, comfort 2 out of 10" in second  # then her own previous state
    assert 'Your last line was: "It does."' in second


async def test_a_spoken_no_is_not_an_exchange_however_warm_the_state(make_context):
    """Before, the state call's 'would you share now' decided: a warm rating beside a spoken no ended as exchanged."""
    p, q = _scripted(
        (practitioner_says("Can I get your number?", "ask"), persona_says("No, sorry, I'd rather not.", 9, 9, intent="decline")),
        (practitioner_says("No worries at all.", "accept_no"), persona_says("Thanks.", 8, 8)),
    )
    record = await _run(make_context, p, q)
    assert record.outcome.end_reason == "refused" and record.outcome.exchanged == "none"
    assert record.turns[1].shares_contact is False and record.turns[1].intent == "decline"


async def test_the_persona_can_leave(make_context):
    p, q = _scripted(
        (practitioner_says("Do you climb?", "small_talk"), persona_says("Sometimes. I'm going back to my desk now.", 3, 2, intent="leave")),
    )
    record = await _run(make_context, p, q)
    assert (record.outcome.end_reason, record.outcome.ended_by) == ("left", "persona")


async def test_asking_again_after_a_soft_no_is_counted(make_context):
    p, q = _scripted(
        (practitioner_says("Want to swap numbers?", "ask"), persona_says("Maybe another time, I'm swamped.", 4, 4, intent="decline")),
        (practitioner_says("Come on, just your number.", "ask"), persona_says("I should go.", 3, 2, intent="leave")),
    )
    record = await _run(make_context, p, q, persona="unsure")
    assert record.outcome.asks_after_no == 1 and record.outcome.end_reason == "left"


async def test_turn_back_parts_then_turns_back_and_asks_for_email(make_context, catalog):
    """The article's first technique: goodbye, then one more line at the parting, asking for email."""
    p, q = _scripted(
        (practitioner_says("This printer hates me.", "small_talk"), persona_says("It hates everyone.", 5, 2)),
        (practitioner_says("Well, I'll let you get back to it.", "goodbye"), persona_says("Sure, see you.", 5, 2)),
        (practitioner_says("Oh - do you have email? I'd like to send you that printer hack.", "ask"),
         persona_says("It's nadia at the company domain.", 6, 3, shares=True)),
    )
    record = await _run(make_context, p, q, strategy="turn_back", max_turns=2)  # the parting may pass the limit by one round
    parting = record.turns[4]
    assert parting.phase == "parting" and record.turns[2].phase is None
    cues = [r["messages"][-1]["content"] for r in p.requests if r["schema"] is None]  # after the conversation
    assert catalog.strategies["turn_back"].parting in cues[2] and catalog.strategies["turn_back"].parting not in cues[1]
    assert "email" in catalog.strategies["turn_back"].parting
    o = record.outcome
    assert (o.end_reason, o.exchanged, o.turned_back, o.first_ask_turn) == ("exchanged", "email", True, 4)


async def test_the_persona_leaving_also_opens_the_parting_and_it_comes_once(make_context):
    p, q = _scripted(
        (practitioner_says("Nice mock-ups.", "small_talk"), persona_says("Thanks. I should get back to my desk.", 5, 2, intent="leave")),
        (practitioner_says("Before you go - do you have email?", "ask"), persona_says("Not for this, sorry. Bye.", 4, 2, intent="leave")),
    )
    record = await _run(make_context, p, q, strategy="turn_back")
    assert [t.phase for t in record.turns] == [None, None, "parting", None]
    assert (record.outcome.end_reason, record.outcome.turned_back) == ("left", True)


async def test_without_a_parting_line_a_goodbye_ends_it(make_context):
    p, q = _scripted((practitioner_says("Enjoy your day!", "goodbye"), persona_says("You too.")))
    record = await _run(make_context, p, q, strategy="no_ask")
    assert record.outcome.end_reason == "goodbye" and len(record.turns) == 2


# --- no worked examples, and no output repeating a prompt's wording (point 10) ----------------------


def _templates() -> dict[str, str]:
    from simulator.core.files import data_dir

    return {p.name: p.read_text() for p in sorted(data_dir("prompts").glob("*.j2"))}


def test_prompts_carry_no_worked_examples():
    import re

    for name, source in _templates().items():
        assert "example" not in source.lower(), name
        assert not re.search(r'"\w+":\s*"[^".]{3,}"', source), f"{name} shows an answer with values a model could copy"


def test_no_stored_output_repeats_a_prompts_wording():
    """The recorded answers (cassettes) against every template's own words: before, the recorded judge answered
    'She typed her number into his phone...', its prompt's example, for a conversation where nothing was exchanged."""
    import json

    import yaml

    from simulator.conversation.prompts import repeated_run, static_text

    outputs = []
    for path in sorted((Path(__file__).parent / "cassettes").glob("*.yaml")):
        for interaction in yaml.safe_load(path.read_text())["interactions"]:
            body = json.loads(interaction["response"]["body"]["string"])
            outputs += [(path.name, c["message"]["content"]) for c in body.get("choices", [])]
    assert len(outputs) > 10
    templates = {name: static_text(source) for name, source in _templates().items()}
    copied = [(where, name, run) for where, out in outputs for name, text in templates.items() if (run := repeated_run(out, text))]
    assert copied == []


# --- contact apart from a social handle, and the next meeting beside it (point 11) ----------------------


def test_a_social_handle_is_not_contact_and_the_next_meeting_is_a_headline():
    import pandas as pd

    from evaluations.analysis.compare import group_stats
    from evaluations.analysis.frame import episode_row, summary
    from simulator.core.records import Episode

    def record(i, exchanged, meetings):
        verdicts = [{"judge": j, "model": "m", "status": "graded", "transitions": [], "flags": {"status": "scored", "raised": []},
                     "outcome": {"status": "scored", "exchanged": exchanged, "next_meeting": m}} for j, m in enumerate(meetings)]
        return Episode.model_validate({
            "id": f"e{i}", "setting": "bar_club", "persona": "friendly", "strategy": "social_media", "status": "succeeded",
            "fidelity": {"ok": True}, "turns": [], "verdicts": verdicts,
            "outcome": {"exchanged": exchanged, "asked": True, "end_reason": "exchanged", "ended_by": "persona"}})

    rows = [episode_row(r) for r in (record(0, "social_handle", [False]), record(1, "number", [True, True, False]),
                                     record(2, "email", [False, False, True]), record(3, "none", []))]
    assert [(r["contact"], r["social_handle"], r["next_meeting"]) for r in rows] == [
        (False, True, False), (True, False, True), (True, False, False), (False, False, None)]
    [s] = summary(pd.DataFrame(rows))
    assert (s["contact_rate"], s["social_handle_rate"], s["next_meeting_rate"]) == (0.5, 0.25, 1 / 3)  # next meeting: 1 of 3 read
    g = group_stats(pd.DataFrame(rows))
    assert (g["contact"]["k"], g["social_handle"]["k"], g["next_meeting"]["k"], g["next_meeting"]["n"]) == (2, 1, 1, 3)
