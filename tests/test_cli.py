"""The command line: bad input is one line on stderr and exit 2; `catalog` lists everything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def nextstep(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd, env=env)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nextstep: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_catalog_lists_every_entry():
    result = nextstep("catalog")
    assert result.returncode == 0
    for name in ["bar_club", "workplace", "supermarket", "elsewhere", "friendly", "aloof", "unsure", "turn_back",
                 "common_interest", "high_point_exit", "friends_pretext", "social_media", "no_ask", "nonbinary"]:
        assert name in result.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--setting", "moon"], ["unknown setting 'moon'", "bar_club, workplace, supermarket, elsewhere"]),
        (["--persona", "shy"], ["unknown persona 'shy'", "aloof"]),
        (["--strategy", "beg"], ["unknown strategy 'beg'", "no_ask"]),
        (["--persona-gender", "robot"], ["--persona-gender 'robot'"]),
        (["--max-turns", "0"], ["max_turns: Input should be greater than or equal to 1"]),
        (["--temperature", "hot"], ["Invalid value for '--temperature'"]),
        (["--turbo"], ["No such option: --turbo"]),
        (["--personas-dir", "/nonexistent"], ["--personas-dir /nonexistent: not a directory"]),
        (["--personas", "aloof"], ["No such option: --personas"]),  # a directory is --personas-dir
        (["--config", "/nonexistent.toml"], ["--config /nonexistent.toml: no such file"]),
        (["--base-url", "http://127.0.0.1:9/v1"], ["--base-url http://127.0.0.1:9/v1: unreachable"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragments):
    assert_one_line_error(nextstep("run", *args), *fragments)


def test_missing_api_key(monkeypatch):
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENAI_API_KEY"}
    assert_one_line_error(nextstep("run", "--backend", "openai", env=env), "needs an API key in $OPENAI_API_KEY")


def test_broken_persona_file_names_file_and_place(tmp_path):
    (tmp_path / "aloof.yaml").write_text("id: aloof\nsummary: [oops\n")
    assert_one_line_error(nextstep("run", "--personas-dir", str(tmp_path)), "aloof.yaml: line 3", "invalid YAML")


def test_config_file_and_environment_precedence(tmp_path):
    (tmp_path / "nextstep.toml").write_text('max_turns = 0\n')
    assert_one_line_error(nextstep("run", cwd=tmp_path), "nextstep.toml", "max_turns")
    env = {**__import__("os").environ, "NEXTSTEP_MAX_TURNS": "-3"}
    assert_one_line_error(nextstep("run", cwd=tmp_path, env=env), "max_turns")  # the environment beats the file
    # ... and a flag beats both: this one fails later, on the unknown persona, not on max_turns
    assert_one_line_error(nextstep("run", "--max-turns", "2", "--persona", "shy", cwd=tmp_path, env=env), "unknown persona")


INTERRUPTED_COMMAND = """
from simulator.cli.app import app, main

@app.command()
def interrupted() -> None:
    exec("raise KeyboardInterrupt")  # as an interrupt that lands while a dataclass builds its methods

main()
"""


def test_an_interrupt_inside_a_string_exec_still_exits_130(tmp_path):
    # CPython leaves a mark when a KeyboardInterrupt leaves a string exec, even a caught one; `python -m` then died by
    # SIGINT (-2) instead of exiting 130. It did so in CI when SIGTERM landed during an import.
    (tmp_path / "interrupted_cli.py").write_text(INTERRUPTED_COMMAND)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "interrupted_cli", "interrupted"], capture_output=True, text=True, env=env)
    assert (result.returncode, result.stderr) == (130, "nextstep: interrupted\n")


IN_A_TASK = """
import asyncio
from simulator.api import _wait
from simulator.cli.app import app, main

async def child():
    raise KeyboardInterrupt  # as Ctrl-C or SIGTERM landing while an episode's task runs

async def batch():
    await asyncio.gather(child(), asyncio.sleep(1))

@app.command()
def interrupted() -> None:
    _wait(batch())

main()
"""


def test_an_interrupt_inside_a_task_is_reported_once(tmp_path):
    """The interrupt also ends the task that awaited the interrupted one, and asyncio logged that task's exception as
    'never retrieved', a traceback after 'interrupted' (a Ray batch's SIGTERM test met it in CI)."""
    (tmp_path / "in_a_task.py").write_text(IN_A_TASK)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "in_a_task", "interrupted"], capture_output=True, text=True, env=env)
    assert (result.returncode, result.stderr) == (130, "nextstep: interrupted\n")
