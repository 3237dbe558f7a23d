"""Replay bundles (issue 25, part 2): a stub run bundled, the stub stopped, the run made again from the bundle alone."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from stub_server import StubServer

from simulator import api
from simulator.core.errors import UserError
from simulator.storage.store import Store

SENTINEL = "sk-SENTINEL-7f3a9c"
GRID = {"personas": "aloof,unsure", "strategies": "common_interest,no_ask", "max_turns": 2}


@pytest.fixture
def cache_on(monkeypatch, tmp_path):
    monkeypatch.setenv("NEXTSTEP_CACHE", "1")
    monkeypatch.setenv("NEXTSTEP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def asked(stub) -> list[dict]:
    """The requests a run's episodes made: the stub's, less the test call a command makes before it fans out."""
    return [b for b in stub.requests if '"preflight"' not in json.dumps(b)]


def made(records) -> dict:
    """What a run found, by episode id, without how it was asked (latency, whether the cache or the bundle answered,
    and so what the call cost)."""
    asked = {"latency_s", "from_cache", "cost_usd"}
    return {e.id: (e.cell, e.rep, e.status, e.error, [t.model_dump() for t in e.turns], e.outcome, e.fidelity, e.provenance,
                   [v.model_dump(exclude={"calls": {"__all__": asked}}) for v in e.verdicts],
                   [c.model_dump(exclude=asked) for c in e.calls]) for e in records}  # fmt: skip


def test_a_bundled_stub_run_is_made_again_with_no_endpoint_and_no_key(tmp_path, cache_on, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    db, bundle = tmp_path / "n.db", tmp_path / "run.bundle.json.gz"
    stub = StubServer()
    with stub as url:
        run = api.run_batch(GRID, db=db, base_url=url).run_id
        first_verdicts = made(api.load_episodes(run, db=db))
        api.grade([run], db=db, judges=2, seed=5, base_url=url)  # re-graded: the bundle's verdicts are these
        done = api.export_bundle(run, bundle, db=db)
    assert stub.authorizations and all(a == f"Bearer {SENTINEL}" for a in stub.authorizations)  # the key was in use
    original = made(api.load_episodes(run, db=db))
    # every response the records used: all the stub answered but the commands' preflight test call (no episode's)
    assert done == {"episodes": 4, "responses": len({json.dumps(b, sort_keys=True) for b in asked(stub)})}
    text = gzip.decompress(bundle.read_bytes()).decode()
    assert SENTINEL not in text and "Bearer" not in text
    assert all(SENTINEL.encode() not in p.read_bytes() for p in cache_on.iterdir())  # nor is it in the cache

    # No endpoint (the stub is stopped), no key, no response cache: only the bundle can answer.
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("NEXTSTEP_CACHE", "0")
    api.clear_cache()
    replayed = api.run_batch(replay=bundle, db=tmp_path / "again.db")
    assert replayed.run_id == run and replayed.differences == []
    again = made(api.load_episodes(run, db=tmp_path / "again.db"))
    assert again.keys() == original.keys()
    assert {k: v[:-2] + v[-1:] for k, v in again.items()} == {k: v[:-2] + v[-1:] for k, v in original.items()}  # but verdicts
    assert {k: v[-2] for k, v in again.items()} == {k: v[-2] for k, v in first_verdicts.items()}  # the batch's own verdicts
    graded = api.grade([run], db=tmp_path / "again.db", replay=bundle)  # the judges and seeds of the bundle's verdicts
    assert graded["differences"] == [] and made(api.load_episodes(run, db=tmp_path / "again.db")) == original
    with Store(tmp_path / "again.db") as store, Store(db) as made_first:
        settings = store.run(run)["settings"]
        assert settings == made_first.run(run)["settings"] and SENTINEL not in json.dumps(settings)  # as made, not the replay's


def nextstep(*args, **env):
    return subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80", **env})  # fmt: skip


def test_bundles_on_the_command_line(tmp_path, cache_on):
    db, bundle = str(tmp_path / "n.db"), tmp_path / "b.json"
    stub = StubServer()
    with stub as url:
        assert nextstep("batch", "--personas", "aloof", "--max-turns", "1", "--run-id", "r1", "--base-url", url, "--db", db).returncode == 0
    wrote = nextstep("export", "r1", "--bundle", str(bundle), "--db", db)
    assert wrote.returncode == 0 and f"wrote 1 episodes and {len(asked(stub))} responses" in wrote.stdout, wrote.stderr
    again = nextstep("export", "r1", "--bundle", str(bundle), "--db", db)
    assert again.returncode == 2 and again.stderr.strip() == f"nextstep: error: --bundle {bundle}: the file exists; pass --force to replace it"
    assert nextstep("export", "r1", "--bundle", str(bundle), "--db", db, "--force").returncode == 0
    replay = nextstep("batch", "--replay", str(bundle), "--db", str(tmp_path / "r.db"))
    assert replay.returncode == 0 and "every record equals its record" in replay.stdout, replay.stdout + replay.stderr

    bundle.write_text("{}")
    broken = nextstep("batch", "--replay", str(bundle), "--db", str(tmp_path / "x.db"))
    assert broken.returncode == 2 and "not a nextstep bundle" in broken.stderr and "Traceback" not in broken.stderr
    mixed = nextstep("batch", "--replay", str(bundle), "--personas", "aloof", "--db", str(tmp_path / "x.db"))
    assert mixed.returncode == 2 and "--replay makes the bundled run again" in mixed.stderr


def test_a_run_made_without_the_cache_cannot_be_bundled(tmp_path, cache_on, monkeypatch):
    monkeypatch.setenv("NEXTSTEP_CACHE", "0")
    with StubServer() as url:
        run = api.run_batch({"personas": "aloof", "max_turns": 1}, db=tmp_path / "n.db", base_url=url).run_id
    monkeypatch.setenv("NEXTSTEP_CACHE", "1")
    with pytest.raises(UserError, match="calls made without the response cache"):
        api.export_bundle(run, tmp_path / "b.json", db=tmp_path / "n.db")
    assert not (tmp_path / "b.json").exists()


def test_a_response_gone_from_the_cache_is_said_before_anything_is_written(tmp_path, cache_on):
    with StubServer() as url:
        run = api.run_batch({"personas": "aloof", "max_turns": 1}, db=tmp_path / "n.db", base_url=url).run_id
    api.clear_cache()
    with pytest.raises(UserError, match=r"(\d+) of the \1 responses run .* are no longer in the response cache"):
        api.export_bundle(run, tmp_path / "b.json", db=tmp_path / "n.db")
    assert not (tmp_path / "b.json").exists()
