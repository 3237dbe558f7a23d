"""Agreement between judges and with a gold set, against values worked by hand; gold file errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from evaluations.analysis.agreement import calibration, judge_alpha, panel_scores
from evaluations.judge.gold import GoldItem, load_gold
from evaluations.judge.rubric import CONDITIONS, FLAGS
from simulator.core.errors import UserError
from simulator.core.records import Verdict


def verdict(scores: dict, raised=(), exchanged="number") -> Verdict:
    """A verdict with these scores at its transition; 'n/a' is a judge's not applicable, None an unscored grade."""
    conditions = {c: {"status": "scored", "score": s} if isinstance(s, int) else
                  {"status": "not_applicable" if s == "n/a" else "unscored", "score": None} for c, s in scores.items()}
    return Verdict.model_validate({
        "judge": 0, "model": "m",
        "transitions": [{"turns": [2], "turn": 2, "ask_turn": 2, "has_ask": True, "source": "declared", "conditions": conditions}],
        "flags": {"status": "scored", "raised": [{"flag": f} for f in raised]},
        "outcome": {"status": "scored", "exchanged": exchanged}})


def test_panel_takes_the_median_of_the_judges_that_scored():
    v = [verdict({"timing": 2, "congruence": None}), verdict({"timing": 3, "congruence": None}),
         verdict({"timing": 5, "congruence": 4})]
    assert panel_scores(v)["timing"] == 3
    assert panel_scores(v)["congruence"] == 4  # one judge scored it
    assert panel_scores(v[:2])["timing"] == 3  # median 2.5 rounds half up
    assert panel_scores(v[:2])["congruence"] is None  # nobody scored it: no number is made up


def test_judge_alpha_by_hand():
    # Two judges, two episodes, perfectly crossed: (1, 2) and (2, 1). Ordinal metric: n1 = n2 = 2,
    # delta(1,2) = (n1/2 + n2/2)^2 = 4. D_o = (2*4 + 2*4)/4 = 4; D_e = (2*2*4 + 2*2*4)/(4*3) = 8/3.
    # alpha = 1 - D_o/D_e = 1 - 1.5 = -0.5.
    crossed = [[verdict({"timing": 1}), verdict({"timing": 2})], [verdict({"timing": 2}), verdict({"timing": 1})]]
    assert judge_alpha(crossed)["timing"] == pytest.approx(-0.5)
    agreeing = [[verdict({"timing": s}), verdict({"timing": s})] for s in (1, 3, 5)]
    assert judge_alpha(agreeing)["timing"] == pytest.approx(1.0)
    assert judge_alpha(agreeing)["congruence"] is None  # never scored: undefined, not 0
    assert judge_alpha([[verdict({"timing": 1})]])["timing"] is None  # one judge: no agreement to measure


def _item(i, labels, flags=(), exchanged="number"):
    return GoldItem(id=f"g{i}", setting="bar_club", persona="aloof", turns=[{"speaker": "practitioner", "text": "hi"},
                    {"speaker": "persona", "text": "hi"}], labels=labels, flags=list(flags), exchanged=exchanged)


