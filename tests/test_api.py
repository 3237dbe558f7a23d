"""The Python API is the command line's: each command calls `simulator.api`, and the README's notebook example runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from stub_server import StubServer
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


class Called(Exception):
    """Raised by a stand-in api function: the command got as far as calling it, with these arguments."""

    def __init__(self, name, args, kwargs):
        super().__init__(name)
        self.name, self.args, self.kwargs = name, args, kwargs


# argv, the api function the command must call, and arguments it must pass (parsed from the flags).
COMMANDS = [
    (["catalog", "--personas-dir", "ablation"], "catalog", {"personas_dir": Path("ablation")}),
    (["run", "--persona", "aloof", "--seed", "3", "--judges", "2", "--base-url", "http://x/v1"], "run_episode",
     {"seed": 3, "judges": 2, "base_url": "http://x/v1"}),
    (["batch", "--personas", "aloof,unsure", "--reps", "2", "--db", "x.db", "--prompts-dir", "p"], "run_batch",
     {"db": Path("x.db"), "prompts_dir": Path("p")}),
    (["batch", "--dry-run", "--resume", "r1"], "plan_batch", {"resume": "r1"}),
    (["grade", "r1", "--judges", "3", "--evaluator-model", "m"], "grade", {"judges": 3, "evaluator_model": "m"}),
    (["calibrate", "gold.jsonl", "--seed", "5"], "calibrate", {"seed": 5}),
    (["agreement", "a.jsonl", "b.jsonl", "--personas-dir", "ablation"], "labellers_agreement", {"personas_dir": Path("ablation")}),
    (["runs", "--db", "x.db"], "runs", {}),
    (["show", "r1"], "show", {}),
    (["episodes", "r1", "--persona", "aloof", "--no-contact"], "episodes", {"persona": "aloof", "contact": False}),
    (["export", "r1", "--format", "csv", "-o", "r.csv"], "export", {}),
    (["compare", "a", "b", "--include-unfaithful"], "compare", {"include_unfaithful": True}),
    (["plan", "a", "--power", "0.9"], "plan_reps", {"power": 0.9}),
    (["personas", "a", "--personas-dir", "ablation"], "audit_personas", {"personas_dir": Path("ablation")}),
    (["report", "a", "--vs", "b"], "write_report", {"vs": "b"}),
    (["branch", "r1", "--at", "first-ask", "--strategy", "no_ask", "--base-url", "http://x/v1"], "branch",
     {"at": "first-ask", "strategy": "no_ask", "base_url": "http://x/v1"}),
    (["play", "--as", "persona", "--model", "m"], "play", {"model": "m"}),
    (["serve", "--port", "9999"], "serve", {}),
]


@pytest.mark.parametrize("argv, name, expected", COMMANDS, ids=lambda x: x[0] if isinstance(x, list) else None)
def test_every_command_calls_the_api(monkeypatch, argv, name, expected):
    """A command parses its flags and hands them to its api function: the work is reachable from Python."""
    import simulator.api as api
    from simulator.cli.app import app

    def stand_in(*args, **kwargs):
        raise Called(name, args, kwargs)

    monkeypatch.setattr(api, "plan_branch", lambda *args, **kwargs: {"warnings": []})  # branch reads the store first
    monkeypatch.setattr(api, name, stand_in)
    result = CliRunner().invoke(app, argv)
    assert isinstance(result.exception, Called), result.output
    assert result.exception.kwargs | expected == result.exception.kwargs


def test_directories_and_shared_flags_are_named_alike_everywhere():
    """--personas-dir and --prompts-dir are the directories wherever they are taken; --personas only names personas;
    every command that reaches a model takes the same endpoint and file flags."""
    import typer

    from simulator.cli.app import app

    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        params = {opt: p for p in command.params for opt in p.opts}
        assert "--prompts" not in params, name
        if "--personas" in params:
            assert params["--personas"].name == "personas", name  # the grid's personas, never a directory
    shared = {"--base-url", "--backend", "--model", "--evaluator-model", "--personas-dir", "--prompts-dir", "--config"}
    for name in ("run", "batch", "grade", "calibrate", "play"):
        assert shared <= {opt for p in commands[name].params for opt in p.opts}, name


def test_the_grade_command_and_the_api_give_the_same_verdicts(tmp_path):
    """`nextstep grade FILE` and `api.grade([FILE])` on the same episode, seed and stub: the same grades, the old
    verdicts kept as history in the file."""
    import simulator.api as api
    from simulator.cli.app import app

    with StubServer() as url:
        record = api.run_episode("workplace", "aloof", "no_ask", judges=0, max_turns=2, base_url=url)
        cli_file, api_file = api.save_episode(record, tmp_path / "cli"), api.save_episode(record, tmp_path / "api")
        result = CliRunner().invoke(app, ["grade", str(cli_file), "--seed", "4", "--base-url", url])
        assert result.exit_code == 0, result.output
        graded = api.grade([str(api_file)], seed=4, base_url=url)
    by_cli, by_api = json.loads(cli_file.read_text()), json.loads(api_file.read_text())
    strip = lambda verdicts: [{k: v for k, v in x.items() if k != "calls"} for x in verdicts]  # noqa: E731 (latencies differ)
    assert strip(by_cli["verdicts"]) == strip(by_api["verdicts"]) == strip([v.model_dump(mode="json") for v in graded["verdicts"][0]])
    assert len(by_api["verdicts"]) == 1 and by_api["verdict_history"] == [] and graded["judge_alpha"] is None
    judged = sum(len(v["calls"]) for v in by_api["verdicts"])
    assert judged and by_api["usage"]["calls"] == len(by_api["calls"]) + judged  # the file's usage counts the new judge calls


def readme_python_api_block() -> str:
    """The first python block under the README's 'Python API' heading."""
    section = (ROOT / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    """The README's Python API block, as written, against the stub endpoint (named by NEXTSTEP_BASE_URL)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with StubServer() as url:
        monkeypatch.setenv("NEXTSTEP_BASE_URL", url)
        exec(compile(readme_python_api_block(), "README.md", "exec"), namespace)
    a, b, df, c = namespace["a"], namespace["b"], namespace["df"], namespace["c"]
    assert a.run_id != b.run_id and a.progress.done + a.progress.failed == 8 and len(df) == 8
    assert sorted(df["persona"].unique()) == ["aloof", "unsure"]
    assert {"catalog.personas/aloof", "catalog.personas/unsure"} <= {d["field"] for d in c["differences"]}
    assert c["pairing"]["matched"] == 8
    out = capsys.readouterr().out
    assert a.run_id in out
    # Issue 22 item 13: the example's per-persona contact is over the episodes compare counts, not every episode.
    printed = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.split()[:1] in (["aloof"], ["unsure"])}
    counted = {p["persona"]: p["contact"]["rate"] for p in namespace["api"].compare(a.run_id, db="demo.db")["personas"] if p["n"]}
    assert printed == pytest.approx(counted)
    import sqlite3  # ... and docs/store.md's SQL over the `usable` column says the same

    with sqlite3.connect("demo.db") as conn:
        by_sql = dict(conn.execute("SELECT persona, avg(exchanged IN ('number', 'email')) FROM episodes WHERE run_id = ? "
                                   "AND usable GROUP BY persona", (a.run_id,)).fetchall())  # fmt: skip
    assert by_sql == pytest.approx(counted)


def test_regrading_seeds_each_episode_s_judges_from_its_own_seed(tmp_path):
    """Issue 22 item 12: `grade RUN` gave every episode's judge i the seed `--seed` + i, so four episodes drew the same
    judge; judge i of an episode is seeded with the episode's seed + `--seed` + i, as a batch seeds it."""
    from rule_stub import rule_server

    from simulator import api
    from simulator.storage.store import Store

    db = tmp_path / "n.db"
    with rule_server() as url:
        run_id = api.run_batch({"personas": "aloof,unsure", "reps": 2, "judges": 2}, db=db, base_url=url).run_id
        with Store(db) as store:
            batch = {e.id: [(v.judge, v.seed) for v in e.verdicts] for e in store.episodes(run_id)}
            seeds = {e.id: e.seed for e in store.episodes(run_id)}
        api.grade([run_id], db=db, judges=2, base_url=url)
        api.grade([run_id], db=db, judges=2, seed=10, base_url=url)
    with Store(db) as store:
        regraded = {e.id: [(v.judge, v.seed) for v in e.verdicts] for e in store.episodes(run_id)}
        history = {e.id: sorted(json.loads(row[0])["seed"] for row in store.conn.execute(
            "SELECT verdict_json FROM verdict_history WHERE episode_id = ?", (e.id,))) for e in store.episodes(run_id)}  # fmt: skip
    assert len(set(seeds.values())) == 4
    assert regraded == {e: [(0, s + 10), (1, s + 11)] for e, s in seeds.items()}
    assert batch == {e: [(0, s), (1, s + 1)] for e, s in seeds.items()}
    # `--seed 0` is the batch's own panel: those verdicts were kept, not graded again (issue 24 item 2), so the history
    # holds the batch's verdicts once, replaced by `--seed 10`'s
    assert history == {e: sorted([s, s + 1]) for e, s in seeds.items()}
