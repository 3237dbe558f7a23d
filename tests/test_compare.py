"""Persona reactions and run comparisons: each statistic against a value worked by hand or computed by scipy directly."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys

import math

import pandas as pd
import pytest
from scipy import stats
from rich.console import Console
from conftest import lenient_personas
from stub_server import StubServer
from typer.testing import CliRunner

from evaluations.analysis.compare import compare_runs, load_pair, persona_reactions
from evaluations.judge.rubric import CONDITIONS, FLAGS
from evaluations.analysis.stats import holm
import simulator.cli.compare as compare_cli
from simulator.core.errors import UserError
from simulator.core.files import data_dir
from simulator.core.records import RunSpec
from simulator.runs.batch import run_grid

IDS = itertools.count()


def episode(persona="friendly", setting="bar_club", strategy="turn_back", contact=False, interest=5.0, score=3, **extra):
    """One frame row as `frame.episode_row` makes it, with every condition scored `score`."""
    rep = extra.pop("rep", 0)
    row = {"episode_id": f"e{next(IDS)}", "cell": f"{setting}/{persona}/{strategy}/man-woman", "rep": rep, "seed": 100 + rep,
           "setting": setting, "persona": persona, "strategy": strategy, "status": "succeeded", "fidelity_ok": True,
           "contact": contact, "social_handle": False, "next_meeting": None, "mean_interest": interest, "mean_comfort": None if interest is None else 10 - interest,
           **{c: score for c in CONDITIONS}, **{f"flag_{f}": False for f in FLAGS}}  # fmt: skip
    row |= extra
    completed = row["status"] == "succeeded"  # as Episode.completed and .usable say for a simulated episode
    return {"completed": completed, "usable": completed and row["fidelity_ok"] is not False} | row


def personas_frame() -> pd.DataFrame:
    """aloof 2/10 contacts, friendly 8/10, unsure 5/10; plus 1 failed and 2 out-of-character episodes."""
    rows = []
    for persona, hits in (("aloof", 2), ("friendly", 8), ("unsure", 5)):
        for i in range(10):
            rows.append(episode(persona, "bar_club" if i < 7 else "supermarket", contact=i < hits, interest=i % 4 + hits / 2,
                                score=1 + (i + hits) % 5, rep=i, flag_rude=persona == "aloof" and i < 3))
    rows.append(episode("aloof", "workplace", status="failed", contact=None, interest=None, score=None))
    rows += [episode("unsure", contact=True, fidelity_ok=False, rep=20 + i) for i in range(2)]
    return pd.DataFrame(rows)


def test_persona_reactions_match_the_stats_functions():
    frame = personas_frame()
    r = persona_reactions(frame)
    json.dumps(r, allow_nan=False)  # plain JSON: NaN became None
    assert r["excluded"] == {"failed": 1, "ungraded": 0, "unfaithful": 2, "abandoned": 0} and r["n"] == 30 and r["episodes"] == 33
    rows = {row["persona"]: row for row in r["personas"]}
    z = stats.norm.ppf(0.975)  # Wilson's interval for 8 of 10, from its formula
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    assert rows["friendly"]["contact"] == {"k": 8, "n": 10, "rate": 0.8, "ci": pytest.approx([centre - half, centre + half])}
    used = frame[(frame.status == "succeeded") & frame.fidelity_ok]
    aloof = used[used.persona == "aloof"]
    assert rows["aloof"]["mean_interest"]["mean"] == pytest.approx(aloof.mean_interest.mean())
    lo, hi = rows["aloof"]["timing"]["ci"]
    assert lo < aloof.timing.mean() < hi and aloof.timing.min() <= lo and hi <= aloof.timing.max()  # a percentile interval
    assert rows["aloof"]["flags"]["rude"]["rate"] == pytest.approx(0.3) and rows["unsure"]["flags"]["rude"]["k"] == 0

    contact = r["tests"]["contact"]
    assert contact["omnibus"]["p"] == pytest.approx(stats.chi2_contingency([[2, 8], [8, 2], [5, 5]]).pvalue)
    assert contact["omnibus"]["test"].startswith("chi2")
    pairs = {(p["a"], p["b"]): p for p in contact["pairwise"]}
    assert pairs[("aloof", "friendly")]["p"] == pytest.approx(stats.fisher_exact([[2, 8], [8, 2]]).pvalue)
    h = 2 * math.asin(math.sqrt(0.8)) - 2 * math.asin(math.sqrt(0.2))  # Cohen's h, friendly - aloof
    assert pairs[("aloof", "friendly")]["effect"] == pytest.approx(h)
    raw = [p["p"] for p in contact["pairwise"]]
    assert [p["p_holm"] for p in contact["pairwise"]] == pytest.approx(holm(raw))
    smallest = pairs[("aloof", "friendly")]  # 2/10 against 8/10: Holm multiplies the smallest p by 3
    assert smallest["p"] == min(raw) and smallest["p_holm"] == pytest.approx(3 * smallest["p"]) and smallest["p_holm"] < 0.1

    groups = [used[used.persona == p].timing.to_numpy(float) for p in ("aloof", "friendly", "unsure")]
    assert r["tests"]["timing"]["omnibus"]["p"] == pytest.approx(stats.kruskal(*groups).pvalue)
    assert r["tests"]["timing"]["omnibus"]["test"] == "kruskal-wallis"
    assert r["tests"]["timing"]["pairwise"][0]["p"] == pytest.approx(stats.mannwhitneyu(*groups[:2]).pvalue)


def test_a_test_names_the_groups_it_left_out():
    frame = personas_frame()
    frame.loc[frame.persona == "friendly", "timing"] = None  # no friendly episode has a timing score
    r = persona_reactions(frame)
    timing = r["tests"]["timing"]["omnibus"]
    used = frame[(frame.status == "succeeded") & frame.fidelity_ok.astype(bool)]
    two = [used[used.persona == p].timing.to_numpy(float) for p in ("aloof", "unsure")]
    assert timing["test"] == "mann-whitney u" and timing["p"] == pytest.approx(stats.mannwhitneyu(*two).pvalue)
    assert (timing["compared"], timing["left_out"]) == (["aloof", "unsure"], ["friendly"])
    assert r["tests"]["contact"]["omnibus"]["left_out"] == []
    from simulator.cli.compare import print_reactions

    out = io.StringIO()
    print_reactions("r", r, Console(file=out, width=300))
    assert "mann-whitney u (without friendly: no values)" in out.getvalue()


def test_small_and_empty_cells_are_marked_not_dropped():
    r = persona_reactions(personas_frame())
    cells = {(row["persona"], row["setting"]): row for row in r["persona_setting"]}
    assert cells[("aloof", "supermarket")]["n"] == 3 and cells[("aloof", "supermarket")]["small"] is True
    assert cells[("aloof", "bar_club")]["small"] is False
    # Its only episode failed: still listed, with n 0 and no rate rather than a made-up 0.
    assert cells[("aloof", "workplace")]["n"] == 0 and cells[("aloof", "workplace")]["contact"]["rate"] is None


def test_include_unfaithful_keeps_fidelity_flagged_episodes():
    r = persona_reactions(personas_frame(), include_unfaithful=True)
    assert r["n"] == 32 and r["excluded"] == {"failed": 1, "ungraded": 0, "unfaithful": 0, "abandoned": 0}
    assert {row["persona"]: row["contact"]["k"] for row in r["personas"]}["unsure"] == 7


def run_dict(run_id, *, practitioner="abc", model="m1", seed=0):
    return {"id": run_id, "version": "0.1.0", "spec": RunSpec(
        experiment={"seed": seed, "reps": 6}, backend="openai-compatible", reasks=2, catalog={},
        models={"practitioner": model, "persona": "m1", "evaluators": ["m1"]},
        prompts={"practitioner": practitioner, "persona": "p1"}, rubric_hash="r1")}  # fmt: skip


def paired_frames():
    """Six pairs in one cell and four in another; B raises contact and timing scores."""
    a, b = [], []
    for rep in range(10):
        persona = "aloof" if rep < 6 else "friendly"
        a.append(episode(persona, rep=rep, contact=rep % 3 == 0, interest=rep, score=1 + rep % 3))
        b.append(episode(persona, rep=rep, contact=rep % 2 == 0, interest=rep + (rep % 4), score=2 + rep % 4))
    return pd.DataFrame(a), pd.DataFrame(b)


def test_compare_runs_pairs_and_tests():
    fa, fb = paired_frames()
    texts = {"abc": "Say hello.\nBe kind.\n", "xyz": "Say hello.\nBe direct.\n"}
    c = compare_runs(run_dict("A"), run_dict("B", practitioner="xyz", model="m2"), fa, fb, texts)
    json.dumps(c, allow_nan=False)
    fields = {d["field"]: d for d in c["differences"]}
    assert set(fields) == {"prompts.practitioner", "models.practitioner"}
    assert "-Be kind." in fields["prompts.practitioner"]["diff"] and "+Be direct." in fields["prompts.practitioner"]["diff"]
    assert c["pairing"] == {"paired": 10, "matched": 10, "excluded": 0, "only_a": 0, "only_b": 0, "reason": None}

    t = c["tests"]
    # By hand: A made contact at reps 0, 3, 6, 9 and B at 0, 2, 4, 6, 8, so B alone at 2, 4, 8 and A alone at 3, 9;
    # the exact McNemar p is 2 P(X <= 2) for X ~ Binomial(5, 1/2) = 2 (1 + 5 + 10) / 32 = 1.
    assert (t["contact"]["b01"], t["contact"]["b10"], t["contact"]["p"]) == (3, 2, pytest.approx(1.0))
    # timing: A scores 1 + rep % 3, B 2 + rep % 4; the differences are 1 1 1 4 0 0 3 3 -1 2, mean 1.4.
    d = [1, 1, 1, 4, 0, 0, 3, 3, -1, 2]
    assert t["timing"]["delta"] == pytest.approx(1.4) and t["timing"]["n"] == 10
    assert t["timing"]["p"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert t["timing"]["ci"][0] < 1.4 < t["timing"]["ci"][1] and -1 <= t["timing"]["ci"][0] and t["timing"]["ci"][1] <= 4
    assert t["mean_interest"]["p"] == pytest.approx(stats.wilcoxon(fb.mean_interest - fa.mean_interest).pvalue)
    assert [x["p_holm"] for x in t.values()] == pytest.approx(holm([x["p"] for x in t.values()]))

    cells = {row["cell"]: row for row in c["cells"]}
    aloof = cells["bar_club/aloof/turn_back/man-woman"]
    assert aloof["n"] == 6 and not aloof["small"] and cells["bar_club/friendly/turn_back/man-woman"]["small"]
    assert aloof["timing"] == pytest.approx(sum(d[:6]) / 6)  # reps 0-5 are aloof's
    assert aloof["contact_a"] == pytest.approx(2 / 6)  # reps 0 and 3


def test_compare_runs_says_when_it_cannot_pair():
    fa, fb = paired_frames()
    other_grid = fb.assign(cell=fb.cell.str.replace("bar_club", "workplace"))
    c = compare_runs(run_dict("A"), run_dict("B"), fa, other_grid, {})
    assert c["pairing"]["paired"] == 0 and c["tests"] == {} and c["cells"] == []
    assert c["pairing"]["reason"].startswith("cannot pair") and "different grids" in c["pairing"]["reason"]
    assert c["differences"] == []
    reseeded = compare_runs(run_dict("A"), run_dict("B", seed=1), fa, fb.assign(seed=fb.seed + 1), {})
    assert "not seeds" in reseeded["pairing"]["reason"]
    assert reseeded["differences"] == [{"field": "experiment.seed", "a": 0, "b": 1}]


def test_excluded_episodes_are_counted_in_pairing():
    fa, fb = paired_frames()
    fb.loc[0, ["fidelity_ok", "usable"]] = False
    fb.loc[1, ["status", "completed", "usable"]] = ["failed", False, False]
    c = compare_runs(run_dict("A"), run_dict("B"), fa, fb, {})
    assert c["pairing"]["paired"] == 8 and c["pairing"]["excluded"] == 2
    fb["status"], fb["completed"], fb["usable"] = "failed", False, False
    c = compare_runs(run_dict("A"), run_dict("B"), fa, fb, {})
    assert c["pairing"]["paired"] == 0 and "every matched episode failed" in c["pairing"]["reason"]


async def test_two_stub_runs_with_an_edited_prompt(tmp_path, monkeypatch):
    """The real path: two batches, the second with an edited practitioner prompt, compared from the store."""
    from simulator.core.files import data_dir

    edited = tmp_path / "prompts"
    edited.mkdir()
    original = (data_dir("prompts") / "practitioner.j2").read_text()
    (edited / "practitioner.j2").write_text(original.replace("Be genuine", "Be bold and genuine"))
    grid = {"personas": "all", "strategies": "turn_back,no_ask", "reps": 3, "max_turns": 2}
    db, personas = tmp_path / "n.db", lenient_personas(tmp_path / "personas")
    with StubServer() as url:
        a = await run_grid(grid, db=db, base_url=url, personas_dir=personas)
        b = await run_grid(grid, db=db, base_url=url, prompts_dir=edited, personas_dir=personas)
    c = compare_runs(*load_pair(a, b, db))
    diff = {d["field"]: d for d in c["differences"]}["prompts.practitioner"]["diff"]
    assert "+" + next(line for line in original.replace("Be genuine", "Be bold and genuine").splitlines() if "Be bold" in line) in diff
    assert c["pairing"]["matched"] == 18 and c["pairing"]["reason"] is None

    console = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(compare_cli, "console", console)
    app = compare_cli.app
    runner = CliRunner()
    result = runner.invoke(app, ["compare", a, b, "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pairing"]["matched"] == 18
    result = runner.invoke(app, ["compare", a, "--db", str(db)])
    assert result.exit_code == 0 and "persona reactions" in console.file.getvalue() and "aloof" in console.file.getvalue()
    result = runner.invoke(app, ["compare", a, "--db", str(db), "--format", "xml"])
    assert isinstance(result.exception, UserError) and "--format 'xml'" in str(result.exception)
    result = runner.invoke(app, ["compare", "no-such-run", "--db", str(db)])
    assert isinstance(result.exception, UserError) and "no run 'no-such-run'" in str(result.exception)
    analyses_in_the_cli(runner, app, console, db, a, b)


def analyses_in_the_cli(runner, app, console, db, a, b):
    """compare's JSON carries variance, repeats and the detectable effects; plan and personas print and emit JSON."""
    from evaluations.analysis.compare import pair, run_analysis
    from evaluations.analysis.fidelity import audit
    from evaluations.analysis.frame import load_judges, load_run
    from evaluations.analysis.power import detectable, plan
    from simulator.conversation.catalog import load_catalog
    from simulator.storage.store import Store

    def as_json(*args):
        result = runner.invoke(app, [*args, "--db", str(db), "--format", "json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    within = as_json("compare", a)
    expected = run_analysis(load_run(a, db), load_judges(a, db))
    assert within["variance"] == json.loads(json.dumps(expected["variance"])) and within["repeats"] == expected["repeats"]
    assert within["repeats"]["overall"][-1]["k"] == 3  # three repetitions per cell
    paired, _ = pair(load_run(a, db), load_run(b, db))
    assert as_json("compare", a, b)["detectable"] == json.loads(json.dumps(detectable(paired), allow_nan=False))
    assert as_json("plan", a, "--contact-change", "0.2") == json.loads(json.dumps(plan(load_run(a, db), contact_change=0.2)))
    with Store(db) as store:
        records, spec = store.episodes(a), store.run(a)["spec"]
    assert as_json("personas", a) == audit(records, load_catalog().personas, run_catalog=spec.catalog)

    for args, title in ((["compare", a], "where the variance comes from"), (["compare", a, b], "what these pairs could detect"),
                        (["plan", a], "episodes usable)"), (["personas", a], "are the types told apart")):
        result = runner.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 0, result.output
        assert title in console.file.getvalue()
    result = runner.invoke(app, ["plan", a, "--db", str(db), "--power", "1.5"])
    assert isinstance(result.exception, UserError) and "--power 1.5" in str(result.exception)


def test_bad_format_is_one_line_exit_2(tmp_path):
    (tmp_path / "x.db").touch()
    result = subprocess.run([sys.executable, "-m", "simulator", "compare", "r", "--db", str(tmp_path / "x.db"), "--format", "yaml"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip() == "nextstep: error: --format 'yaml': choose from text, json"


def test_strategy_ranking_by_hand():
    """A: s1 > s2 > s3 on contact; B reverses it (tau -1); interest keeps its order in both (tau 1)."""
    from evaluations.analysis.compare import strategy_ranking

    def run(hits: dict[str, int]) -> pd.DataFrame:
        return pd.DataFrame([episode(strategy=s, contact=i < k, interest=float(k), rep=i) for s, k in hits.items() for i in range(4)])

    a, b = run({"s1": 4, "s2": 2, "s3": 1}), run({"s1": 1, "s2": 2, "s3": 4})
    b["mean_interest"] = b["mean_interest"].map({1.0: 0.0, 2.0: 1.0, 4.0: 9.0}.get).where(b["strategy"] != "s1", 9.5)
    r = strategy_ranking(a, b)
    assert [(x["strategy"], x["a"], x["rank_a"], x["b"], x["rank_b"]) for x in r["contact"]["rows"]] == [
        ("s1", 1.0, 1.0, 0.25, 3.0), ("s2", 0.5, 2.0, 0.5, 2.0), ("s3", 0.25, 3.0, 1.0, 1.0)]
    assert r["contact"]["tau"] == pytest.approx(-1.0) and r["contact"]["n_a"] == 12
    assert r["mean_interest"]["tau"] == pytest.approx(1 / 3)  # s1 stays first; s2 and s3 swap: (2 - 1) / 3
    assert "reason" in strategy_ranking(a, b[b["strategy"] == "s1"])


async def test_ablation_personas_against_the_article_ones_on_the_stub(tmp_path):
    """The plumbing of point 9: the same grid with the shipped ablation personas pairs with the normal run,
    `compare` names the changed persona entries and ranks the strategies on both sides."""
    grid = {"personas": "all", "strategies": "turn_back,common_interest,no_ask", "reps": 2, "max_turns": 2}
    db = tmp_path / "n.db"
    with StubServer() as url:
        a = await run_grid(grid, db=db, base_url=url)
        b = await run_grid(grid, db=db, base_url=url, personas_dir="ablation")
    assert a != b
    c = compare_runs(*load_pair(a, b, db), include_unfaithful=True)  # the stub's random states ignore the ranges
    changed = {d["field"] for d in c["differences"]}
    assert {"catalog.personas/aloof", "catalog.personas/friendly", "catalog.personas/unsure"} <= changed
    assert c["pairing"]["matched"] == 18
    assert c["ranking"]["contact"]["n_a"] == c["ranking"]["contact"]["n_b"] == 18


async def test_strategy_ranking_on_the_rule_stub(tmp_path):
    """Ranks and tau known by hand (test_compare asserted only the rows' order, which is alphabetical). On the rule
    stub common_interest's plain ask wins friendly and aloof (and unsure when she likes them): contact >= 2/3; the
    friends pretext wins friendly alone: 1/3; no_ask never asks: 0. Run B swaps the two strategies' instructions, so
    the stub plays each cell with the other's move: B ranks friends_pretext first, common_interest second."""
    import yaml

    from rule_stub import rule_server

    swapped = tmp_path / "prompts"
    swapped.mkdir()
    strategies = yaml.safe_load((data_dir("prompts") / "strategies.yaml").read_text())
    strategies["common_interest"]["instructions"], strategies["friends_pretext"]["instructions"] = (
        strategies["friends_pretext"]["instructions"], strategies["common_interest"]["instructions"])
    (swapped / "strategies.yaml").write_text(yaml.safe_dump(strategies))
    grid = {"personas": "all", "strategies": "common_interest,friends_pretext,no_ask", "reps": 2}
    db = tmp_path / "n.db"
    with rule_server() as url:
        a = await run_grid(grid, db=db, base_url=url)
        b = await run_grid(grid, db=db, base_url=url, prompts_dir=swapped)
    c = compare_runs(*load_pair(a, b, db))
    ranking = c["ranking"]["contact"]
    ranks = {r["strategy"]: (r["rank_a"], r["rank_b"]) for r in ranking["rows"]}
    assert ranks == {"common_interest": (1, 2), "friends_pretext": (2, 1), "no_ask": (3, 3)}
    rates = {r["strategy"]: (r["a"], r["b"]) for r in ranking["rows"]}
    assert rates["friends_pretext"][0] == rates["common_interest"][1] == pytest.approx(1 / 3) and rates["no_ask"] == (0, 0)
    # tau-b by hand: of the 3 pairs of strategies, (ci, fp) swaps and the two with no_ask keep their order: (2 - 1) / 3
    assert ranking["tau"] == pytest.approx(1 / 3)

    # The paired compare, by hand: friendly shares on both sides and no_ask never asks; aloof shares to the plain ask
    # only (A's common_interest, B's friends_pretext cells); unsure too, when she likes them, and a cell's twins draw
    # the same first interest (same seed), read here from run A's turns.
    from simulator.storage.store import Store

    with Store(db) as store:
        likes = {s: sum(next(t.interest for t in r.turns if t.speaker == "persona") > 4 for r in store.episodes(a)
                        if r.persona == "unsure" and r.strategy == s) for s in ("common_interest", "friends_pretext")}
    b10, b01 = 2 + likes["common_interest"], 2 + likes["friends_pretext"]
    contact = c["tests"]["contact"]
    assert c["pairing"]["paired"] == 18 and (contact["b01"], contact["b10"]) == (b01, b10)
    assert contact["p"] == pytest.approx(stats.binomtest(b01, b01 + b10).pvalue)


async def test_show_and_compare_measure_judge_agreement_on_the_same_episodes(tmp_path):
    """Issue 22 item 12: `show RUN` took α over every succeeded episode, `compare RUN` over the usable ones; a run
    with out-of-character episodes gave two figures for one thing. Both now use the usable episodes."""
    from graded_stub import graded

    from simulator import api

    db = tmp_path / "n.db"
    with StubServer(fault=graded) as url:  # random first states: some episodes in character, most not
        for seed in range(8):  # the first run seed whose run mixes the two (about 1 in 8 first states is in range)
            run_id = await run_grid({"personas": "all", "strategies": "common_interest,turn_back", "reps": 4, "judges": 3,
                                     "max_turns": 2, "seed": seed}, db=db, base_url=url)  # fmt: skip
            frame = api.load_frame(run_id, db=db)
            if 0 < frame["usable"].sum() < len(frame):
                break
    assert 0 < frame["usable"].sum() < len(frame)  # the two sets differ
    shown = api.summarize(run_id, db)["judge_alpha"]
    compared = api.compare(run_id, db=db)["variance"]["agreement"]["conditions"]
    assert shown == {c: (None if compared[c]["alpha"] is None else pytest.approx(compared[c]["alpha"], abs=5e-4)) for c in CONDITIONS}


def test_compare_with_a_run_that_has_no_episodes(tmp_path):
    """Issue 22 item 12: `compare A B` raised KeyError when B had no episodes; it says it cannot pair instead."""
    from simulator import api
    from simulator.storage.store import Store

    db = tmp_path / "n.db"
    with StubServer() as url:
        a = api.run_batch({"personas": "aloof", "strategies": "common_interest,no_ask", "max_turns": 2}, db=db, base_url=url).run_id
    with Store(db) as store:
        store.create_run("empty", RunSpec(experiment={"grid": "none yet"}))
    for x, y in ((a, "empty"), ("empty", a)):
        c = api.compare(x, y, db=db)
        assert c["pairing"]["paired"] == 0 and c["pairing"]["reason"] == "cannot pair: a run has no episodes"
        assert "reason" in c["ranking"] and c["tests"] == {}


async def test_compare_shows_how_each_run_was_graded_from_its_verdicts(tmp_path, monkeypatch):
    """Issue 22 item 5: B is A's grid graded again with another rubric, two judges and judge seed 5; one episode of A
    is graded again with two judges. The specs are the same: only the verdicts say how each was graded."""
    import shutil

    import yaml

    from evaluations.judge.rubric import load_rubric
    from simulator import api
    from simulator.core.files import data_dir

    rubric = tmp_path / "rubric.yaml"
    shutil.copy(data_dir("prompts") / "rubric.yaml", rubric)
    edited = yaml.safe_load(rubric.read_text())
    edited["conditions"]["timing"]["description"] += " Read the whole curve."
    rubric.write_text(yaml.safe_dump(edited, sort_keys=False))
    grid, db = {"personas": "unsure,friendly", "max_turns": 1}, tmp_path / "n.db"
    with StubServer() as url:
        a = await run_grid(grid, db=db, base_url=url)
        b = await run_grid(grid, db=db, base_url=url, run_id="b")
        api.grade(["b"], db=db, judges=2, seed=5, rubric_file=rubric, base_url=url)
        api.grade([api.load_episodes(a, db=db)[0].id], db=db, judges=2, base_url=url)
    c = compare_runs(*load_pair(a, "b", db))
    fields = {d["field"]: d for d in c["differences"]}
    assert {"prompts.rubric", "judges.count", "judges.seeds"} <= set(fields), sorted(fields)
    assert fields["prompts.rubric"] | {"diff": None} == {"field": "prompts.rubric", "a": load_rubric()[1],
                                                       "b": load_rubric(rubric)[1], "diff": None}  # fmt: skip
    assert "Read the whole curve." in fields["prompts.rubric"]["diff"]
    assert fields["judges.count"] == {"field": "judges.count", "a": [1, 2], "b": 2, "mixed": ["A"]}
    # A re-grade seeds judge i with the episode's seed + --seed + i (issue 22 item 12), so A's is not mixed
    assert fields["judges.seeds"] == {"field": "judges.seeds", "a": "episode seed + judge", "b": "episode seed + 5 + judge"}

    console = Console(file=io.StringIO(), width=80)
    monkeypatch.setattr(compare_cli, "console", console)
    assert CliRunner().invoke(compare_cli.app, ["compare", a, "b", "--db", str(db)]).exit_code == 0
    shown = console.file.getvalue()
    assert "│ judges.count " in shown and "│ [1, 2] (mixed) " in shown
    assert "Read the whole curve." in shown  # the rubric's diff