def test_calibration_by_hand():
    items = [_item(1, {"timing": 5}, ["rude"]), _item(2, {"timing": 3}), _item(3, {"timing": 1}, exchanged="none"),
             _item(4, {"timing": 2})]
    verdicts = [[verdict({"timing": 5}, ["rude"])], [verdict({"timing": 4}, ["nervous"])],
                [verdict({"timing": 1}, exchanged="none")], [verdict({"timing": None})]]
    report = calibration(items, verdicts)
    timing = report["conditions"]["timing"]
    # pairs (5,5), (3,4), (1,1); item 4 unscored. exact 2/3, within-1 3/3.
    assert (timing["n"], timing["applicability"]["unscored"], timing["gold_labelled"]) == (3, 1, 4)
    assert timing["exact"] == pytest.approx(0.667, abs=1e-3) and timing["within_1"] == 1.0
    # linear-weighted kappa over categories 1..5 for pairs (5,5), (3,4), (1,1):
    # weights w = |i-j|/4; observed disagreement = (0 + 1/4 + 0)/3 = 1/12;
    # expected: gold marginals {1,3,5}, pred {1,4,5}, each 1/3; mean |g-p|/4 over the 9 combinations
    # = (0+3+4 + 2+1+2 + 4+1+0)/4/9 = 17/36; kappa = 1 - (1/12)/(17/36) = 1 - 3/17 = 14/17.
    assert timing["kappa"] == pytest.approx(14 / 17, abs=1e-3)
    assert report["conditions"]["congruence"]["n"] == 0 and report["conditions"]["congruence"]["kappa"] is None
    assert report["flags"]["rude"] | {} == {"precision": 1.0, "recall": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert report["flags"]["nervous"]["fp"] == 1 and report["flags"]["nervous"]["precision"] == 0.0
    assert report["outcome"] == {"n": 4, "unscored": 0, "accuracy": 1.0}


def test_applicability_is_reported_apart_from_scores_and_a_judge_na_is_not_unscored(monkeypatch):
    # timing, by item: gold 5 / judge 4; gold 3 / judge n/a; gold null / judge 2; gold null / judge n/a;
    # gold 4 / judge unscored; gold null / two judges, one n/a and one 3 (the panel has a score: applicable).
    items = [_item(1, {"timing": 5}), _item(2, {"timing": 3}), _item(3, {}), _item(4, {}), _item(5, {"timing": 4}),
             _item(6, {})]
    verdicts = [[verdict({"timing": 4})], [verdict({"timing": "n/a"})], [verdict({"timing": 2})],
                [verdict({"timing": "n/a"})], [verdict({"timing": None})], [verdict({"timing": "n/a"}), verdict({"timing": 3})]]
    timing = calibration(items, verdicts)["conditions"]["timing"]
    # answered: items 1, 2, 3, 4, 6 (item 5 unscored). Agree on applicability: item 1 (both scored), item 4
    # (both n/a) -> 2/5. Gold n/a, judge scored: items 3 and 6. Gold scored, judge n/a: item 2.
    assert timing["applicability"] == {"n": 5, "agreement": 0.4, "both_scored": 1, "both_na": 1,
                                       "gold_na_judge_scored": 2, "gold_scored_judge_na": 1, "unscored": 1}
    assert (timing["n"], timing["exact"], timing["within_1"]) == (1, 0.0, 1.0)  # scores: the one pair (5, 4)
    assert timing["gold_labelled"] == 3
    import simulator.cli.grade as cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    cli.print_calibration(calibration(items, verdicts))
    row = next(line for line in out.getvalue().splitlines() if line.startswith("│ timing") and "0.40" in line)
    assert [cell.strip() for cell in row.strip("│").split("│")] == ["timing", "5", "0.40", "1", "1", "2", "1", "1"]


def test_calibration_prints_each_figure_rounded_once(monkeypatch):
    """5 of 11 outcomes read right: 0.4545..., printed 0.45. Rounded to 0.455 in the report first, it printed 0.46."""
    items = [_item(i, {"timing": 3}, exchanged="number") for i in range(11)]
    verdicts = [[verdict({"timing": 3}, exchanged="number" if i < 5 else "none")] for i in range(11)]
    import simulator.cli.grade as cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250))
    cli.print_calibration(calibration(items, verdicts))
    assert "accuracy 0.45 over 11 (0 unscored)" in out.getvalue()


def test_an_ungraded_verdict_is_no_vote():
    ungraded = Verdict(judge=1, model="m", status="ungraded", error="APITimeoutError: x")
    items = [_item(1, {"timing": 5}, ["rude"])]
    report = calibration(items, [[verdict({"timing": 5}, ["rude"]), ungraded]])
    assert report["flags"]["rude"]["tp"] == 1  # 1 of the 1 judges that answered: a majority
    assert report["conditions"]["timing"]["applicability"]["both_scored"] == 1


def test_shipped_gold_set_covers_every_strategy_persona_and_flag(catalog):
    import evaluations

    items = load_gold(Path(evaluations.__file__).parent / "gold" / "team.jsonl", catalog)
    assert {(i.persona, i.strategy) for i in items} == {(p, s) for p in catalog.personas for s in catalog.strategies}
    for flag in FLAGS:
        assert sum(flag in i.flags for i in items) >= 3, flag
    assert all(i.rationale for i in items)
    assert all(i.turns[-1].speaker == "persona" for i in items)  # the simulator stops after a persona's reply


