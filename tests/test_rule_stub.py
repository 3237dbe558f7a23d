"""The rule-playing stub (tests/rule_stub.py): a batch against it gives the figures its rules say, worked out by hand."""

from __future__ import annotations

import pytest
from rule_stub import rule_server

from evaluations.analysis.frame import load_run
from simulator.runs.batch import run_grid

STRATEGIES = "common_interest,friends_pretext,social_media,turn_back,no_ask"


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory):
    """Every persona x five strategies x 3 reps against the rule stub: (db, run id)."""
    import asyncio

    db = tmp_path_factory.mktemp("rules") / "n.db"
    with rule_server() as url:
        run_id = asyncio.run(run_grid({"personas": "all", "strategies": STRATEGIES, "reps": 3}, db=db, base_url=url,
                                      concurrency=4))  # fmt: skip
    return db, run_id


def test_every_episode_is_in_character_and_graded(rule_run):
    frame = load_run(rule_run[1], rule_run[0])
    assert len(frame) == 45 and set(frame["status"]) == {"succeeded"}
    assert frame["fidelity_ok"].all()  # first states drawn inside each file's range
    assert frame["judged_exchanged"].tolist() == frame["exchanged"].tolist()  # the judge reads what the turns say


def test_contact_follows_each_persona_s_rules(rule_run):
    frame = load_run(rule_run[1], rule_run[0])
    got = {(r.persona, r.strategy, r.rep): r.exchanged for r in frame.itertuples()}
    # By hand, from the persona files' rules: friendly gives what is asked for; aloof only to a plain ask
    # (common_interest, turn_back's parting); unsure hedges unless plain, then shares if interest > 4.
    first = {(r.persona, r.strategy, r.rep): r for r in frame.itertuples()}
    for rep in range(3):
        assert [got["friendly", s, rep] for s in STRATEGIES.split(",")] == ["number", "number", "social_handle", "email", "none"]
        assert [got["aloof", s, rep] for s in STRATEGIES.split(",")] == ["number", "none", "none", "email", "none"]
        for s, kind in (("common_interest", "number"), ("turn_back", "email")):
            row = first["unsure", s, rep]
            likes = _first_interest(rule_run, row.episode_id) > 4
            assert got["unsure", s, rep] == (kind if likes else "none")
        assert got["unsure", "friends_pretext", rep] == got["unsure", "social_media", rep] == "none"


def test_judge_flags_the_masked_aim_only(rule_run):
    frame = load_run(rule_run[1], rule_run[0])
    sketchy = frame.groupby("strategy")["flag_sketchy"].mean().to_dict()
    assert sketchy == {"common_interest": 0, "friends_pretext": 1, "social_media": 0, "turn_back": 0, "no_ask": 0}
    plain = frame[frame["strategy"] == "common_interest"]
    assert (plain["agenda_clarity"] == 5).all() and (frame.loc[frame["strategy"] == "friends_pretext", "agenda_clarity"] == 1).all()


def _first_interest(rule_run, episode_id: str) -> int:
    from simulator.storage.store import Store

    with Store(rule_run[0]) as store:
        return next(t.interest for t in store.episode(episode_id).turns if t.speaker == "persona")
