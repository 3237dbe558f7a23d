"""The light commands start without the heavy stack: each command imports what it needs when it runs.

Not timed (a shared machine makes timings flaky): the check is which modules a command imports, read from
`python -X importtime`. The times themselves are measured by benchmarks/startup.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

OLD_DB = Path(__file__).parent / "fixtures" / "nextstep-0.1.0.db"  # made by tests/fixtures/make_old_db.py
HEAVY = ("langgraph", "langchain_core", "openai", "httpx", "pandas", "numpy", "scipy", "matplotlib", "jinja2")


def imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `nextstep ARGS` under -X importtime; (the result, the top-level packages it imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "simulator", *args], capture_output=True, text=True)
    names = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if line.startswith("import time:")}
    return result, names


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("startup") / "n.db"
    shutil.copy(OLD_DB, path)
    return path


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["runs", "--help"], ["show", "--help"],
                                  ["export", "--help"], ["batch", "--help"], ["compare", "--help"]])  # fmt: skip
def test_help_and_version_import_nothing_heavy(args):
    result, names = imported(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(names & set(HEAVY)) == []


def test_runs_and_show_episode_import_nothing_heavy(db):
    result, names = imported("runs", "--db", str(db))
    assert result.returncode == 0 and "old-batch" in result.stdout
    assert sorted(names & set(HEAVY)) == []
    result, names = imported("show", "2aa7561c5cd7", "--db", str(db))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(names & set(HEAVY)) == []


def test_episodes_and_a_jsonl_export_import_nothing_heavy(db, tmp_path):
    """Both read the store's columns or its records as stored: no frame, so no pandas or scipy (issue 23, item 12)."""
    result, names = imported("episodes", "old-batch", "--db", str(db))
    assert result.returncode == 0 and "2aa7561c5cd7" in result.stdout, result.stderr[-2000:]
    assert sorted(names & set(HEAVY)) == []
    out = tmp_path / "old.jsonl"
    result, names = imported("export", "old-batch", "-o", str(out), "--db", str(db))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 3  # the fixture's three episodes
    assert sorted(names & set(HEAVY)) == []


def test_the_check_sees_a_heavy_import(db):
    """The check can fail: `show RUN` computes a summary and so loads pandas."""
    result, names = imported("show", "old-batch", "--db", str(db))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pandas" in names


def test_version_and_short_help():
    result = subprocess.run([sys.executable, "-m", "simulator", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"nextstep {version('nextstep')}"
    short = subprocess.run([sys.executable, "-m", "simulator", "runs", "-h"], capture_output=True, text=True)
    assert short.returncode == 0 and "List the runs" in short.stdout