def test_the_second_labelling_pass_covers_the_gold_set(catalog):
    import evaluations
    from evaluations.analysis.agreement import labelling_agreement
    from evaluations.judge.gold import load_second_pass

    folder = Path(evaluations.__file__).parent / "gold"
    items = load_gold(folder / "team.jsonl", catalog)
    second = load_second_pass(folder / "team_second_pass.jsonl", items)
    assert [s.id for s in second] == [i.id for i in items]
    report = labelling_agreement(items, second)
    assert report["items"] == len(items) and set(report["conditions"]) == set(CONDITIONS)
    notes = [json.loads(line)["id"] for line in (folder / "team_second_pass_notes.jsonl").read_text().splitlines()]
    assert notes == [i.id for i in items]  # every label of the second reader has its reasons


def test_labelling_agreement_by_hand(catalog):
    from evaluations.analysis.agreement import labelling_agreement
    from evaluations.judge.gold import SecondPass

    def item(i, timing, flags, exchanged="none"):
        return GoldItem(id=f"g{i}", setting="bar_club", persona="aloof", turns=[{"speaker": "practitioner", "text": "hi"},
                        {"speaker": "persona", "text": "hey"}], labels={"timing": timing}, flags=flags, exchanged=exchanged)

    first = [item(1, 1, ["rude"]), item(2, 3, []), item(3, 5, ["rude"]), item(4, None, [])]
    second = [SecondPass(id="g1", labels={"timing": 1}, flags=["rude"], exchanged="none"),
              SecondPass(id="g2", labels={"timing": 4}, flags=["rude"], exchanged="none"),
              SecondPass(id="g3", labels={"timing": 5}, flags=[], exchanged="none"),
              SecondPass(id="g4", labels={"timing": 2}, flags=[], exchanged="number")]
    r = labelling_agreement(first, second)
    timing = r["conditions"]["timing"]
    assert (timing["applicable_agree"], timing["n"], timing["within_1"]) == (0.75, 3, 1.0)
    assert timing["exact"] == pytest.approx(2 / 3)
    assert timing["kappa"] == pytest.approx(14 / 17, abs=1e-3)  # the same three pairs as the calibration test above
    # rude: first [1, 0, 1, 0], second [1, 1, 0, 0]: p_o = 0.5, p_e = 0.5 -> kappa 0
    assert r["flags"]["rude"] == {"first": 2, "second": 2, "both": 1, "kappa": 0.0}
    assert r["exchanged"] == {"n": 4, "agree": 0.75}
    assert r["conditions"]["congruence"]["applicable_agree"] == 1.0 and r["conditions"]["congruence"]["n"] == 0


def test_condition_correlations_by_hand(catalog):
    from evaluations.analysis.agreement import condition_correlations

    def item(i, a, c, t):
        return GoldItem(id=f"g{i}", setting="bar_club", persona="aloof", turns=[{"speaker": "practitioner", "text": "hi"},
                        {"speaker": "persona", "text": "hey"}], labels={"agenda_clarity": a, "congruence": c, "timing": t},
                        exchanged="none")

    items = [item(1, 1, 1, 5), item(2, 2, 2, 4), item(3, 3, None, 1), item(4, 4, 4, 2)]
    rows = {(r["a"], r["b"]): r for r in condition_correlations(items)}
    assert rows[("agenda_clarity", "congruence")] == {"a": "agenda_clarity", "b": "congruence", "n": 3, "r": 1.0}
    # agenda 1..4 against timing 5, 4, 1, 2: deviations (-1.5, -.5, .5, 1.5) and (2, 1, -2, -1): r = -6 / sqrt(5 * 10)
    assert rows[("agenda_clarity", "timing")]["r"] == pytest.approx(-6 / 50**0.5, abs=1e-3)
    assert rows[("agenda_clarity", "genuine_interest")] == {"a": "agenda_clarity", "b": "genuine_interest", "n": 0, "r": None}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "g1",', r"gold.jsonl:2: invalid JSON"),
        ('{"id": "g9", "setting": "bar_club", "persona": "aloof", "turns": [], "labels": {}, "exchanged": "none"}',
         r"gold.jsonl:2: turns: List should have at least 2 items"),
        ('{"id": "g9", "setting": "moon", "persona": "aloof", "turns": [{"speaker": "persona", "text": "a"}, {"speaker": "persona", "text": "b"}], "labels": {}, "exchanged": "none"}',
         r"gold.jsonl:2: unknown setting 'moon'"),
        ('{"id": "g9", "setting": "bar_club", "persona": "aloof", "turns": [{"speaker": "persona", "text": "a"}, {"speaker": "persona", "text": "b"}], "labels": {"charm": 3}, "exchanged": "none", "mood": 1}',
         r"gold.jsonl:2: labels.charm: Extra inputs are not permitted; mood: Extra inputs are not permitted"),
        ('{"id": "g1", "setting": "bar_club", "persona": "aloof", "turns": [{"speaker": "persona", "text": "a"}, {"speaker": "persona", "text": "b"}], "labels": {"timing": 6}, "exchanged": "none"}',
         r"gold.jsonl:2: labels.timing: Input should be 1, 2, 3, 4 or 5"),
    ],
)
def test_bad_gold_line_is_named(tmp_path, catalog, line, message):
    good = {"id": "g1", "setting": "bar_club", "persona": "aloof", "turns": [{"speaker": "practitioner", "text": "hi"},
            {"speaker": "persona", "text": "hey"}], "labels": {"timing": None}, "exchanged": "none"}
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(UserError, match=message):
        load_gold(path, catalog)


