"""The benchmark command still runs: its smoke mode writes every benchmark's row, with numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    r"B1 efficiency, ideal = the longer of scheduled makespan",
    r"B1 efficiency, ideal = scheduled makespan",
    r"B1 efficiency, ideal = Σ critical-path calls",
    r"B2 c=64 toolkit / bare episodes/s",
    r"B2 c=128 toolkit / bare episodes/s",
    r"B3 c=64 toolkit − bare CPU ms/call",
    r"LangGraph alone: c=64 bare loop in graphs − bare CPU ms/call",
    r"reference: c=64 toolkit / bare loop with create() on httpx2 episodes/s",
    r"B3 c=128 toolkit client CPU ms/call",
    r"B3 peak RSS, toolkit, 128 in flight, MB",
    r"B4 toolkit / in-process tokens/s",
]
NUMBER = r"\d+(\.\d+)?"


def test_smoke_run_writes_every_row(tmp_path):
    out = tmp_path / "results.md"
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for name in ROWS:
        line = next((line for line in text.splitlines() if line.startswith(f"| {name}")), None)
        assert line, f"no row for {name!r} in:\n{text}"
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(re.fullmatch(NUMBER, c) for c in cells[1:4]), f"median, min, max must be numbers: {line}"
    assert (results.read_bytes() if results.exists() else None) == before, "a smoke run must not touch RESULTS.md"


def test_smoke_needs_an_output_path():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"], capture_output=True, text=True)
    assert done.returncode == 2 and "--smoke needs --out" in done.stderr


def test_the_b1_ideal_counts_every_request_against_the_concurrency_limit():
    """Two episodes of 4 calls, each with its parts at once (a critical path of 2), 2 requests in flight, 1 s a call:
    their schedule says 2 s, but the 8 calls take 2 slots at least 4 s."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import ideal_makespan

    assert ideal_makespan([4, 4], [2, 2], 1.0, 2) == 4.0
    assert ideal_makespan([2, 2, 2], [2, 2, 2], 1.0, 2) == 4.0  # here the schedule's tail is the longer: 3 calls of 2 s on 2 slots


def test_the_bare_loop_replays_an_episode_in_the_toolkits_order():
    """Each conversation turn's calls one after another (a graph node's), then the judge's transitions, then its parts
    at once (re-asks in turn)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from trial import plan, stages

    rows = [{"part": None, "turn": "0", "body": "line"}, {"part": None, "turn": "0", "body": "label"},
            {"part": None, "turn": "1", "body": "reply"}, {"part": None, "turn": "1", "body": "rating"},
            {"part": "transitions", "body": "t"}, {"part": "transition0", "body": "g0"}, {"part": "flags", "body": "f"},
            {"part": "transition0", "body": "g0 again"}, {"part": "outcome", "body": "o"}]  # fmt: skip
    assert plan(rows) == ([["line", "label"], ["reply", "rating"]], [[["t"]], [["g0", "g0 again"], ["f"], ["o"]]])
    assert stages(rows) == [[["line", "label"]], [["reply", "rating"]], [["t"]], [["g0", "g0 again"], ["f"], ["o"]]]


def test_paired_smoke_run_compares_two_trees(tmp_path):
    """benchmarks/paired.py runs two checkouts' own trial.py side by side: one round of the smoke grid (the checkout is
    copied rather than unpacked from git, which a CI checkout may not carry)."""
    shutil.copytree(ROOT, tmp_path / "before", ignore=shutil.ignore_patterns(".venv", ".git", "*.db", "__pycache__"))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paired.py"), str(tmp_path / "before"), "--smoke"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(rf"c=8, 1 rounds: client CPU ms/call before {NUMBER}, after {NUMBER}; paired after - before median [+-]{NUMBER} ms",
                     done.stdout), done.stdout  # fmt: skip
