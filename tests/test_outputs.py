"""Files the commands write: the format follows the name, nothing is replaced without --force, and a path that cannot
be written is one line and exit 2 before any model call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from stub_server import StubServer

GOLD = Path(__file__).resolve().parents[1] / "evaluations" / "gold" / "team.jsonl"


def nextstep(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "80"})


def one_line_error(result, *fragments) -> str:
    """The command's one error line, after checking it is one line, exit 2, and holds each fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nextstep: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A database with run r1: two stub episodes, no judges."""
    folder = tmp_path_factory.mktemp("stored")
    with StubServer() as url:
        batch = nextstep("batch", "--personas", "aloof,unsure", "--max-turns", "1", "--judges", "0", "--run-id", "r1",
                         "--base-url", url, "--db", str(folder / "n.db"))
    assert batch.returncode == 0, batch.stderr
    return folder


def test_export_takes_its_format_from_the_file_name_and_names_the_file_after_the_run(stored, tmp_path):
    db = str(stored / "n.db")
    assert nextstep("export", "r1", "--format", "csv", "--db", db, cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.csv"]  # not CSV written into episodes.jsonl
    assert len(pd.read_csv(tmp_path / "r1.csv")) == 2
    assert nextstep("export", "r1", "--db", db, cwd=tmp_path).returncode == 0
    assert len((tmp_path / "r1.jsonl").read_text().splitlines()) == 2
    assert nextstep("export", "r1", "-o", "out.csv", "--db", db, cwd=tmp_path).returncode == 0
    assert list(pd.read_csv(tmp_path / "out.csv")["persona"]) == ["aloof", "unsure"]  # CSV, not JSON lines in a .csv
    assert nextstep("export", "r1", "-o", "out.parquet", "--db", db, cwd=tmp_path).returncode == 0
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 2
    one_line_error(nextstep("export", "r1", "-o", "out.txt", "--db", db, cwd=tmp_path), "out.txt", "jsonl, csv, parquet")
    one_line_error(nextstep("export", "r1", "-o", "x.csv", "--format", "jsonl", "--db", db, cwd=tmp_path), "x.csv", "jsonl")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "out.txt").exists()


def test_export_never_replaces_a_file_without_force(stored, tmp_path):
    db, kept = str(stored / "n.db"), tmp_path / "r1.jsonl"
    kept.write_text("an earlier export\n")
    one_line_error(nextstep("export", "r1", "--db", db, cwd=tmp_path), "r1.jsonl", "exists", "--force")
    assert kept.read_text() == "an earlier export\n"
    assert nextstep("export", "r1", "--force", "--db", db, cwd=tmp_path).returncode == 0
    assert [json.loads(line)["persona"] for line in kept.read_text().splitlines()] == ["aloof", "unsure"]


@pytest.mark.parametrize("command", [
    ["export", "r1", "-o", "{missing}/e.csv"],
    ["export", "r1", "-o", "{dir}"],
    ["report", "r1", "-o", "{missing}/r.html"],
])  # fmt: skip
def test_an_output_path_that_cannot_be_written_is_one_line(stored, tmp_path, command):
    args = [a.format(missing=tmp_path / "no" / "such", dir=tmp_path) for a in command]
    one_line_error(nextstep(*args, "--db", str(stored / "n.db")), str(tmp_path))


@pytest.mark.parametrize("command", [
    ["batch", "--personas", "aloof", "--max-turns", "1", "--db", "{missing}/x.db"],
    ["calibrate", str(GOLD), "-o", "{missing}/calibration.json"],
])  # fmt: skip
def test_a_bad_output_path_is_refused_before_any_model_call(tmp_path, command):
    stub = StubServer()
    with stub as url:
        result = nextstep(*[a.format(missing=tmp_path / "no" / "such") for a in command], "--base-url", url)
    one_line_error(result, str(tmp_path / "no" / "such"))
    assert stub.requests == []  # checked before anything was paid for