def test_duplicate_gold_ids(tmp_path, catalog):
    good = {"id": "g1", "setting": "bar_club", "persona": "aloof", "turns": [{"speaker": "practitioner", "text": "hi"},
            {"speaker": "persona", "text": "hey"}], "labels": {}, "exchanged": "none"}
    (tmp_path / "gold.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    with pytest.raises(UserError, match=r"gold.jsonl:3: duplicate id 'g1'"):
        load_gold(tmp_path / "gold.jsonl", catalog)



def _flags_unscored(v: Verdict) -> Verdict:
    return v.model_copy(update={"flags": v.flags.model_copy(update={"status": "unscored", "reason": "bad JSON", "raised": []})})


def test_an_unscored_flags_part_is_missing_not_not_raised():
    """Issue 22 item 2: a judge whose flags part is unscored neither outvotes a judge that raised a flag nor says 0."""
    from evaluations.analysis.agreement import panel_flags

    raised, unscored = verdict({"timing": 3}, ["rude"]), _flags_unscored(verdict({"timing": 3}))
    assert panel_flags([raised, unscored])["rude"] is True  # 1 of the 1 judge that checked the flags
    assert panel_flags([raised, unscored])["creepy"] is False
    assert panel_flags([unscored]) == {f: None for f in FLAGS}  # nobody checked: missing
    assert panel_flags([raised, verdict({"timing": 3}), unscored])["rude"] is False  # 1 of 2 is no majority
    # ... and calibrate counts only the items whose flags were checked: one hit, one item left out.
    items = [_item(1, {"timing": 5}, ["rude"]), _item(2, {"timing": 3}, ["rude"])]
    report = calibration(items, [[raised], [unscored]])
    assert (report["flags"]["rude"]["tp"], report["flags"]["rude"]["fn"]) == (1, 0)


def test_unscored_flags_on_a_stub_batch(tmp_path):
    """The same on a batch: two judges, the odd-seeded judge's flags answers never parse (one judge per episode, since
    judge i is seeded episode seed + i; a re-ask, seeded one more, is garbled too). Every friends_pretext episode has its
    masked aim flagged by the other judge."""
    import asyncio

    from rule_stub import by_the_rules
    from stub_server import StubServer, completion

    from evaluations.analysis.frame import load_run
    from simulator.runs.batch import run_grid

    def garbled_flags(n, body):
        flags = (body.get("response_format") or {}).get("json_schema", {}).get("name") == "flags"
        if flags and (body["seed"] % 2 or any(m["role"] == "assistant" for m in body["messages"])):  # or a re-ask
            return 200, {}, completion(body, "not json")
        return by_the_rules(n, body)

    db = tmp_path / "n.db"
    with StubServer(fault=garbled_flags) as url:
        run_id = asyncio.run(run_grid({"personas": "all", "strategies": "friends_pretext,common_interest", "reps": 2,
                                       "judges": 2}, db=db, base_url=url))  # fmt: skip
    frame = load_run(run_id, db)
    assert len(frame) == 12 and set(frame["status"]) == {"succeeded"}
    sketchy = frame.groupby("strategy")["flag_sketchy"].apply(list).to_dict()
    assert sketchy == {"common_interest": [False] * 6, "friends_pretext": [True] * 6}  # was [False] * 6: outvoted
