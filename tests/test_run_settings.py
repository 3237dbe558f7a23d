"""What a batch runs with: its run id, its configuration sources, the settings stored for --resume, the dry run's bound."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
import yaml
from stub_server import StubServer, completion

from evaluations.judge.rubric import load_rubric
from simulator.core.errors import UserError
from simulator.core.files import data_dir
from simulator.runs.batch import run_grid
from simulator.storage.store import Store

ONE_EPISODE = {"personas": "unsure", "max_turns": 1, "judges": 1}


def nextstep(*args, env=None, cwd=None):
    # the response cache stays as conftest set it (off, in the test's own directory): a resume here means the endpoint
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEXTSTEP_") or k in ("NEXTSTEP_CACHE", "NEXTSTEP_CACHE_DIR")}
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd,
                          env={**clean, "COLUMNS": "250", "PYTHONPATH": os.getcwd(), **(env or {})})  # fmt: skip


def _edit_yaml(path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def test_editing_any_file_a_run_uses_gives_a_new_run_id(tmp_path):
    prompts, personas = tmp_path / "prompts", tmp_path / "personas"
    shutil.copytree(data_dir("prompts"), prompts)
    shutil.copytree(data_dir("personas"), personas)
    edits = {
        "a simulation prompt": lambda: (prompts / "persona_state.j2").write_text((prompts / "persona_state.j2").read_text() + "\nBe exact."),
        "an evaluator prompt": lambda: (prompts / "evaluator_flags.j2").write_text((prompts / "evaluator_flags.j2").read_text() + "\nBe exact."),
        "the rubric": lambda: _edit_yaml(prompts / "rubric.yaml", lambda r: r["conditions"]["timing"].update(description="Edited.")),
        "a persona file": lambda: _edit_yaml(personas / "unsure.yaml", lambda p: p.update(temperament="Edited.")),
        "a setting": lambda: _edit_yaml(prompts / "settings.yaml", lambda s: s["supermarket"].update(moment="Edited.")),
        "a strategy": lambda: _edit_yaml(prompts / "strategies.yaml", lambda s: s["common_interest"].update(instructions="Edited.")),
    }  # fmt: skip
    db = tmp_path / "n.db"
    with StubServer() as url:
        run = lambda: run_grid(ONE_EPISODE, db=db, base_url=url, prompts_dir=prompts, personas_dir=personas)  # noqa: E731
        ids = {"unedited": await run()}
        assert await run() == ids["unedited"]  # nothing edited: the same run, resumed
        for kind, edit in edits.items():
            edit()
            ids[kind] = await run()
            assert ids[kind] not in list(ids.values())[:-1], f"editing {kind} kept the run id"


def test_batch_takes_max_turns_and_temperature_from_flags_then_environment_then_config_file(tmp_path):
    def plan(*args, env=None):
        result = nextstep("batch", "--dry-run", "--db", str(tmp_path / "n.db"), *args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return re.search(r"max_turns (\d+) · temperature ([\d.]+)", result.stdout).groups()

    assert plan() == ("3", "0.7")  # batch's defaults, as --help says
    (tmp_path / "nextstep.toml").write_text("max_turns = 4\ntemperature = 0.2\n")
    assert plan() == ("4", "0.2")
    assert plan(env={"NEXTSTEP_MAX_TURNS": "5", "NEXTSTEP_TEMPERATURE": "0.4"}) == ("5", "0.4")
    (tmp_path / "exp.yaml").write_text("max_turns: 6\n")
    assert plan("--experiment", "exp.yaml", env={"NEXTSTEP_MAX_TURNS": "5"}) == ("6", "0.2")  # the named file beats both
    assert plan("--experiment", "exp.yaml", "--max-turns", "2", "--temperature", "1.1", env={"NEXTSTEP_MAX_TURNS": "5"}) == ("2", "1.1")


def test_batch_runs_with_the_environment_and_config_file_and_its_rubric(tmp_path):
    (tmp_path / "nextstep.toml").write_text("temperature = 0.3\n")
    rubric = tmp_path / "my_rubric.yaml"
    shutil.copy(data_dir("prompts") / "rubric.yaml", rubric)
    _edit_yaml(rubric, lambda r: r["conditions"]["timing"].update(description="Asks when interest peaks."))
    db = tmp_path / "n.db"
    with StubServer() as url:
        result = nextstep("batch", "--personas", "unsure", "--run-id", "r", "--rubric", str(rubric), "--base-url", url,
                          "--db", str(db), env={"NEXTSTEP_MAX_TURNS": "2"}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Store(db) as store:
        spec, [episode] = store.run("r")["spec"], store.episodes("r")
    assert (spec.experiment["max_turns"], spec.experiment["temperature"]) == (2, 0.3)
    assert (episode.provenance.max_turns, episode.provenance.temperature) == (2, 0.3)
    assert spec.rubric_hash == load_rubric(rubric)[1] != load_rubric()[1]
    assert episode.verdicts[0].rubric_hash == load_rubric(rubric)[1]


def test_help_shows_the_true_defaults(tmp_path):
    # help is laid out for 80 columns, so a default may wrap: read it as words
    batch_help, run_help = (" ".join(nextstep(command, "--help").stdout.split()) for command in ("batch", "run"))
    assert "[default: 3;" in batch_help and "[default: 0.7]" in batch_help and "[default: supermarket]" in batch_help
    assert "[default: 8;" in run_help and "[default: 0.7]" in run_help
    with StubServer() as url:
        result = nextstep("run", "--judges", "0", "--base-url", url, "--out", str(tmp_path), "--db", str(tmp_path / "n.db"))
    assert result.returncode == 0, result.stderr
    [episode] = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert episode["provenance"]["max_turns"] == 8 and episode["provenance"]["temperature"] == 0.7


def test_resume_needs_only_the_run_id(tmp_path):
    prompts = tmp_path / "my_prompts"
    prompts.mkdir()
    marker = "Mention the weather once."
    (prompts / "practitioner.j2").write_text((data_dir("prompts") / "practitioner.j2").read_text() + f"\n{marker}")
    failing = {"on": True}

    def fault(n, body):  # while on, the aloof persona's calls fail (400: not retried), so its episode fails
        if failing["on"] and "a little cool" in json.dumps(body):
            return 400, {}, {"error": {"message": "scripted failure"}}
        return None

    db = tmp_path / "n.db"
    stub = StubServer(fault=fault)
    secret = {"MY_KEY": "sk-not-to-be-stored"}
    with stub as url:
        first = nextstep("batch", "--personas", "aloof,unsure", "--max-turns", "1", "--base-url", url, "--model", "m-main",
                         "--persona-model", "m-persona", "--evaluator-model", "m-judge", "--output-mode", "json_object",
                         "--prompts-dir", str(prompts), "--api-key-env", "MY_KEY", "--concurrency", "2", "--db", str(db),
                         env=secret, cwd=tmp_path)  # fmt: skip
        assert first.returncode == 0, first.stderr
        found = re.search(r"retry the failed episodes and grade the ungraded ones with: (nextstep batch .*)", first.stdout)
        assert found, first.stdout
        command = found.group(1).split()
        assert command[2:] == ["--resume", command[3], "--db", str(db)]  # nothing else is needed
        failing["on"], seen = False, len(stub.requests)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        resumed = nextstep(*command[1:], env=secret, cwd=elsewhere)
        assert resumed.returncode == 0, resumed.stderr
    later = stub.requests[seen:]
    assert later, "the resumed run sent nothing"
    assert {r["model"] for r in later} == {"m-main", "m-persona", "m-judge"}
    assert all(r["response_format"]["type"] == "json_object" for r in later if "response_format" in r)
    assert any(marker in m["content"] for r in later for m in r["messages"])  # the run's own prompt directory
    # the run's endpoint, and no key: which variable holds the key is the user's to say, never the database's (test_hostile)
    assert set(stub.authorizations[seen:]) == {"Bearer none"} and url in resumed.stderr
    with Store(db) as store:
        run = store.run(command[3])
        assert run["counts"] == {"succeeded": 2}
    assert "api_key_env" not in run["settings"] and run["settings"]["concurrency"] == 2
    assert not any(b"sk-not-to-be-stored" in f.read_bytes() for f in tmp_path.glob("n.db*"))


async def test_a_run_stored_without_settings_still_resumes(tmp_path):
    db = tmp_path / "n.db"
    with StubServer() as url:
        run_id = await run_grid(ONE_EPISODE, db=db, base_url=url, run_id="old")
        with Store(db) as store:  # as an older nextstep stored it: no settings, no evaluator prompts in the spec
            spec = store.run(run_id)["spec"].identity()
            spec["prompts"] = {k: v for k, v in spec["prompts"].items() if not k.startswith("evaluator")}
            store.conn.execute("UPDATE runs SET spec_json = ? WHERE id = ?", (json.dumps(spec), run_id))
            store.conn.execute("DELETE FROM episodes")
            assert store.run(run_id)["settings"] is None
        assert await run_grid(db=db, resume=run_id, base_url=url) == run_id
    with Store(db) as store:
        assert store.run(run_id)["counts"] == {"succeeded": 1}


def _forcing_every_path(reasks: int):
    """A stub hook that makes an episode take every call the bound counts: each line empty `reasks` times, each structured
    answer invalid `reasks` times, every piece of evidence (conditions, flags, outcome) rejected until the judge's re-asks
    run out; the practitioner asks, says goodbye (a strategy with a parting line then gets one more round), asks again."""
    plain: dict[str, int] = {}
    evidence = {"sentence": "99.1", "reason": "Cited."}  # no such sentence: rejected every time

    def hook(n, body):
        fmt = body.get("response_format")
        if not fmt:
            key = json.dumps(body["messages"])
            plain[key] = plain.get(key, 0) + 1
            return (200, {}, completion(body, "")) if plain[key] <= reasks else None
        if sum("That answer was invalid" in m["content"] for m in body["messages"]) < reasks:
            return 200, {}, completion(body, "not json")
        name, prompt = fmt["json_schema"]["name"], body["messages"][0]["content"]
        if name == "practitioner_intent":  # by how many lines the practitioner said before this one
            value = {"intent": ("ask", "goodbye", "ask")[min(prompt.count("\nMe: ") + prompt.startswith("Me: "), 2)]}
        elif name == "persona_state":
            value = {"interest": 5, "comfort": 5, "intent": "chat"}
        elif name == "transition_turns":
            value = {"turns": []}
        elif name == "transition_grades":
            value = {c: evidence | {"score": 3} for c in fmt["json_schema"]["schema"]["properties"]}
        elif name == "flags":
            value = {"flags": [evidence | {"flag": "rude"}]}
        else:
            value = {"exchanged": "none", "next_meeting": False} | evidence  # cites a sentence though nothing was given
        return 200, {}, completion(body, json.dumps(value))

    return hook


def test_dry_run_bound_holds_when_every_path_is_forced(tmp_path):
    """Issue 22 item 3. Counted by hand, with 3 attempts a call (reasks 2): turn_back rounds are ask, goodbye, then its
    parting line (an ask): 3 rounds x 4 calls x 3 = 36; no_ask ends at the limit: 2 x 4 x 3 = 24. A judge: 3 to find the
    transitions, 3 x 3 per transition (turn_back: turns 0 and 4, two; no_ask: one), 3 x 3 flags, 3 x 3 outcome: 39 and 30.
    With 2 judges: 36 + 78 + 24 + 60 = 198."""
    grid = ["--personas", "unsure", "--strategies", "turn_back,no_ask", "--max-turns", "2", "--judges", "2",
            "--db", str(tmp_path / "n.db")]  # fmt: skip
    dry = nextstep("batch", "--dry-run", *grid)
    assert dry.returncode == 0, dry.stderr
    bound = int(re.search(r"at most ([\d,]+) LLM calls", dry.stdout).group(1).replace(",", ""))
    stub = StubServer(fault=_forcing_every_path(2))
    with stub as url:
        result = nextstep("batch", *grid, "--run-id", "r", "--base-url", url)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "n.db") as conn:
        stored = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        rounds = dict(conn.execute("SELECT strategy, n_turns / 2 FROM episodes").fetchall())
    assert rounds == {"turn_back": 3, "no_ask": 2}  # the parting round happened
    assert stored + 1 == len(stub.requests) == 199  # one model: one test call before the episodes, not an episode's call
    assert bound == 199  # an upper bound, and reached: the test takes every path the bound counts (the test call too)
