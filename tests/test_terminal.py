"""What the terminal shows: summaries rather than floods, notes said once, and everything designed for 80 columns."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console
from conftest import lenient_personas
from stub_server import StubServer, pinned

from simulator.runs.batch import run_grid

WIDE = re.compile(r"^.{81,}$", re.M)


def nextstep(*args, columns: int = 80):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns)})  # fmt: skip


@pytest.fixture(scope="module")
def graded_run(tmp_path_factory):
    """A stub run of 6 episodes (2 personas x 3 reps) graded by one judge."""
    import asyncio

    tmp = tmp_path_factory.mktemp("terminal")
    db, personas = tmp / "n.db", lenient_personas(tmp / "personas")

    async def run():
        with StubServer() as url:
            return await run_grid({"personas": "aloof,unsure", "reps": 3, "max_turns": 2}, db=db, base_url=url,
                                  run_id="r1", personas_dir=personas), url  # fmt: skip

    run_id, _ = asyncio.run(run())
    return db, run_id


def test_grade_prints_a_summary_not_every_verdict(graded_run):
    db, run_id = graded_run
    with StubServer() as url:
        quiet = nextstep("grade", run_id, "--judges", "2", "--base-url", url, "--db", str(db))
        loud = nextstep("grade", run_id, "--judges", "1", "--seed", "5", "--verbose", "--base-url", url, "--db", str(db))
    assert quiet.returncode == 0, quiet.stderr
    assert "verdict (judge" not in quiet.stdout and len(quiet.stdout.splitlines()) < 30
    assert "6 episodes graded by 2 judges: 12 verdicts" in quiet.stdout  # 6 episodes x 2 judges, counted by hand
    assert "condition" in quiet.stdout and "agenda_clarity" in quiet.stdout
    assert loud.returncode == 0 and loud.stdout.count("verdict (judge") == 6
    assert WIDE.findall(quiet.stdout) == []


def test_grade_progress_bar_fits_80_columns():
    from simulator.cli.progress import progress_bar

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    with progress_bar(console, "grading") as update:
        update(3, 105, "3 verdicts, 0 ungraded")
    last = [line for line in out.getvalue().replace("\r", "\n").splitlines() if "3/105" in line][-1]
    assert len(re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", last)) <= 80 and "3/105" in last


def test_compare_says_the_variance_note_once(graded_run):
    db, run_id = graded_run
    result = nextstep("compare", run_id, "--db", str(db))
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    # The legend once, under the table (the judge note too where a measure has one value per episode; the grade
    # test may have given this run a second judge first).
    assert flat.count("cell, rep, judge: each one's share") == 1 and flat.count("judge noise is inside repetition") <= 1


def test_dry_run_prints_the_totals_first():
    result = nextstep("batch", "--dry-run", "--strategies", "turn_back,no_ask,social_media", "--reps", "2")
    assert result.returncode == 0, result.stderr
    # 1 setting x 3 personas x 3 strategies x 2 reps, counted by hand
    assert result.stdout.splitlines()[0].startswith("18 episodes; at most")


@pytest.fixture(scope="module")
def embedded_like_run(tmp_path_factory):
    """A stub run whose every episode is out of character (each persona turn says interest 9: above aloof's and
    unsure's first-turn ranges, 3-7 and 2-6), stored as the embedded model's run would be (backend 'local'): the
    first screen a new user sees."""
    import asyncio
    import json
    import sqlite3

    db = tmp_path_factory.mktemp("first") / "n.db"

    async def run():
        with StubServer(fault=pinned(persona_state={"interest": 9, "comfort": 5, "intent": "chat"})) as url:
            return await run_grid({"personas": "aloof,unsure", "reps": 2, "max_turns": 2}, db=db, base_url=url, run_id="r1")

    asyncio.run(run())
    with sqlite3.connect(db) as conn:
        spec = json.loads(conn.execute("SELECT spec_json FROM runs WHERE id = 'r1'").fetchone()[0])
        conn.execute("UPDATE runs SET spec_json = ? WHERE id = 'r1'", (json.dumps(spec | {"backend": "local"}),))
    return db


def test_first_screen_says_what_happened_and_what_next(embedded_like_run):
    from simulator.storage.store import Store

    db = embedded_like_run
    with Store(db) as store:
        records = store.episodes("r1")
    assert all(r.fidelity and not r.fidelity.ok for r in records)  # the premise: every episode out of character
    aloof = [r for r in records if r.persona == "aloof"]
    contact = sum(r.outcome.exchanged in ("number", "email") for r in aloof) / len(aloof)  # by hand, from the records
    result = nextstep("show", "r1", "--db", str(db))
    text = result.stdout
    assert result.returncode == 0, result.stderr
    flat = " ".join(text.split())
    assert "all 4 episodes are out of character" in flat
    assert "embedded model" in flat and "stronger model" in flat
    row = next(line for line in text.splitlines() if line.split()[:1] == ["aloof"])
    assert f"{contact:.0%}†" in row  # the figure with out-of-character episodes included, marked
    assert "† over out-of-character episodes" in flat and "next: nextstep personas r1" in flat
    assert WIDE.findall(text) == [] and "…" not in text  # nothing cut at 80 columns


def test_the_summary_of_the_default_batch_s_cells_fits_80_columns(tmp_path):
    """The default batch's cells (supermarket, the three personas) are the widest names its summary shows: with
    them, 'meeting' was cut to 'meeti…' at 80 columns (issue 23 item 15)."""
    import asyncio

    db = tmp_path / "n.db"
    with StubServer() as url:
        asyncio.run(run_grid({"settings": "supermarket", "personas": "all", "max_turns": 2}, db=db, base_url=url, run_id="r1"))
    result = nextstep("show", "r1", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert "friendly" in result.stdout and "supermarket" in result.stdout and "meeting" in result.stdout
    assert WIDE.findall(result.stdout) == [] and "…" not in result.stdout


@pytest.mark.parametrize("args, expected", [(["--bogus"], "nextstep: error: No such option: --bogus"),
                                            (["runs", "--bogus"], "nextstep: error: runs: No such option: --bogus")])
def test_an_error_says_nextstep_error_once(args, expected):
    result = nextstep(*args)
    assert result.returncode == 2 and result.stderr.strip() == expected


def test_branch_warns_before_any_call(embedded_like_run):
    """Out-of-character parents and a treatment the parents already had are said with no endpoint at all."""
    import simulator.api as api

    plan = api.plan_branch("r1", at="1", strategy="common_interest", reps=2, db=embedded_like_run)
    assert plan["continuations"] == 2 * 2 * 4  # two arms x 2 reps x 4 parents
    text = " ".join(plan["warnings"])
    assert "4 of 4 parent episode(s) are out of character" in text and "the treatment equals the control" in text
    assert api.plan_branch("r1", at="1", strategy="turn_back", reps=2, db=embedded_like_run)["warnings"][1:] == []
    with StubServer() as url:
        result = nextstep("branch", "r1", "--at", "1", "--strategy", "common_interest", "--reps", "1", "--base-url", url,
                          "--db", str(embedded_like_run))  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("warning: the treatment equals the control") < out.index("control: 4 continuations")
    assert " rep 0: " not in out  # the per-continuation lines gave way to the bar (nothing off a terminal)


COMMANDS = ["catalog", "run", "grade", "calibrate", "batch", "runs", "show", "export", "compare", "plan", "personas",
            "report", "branch", "play", "serve", "view", "label", "agreement"]  # fmt: skip


def test_every_help_fits_80_columns():
    """Help texts, defaults and option names whole: nothing cut with '…', no line past 80, no markup escapes."""
    for args in [["--help"], *([c, "--help"] for c in COMMANDS)]:
        result = nextstep(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "…" not in result.stdout and WIDE.findall(result.stdout) == [] and "\\[" not in result.stdout, args


def test_the_stored_run_views_fit_80_columns(graded_run):
    db, run_id = graded_run
    for args in (["runs"], ["show", run_id], ["compare", run_id], ["plan", run_id], ["personas", run_id]):
        result = nextstep(*args, "--db", str(db))
        assert result.returncode == 0, (args, result.stderr)
        cut = [line for line in result.stdout.splitlines() if "…" in line]
        assert cut == [] and WIDE.findall(result.stdout) == [], args
