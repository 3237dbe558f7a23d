"""Agreement between two labellers of the same sample (issue 27): two gold files whose agreement is worked out by hand."""

from __future__ import annotations

import json

import pytest
from test_outputs import nextstep, one_line_error

TURNS = [{"speaker": "practitioner", "text": "Hi there."}, {"speaker": "persona", "text": "Hello."}]
NULLS = dict.fromkeys(("agenda_clarity", "congruence", "genuine_interest", "timing", "natural_bridge", "setting_fit"))


def line(item_id: str, labeller: str, timing, agenda, flags: list[str], exchanged: str) -> dict:
    return {"id": item_id, "setting": "supermarket", "persona": "aloof", "strategy": "turn_back", "turns": TURNS,
            "labels": NULLS | {"timing": timing, "agenda_clarity": agenda}, "flags": flags, "exchanged": exchanged,
            "labeller": labeller, "labelled_at": "2026-12-06T20:00:00+00:00", "run_id": "r1"}  # fmt: skip


ANA = [line("e1", "ana", 5, 4, ["rude"], "number"), line("e2", "ana", 3, 2, [], "none"),
       line("e3", "ana", 1, None, [], "none"), line("e4", "ana", 4, 5, ["nervous"], "email"),
       line("e5", "ana", 2, 2, [], "none")]  # fmt: skip
BO = [line("e1", "bo", 5, 3, ["rude"], "number"), line("e2", "bo", 4, 2, [], "none"),
      line("e3", "bo", 3, 1, ["rude"], "none"), line("e4", "bo", 4, 5, [], "number"),
      line("e6", "bo", 1, 1, [], "none")]  # fmt: skip


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, lines in (("ana", ANA), ("bo", BO)):
        path = tmp_path / f"r1-labels-{name}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        paths.append(path)
    return paths


# By hand, over e1-e4 (e5 only ana's, e6 only bo's):
# timing (5,5) (3,4) (1,3) (4,4): exact 2/4, within one 3/4; linear-weighted kappa 1 - (3/16)/(22/64) = 5/11.
# agenda_clarity (4,3) (2,2) (-,1) (5,5): both find it applicable on 3 of 4; on those, exact 2/3, within one 3/3,
#   kappa 1 - (1/12)/(13/36) = 10/13.
# rude (1,1) (0,0) (0,1) (0,0): observed 3/4, chance 1/4*2/4 + 3/4*2/4 = 1/2, kappa 1/2; nervous: ana alone, kappa 0.
# exchanged: number=number, none=none, none=none, email!=number: 3/4.
EXPECTED = {"timing": {"n": 4, "applicable_agree": 1.0, "exact": 0.5, "within_1": 0.75, "kappa": pytest.approx(5 / 11)},
            "agenda_clarity": {"n": 3, "applicable_agree": 0.75, "exact": pytest.approx(2 / 3), "within_1": 1.0,
                               "kappa": pytest.approx(10 / 13)}}  # fmt: skip


def test_two_labellers_agreement_by_hand(files):
    from simulator import api

    r = api.labellers_agreement(*files)
    assert (r["first"], r["second"], r["items"]) == ("ana", "bo", 4)
    assert (r["only_first"], r["only_second"]) == (["e5"], ["e6"])
    for c, want in EXPECTED.items():
        assert {k: r["conditions"][c][k] for k in want} == want
    assert r["flags"]["rude"] == {"first": 1, "second": 2, "both": 1, "kappa": 0.5}
    assert r["flags"]["nervous"]["kappa"] == 0.0
    assert r["exchanged"] == {"n": 4, "agree": 0.75}


def test_agreement_command(files):
    done = nextstep("agreement", *map(str, files))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ana and bo" in out and "4 episodes labelled by both" in out and "e5" in out and "e6" in out
    row = next(x for x in out.splitlines() if x.strip("│ ").startswith("timing "))
    assert [x for x in row.replace("│", " ").split()][1:] == ["4", "1.000", "0.500", "0.750", "0.455"]  # kappa 5/11
    assert max(len(x) for x in out.splitlines()) <= 80
    done = nextstep("agreement", *map(str, files), "--json")
    assert json.loads(done.stdout)["conditions"]["agenda_clarity"]["kappa"] == pytest.approx(10 / 13)


def test_agreement_command_bad_input(files, tmp_path):
    one_line_error(nextstep("agreement", str(files[0]), str(tmp_path / "none.jsonl")), "none.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(line("x9", "cy", 1, 1, [], "none")) + "\n")
    one_line_error(nextstep("agreement", str(files[0]), str(other)), "no episode labelled in both")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    one_line_error(nextstep("agreement", str(files[0]), str(broken)), "broken.jsonl:1")
