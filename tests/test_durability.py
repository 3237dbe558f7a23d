"""Nothing lost: two writers on one run, failing re-grades, full disks, locked and read-only databases (issue 24)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from stub_server import StubServer

from simulator.storage.store import Store

JUDGE_OUTPUTS = {"transition_turns", "transition_grades", "flags", "outcome"}


def nextstep(*args, limit_file_bytes: int | None = None, cwd=None):
    """The CLI in a child process; `limit_file_bytes` caps the size of any file it writes (RLIMIT_FSIZE): a full disk."""
    cap = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))) if limit_file_bytes else None
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, preexec_fn=cap)  # fmt: skip


def judge_call(body: dict) -> bool:
    fmt = body.get("response_format") or {}
    return ((fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}).get("title")) in JUDGE_OUTPUTS


# --- 3: every file is written whole or not at all ---------------------------------------------------------------------


def test_grading_an_episode_file_on_a_full_disk_leaves_the_file_as_it_was(tmp_path):
    """`grade EPISODE.json` rewrote the only copy in place: when the disk filled, the file was cut short (invalid JSON).
    Here the child may write no file bigger than the episode file already is (the graded one is bigger)."""
    import simulator.api as api

    with StubServer() as url:
        record = api.run_episode("workplace", "aloof", "no_ask", judges=0, max_turns=2, base_url=url)
        path = api.save_episode(record, tmp_path)
        before = path.read_bytes()
        result = nextstep("grade", str(path), "--base-url", url, "--db", str(tmp_path / "n.db"),
                          limit_file_bytes=len(before) + 100)  # fmt: skip
    assert path.read_bytes() == before  # whole, unchanged
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{path}: cannot write" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left behind
