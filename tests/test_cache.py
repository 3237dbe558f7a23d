"""The response cache (issue 25, part 1), against stub endpoints that count requests."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import signal
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
from stub_server import StubServer, answer, completion, instance
from test_batch import _stored

from simulator.core.records import Episode
from simulator.models.cache import ResponseCache, request_key
from simulator.models.chat import Completion
from simulator.runs.batch import run_grid
from simulator.runs.grading import regrade
from simulator.conversation.catalog import load_catalog
from simulator.models.config import load_config
from simulator.storage.store import Store

GRID = {"personas": "aloof,unsure", "max_turns": 2}


@pytest.fixture
def cache_on(monkeypatch, tmp_path):
    """The cache turned on as a user has it (by default), in a directory of this test's own."""
    monkeypatch.setenv("NEXTSTEP_CACHE", "1")
    monkeypatch.setenv("NEXTSTEP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def drifting(n: int, body: dict):
    """A stub that never answers the same request the same way twice (the request number is in every answer), so
    records that come out equal were served from the cache, not asked again."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
    text = json.dumps(instance(schema, random.Random(n))) if schema else f"{answer(body)[:-1]} #{n}."
    return 200, {}, completion(body, text)


def outcomes(records: list[Episode]) -> list:
    """What a run found, without how it was asked (latency, whether the cache answered, so what it cost: a hit is $0)."""
    strip = {"latency_s", "from_cache", "cost_usd"}
    return [(e.cell, e.rep, e.status, [t.model_dump() for t in e.turns], e.outcome, e.fidelity,
             [v.model_dump(exclude={"calls": {"__all__": strip}}) for v in e.verdicts],
             [c.model_dump(exclude=strip) for c in e.calls]) for e in records]  # fmt: skip


async def test_the_same_batch_into_a_new_database_asks_nothing_and_stores_the_same_records(tmp_path, cache_on):
    stub = StubServer(fault=drifting)
    with stub as url:
        first = await run_grid(GRID, db=tmp_path / "a.db", base_url=url)
        asked = len(stub.requests)
        second = await run_grid(GRID, db=tmp_path / "b.db", base_url=url)
    assert asked > 2 and len(stub.requests) == asked  # the second batch asked nothing (its test call was cached too)
    asked -= 1  # the model's test call before the episodes: counted by the session, stored with no episode
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        before, after = a.episodes(first), b.episodes(second)
        runs_a, runs_b = a.runs()[0], b.runs()[0]
        flags = [tuple(r) for r in b.conn.execute("SELECT DISTINCT from_cache FROM calls")]
    assert sum(len(e.all_calls()) for e in before) == asked
    assert first == second and outcomes(after) == outcomes(before)
    assert all(c.from_cache for e in after for c in e.all_calls()) and not any(c.from_cache for e in before for c in e.all_calls())
    assert flags == [(1,)]
    # the stub reports 50 prompt + 10 completion tokens a call: spent the first time, saved the second
    assert (runs_a["tokens"], runs_a["saved_tokens"]) == (asked * 60, 0)
    assert (runs_b["tokens"], runs_b["saved_tokens"]) == (0, asked * 60)
    assert sum(e.usage.cache_hits for e in after) == asked and sum(e.usage.saved_prompt_tokens for e in after) == asked * 50


async def test_grading_a_run_twice_asks_the_endpoint_once(tmp_path, cache_on):
    db = tmp_path / "n.db"
    with StubServer() as url:
        run_id = await run_grid({**GRID, "judges": 0}, db=db, base_url=url)
    catalog = load_catalog()
    # The same grading in a second copy of the run: `grade` itself keeps verdicts its panel already gave (issue 24), so
    # the copy, ungraded, is what shows the cache answering a grading it has seen.
    shutil.copy(db, tmp_path / "copy.db")
    stub = StubServer(fault=drifting)
    with stub as url:
        config = load_config(base_url=url)
        first = (await regrade([run_id], config, catalog, db=db, judges=2)).verdicts
        asked = len(stub.requests)
        second = (await regrade([run_id], config, catalog, db=tmp_path / "copy.db", judges=2)).verdicts
    assert asked == sum(len(v.calls) for vs in first for v in vs) + 1 > 1 and len(stub.requests) == asked  # the second time none
    # (+ 1: the evaluator model's test call, asked the first time, answered from the cache the second)
    assert all(c.from_cache for vs in second for v in vs for c in v.calls)
    strip = {"calls": {"__all__": {"latency_s", "from_cache", "cost_usd"}}}  # a hit costs $0
    assert [[v.model_dump(exclude=strip) for v in vs] for vs in second] == [[v.model_dump(exclude=strip) for v in vs] for vs in first]


def test_a_resume_after_sigkill_asks_again_only_what_never_completed(tmp_path, cache_on):
    """Killed mid-batch, then resumed: the only requests asked twice are those in flight at the kill (one per episode
    in flight, as there are no judges), and together the two sessions ask exactly what one whole run asks."""
    grid = ["--personas", "all", "--strategies", "all", "--max-turns", "4", "--judges", "0", "--seed", "3"]
    common = ["--concurrency", "2", "--run-id", "crash"]
    keys = lambda requests: [json.dumps(b, sort_keys=True) for b in requests]  # noqa: E731
    stub = StubServer(latency=0.005)
    with stub as url:
        db = tmp_path / "n.db"
        proc = subprocess.Popen([sys.executable, "-m", "simulator", "batch", *grid, *common, "--base-url", url, "--db", str(db)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while _stored(db) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(random.uniform(0.02, 0.06))  # somewhere inside the next episodes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stored_at_kill, killed = _stored(db), keys(stub.requests)
        stub.requests.clear()
        resumed = subprocess.run([sys.executable, "-m", "simulator", "batch", "--resume", "crash", "--db", str(db)],
                                 capture_output=True, text=True)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        again = keys(stub.requests)
    assert 5 <= stored_at_kill < 21  # the kill came mid-batch
    reference = StubServer(latency=0)
    with reference as url:
        subprocess.run([sys.executable, "-m", "simulator", "batch", *grid, "--base-url", url, "--db", str(tmp_path / "ref.db"),
                        "--no-cache"], check=True, capture_output=True)  # fmt: skip
    whole = keys(reference.requests)
    twice = set(killed) & set(again)
    assert len(again) == len(set(again)) and len(twice) <= 2, len(twice)
    assert set(killed) | set(again) == set(whole) and len(killed) + len(again) - len(twice) == len(whole)
    assert _stored(db) == 21


async def test_any_change_to_prompt_model_parameter_or_seed_misses(tmp_path, cache_on):
    stub = StubServer()
    with stub as url:
        await run_grid(GRID, db=tmp_path / "n.db", base_url=url)
        assert stub.requests
        prompts = tmp_path / "prompts"
        prompts.mkdir()
        shipped = load_catalog().prompt_dirs[-1] / "practitioner.j2"
        (prompts / "practitioner.j2").write_text(shipped.read_text() + "\nBe brief.")
        changes = [{"grid": {"seed": 1}}, {"grid": {"temperature": 0.5}}, {"flags": {"model": "other"}},
                   {"flags": {"prompts_dir": prompts}}]  # fmt: skip
        for n, change in enumerate(changes):
            before = len(stub.requests)
            run_id = await run_grid(GRID | change.get("grid", {}), db=tmp_path / f"{n}.db", base_url=url, **change.get("flags", {}))
            with Store(tmp_path / f"{n}.db") as store:
                calls = [c for e in store.episodes(run_id) for c in e.all_calls()]
            tested = 1 if "model" in change.get("flags", {}) else 0  # a new model gets its own test call
            assert len(stub.requests) - before == len(calls) + tested and not any(c.from_cache for c in calls), change
        before = len(stub.requests)
        await run_grid(GRID, db=tmp_path / "same.db", base_url=url)
    assert len(stub.requests) == before  # ... and the unchanged grid still hits


def test_request_keys_differ_in_every_field_and_hold_no_secret():
    base = dict(schema=None, max_tokens=64, temperature=0.7, seed=1, stop=["\n"])
    msgs = [{"role": "user", "content": "hi"}]
    keys = [request_key("http://h/v1", "m", "json_schema", msgs, **base),
            request_key("http://other/v1", "m", "json_schema", msgs, **base),
            request_key("http://h/v1", "m2", "json_schema", msgs, **base),
            request_key("http://h/v1", "m", "json_schema", [{"role": "user", "content": "hi!"}], **base),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"max_tokens": 65}),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"temperature": 0.0}),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"seed": 2}),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"stop": None}),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"top_p": 0.9}),
            request_key("http://h/v1", "m", "json_schema", msgs, **base | {"schema": {"type": "object"}}),
            request_key("http://h/v1", "m", "json_object", msgs, **base | {"schema": {"type": "object"}})]  # fmt: skip
    assert len(set(keys)) == len(keys)
    # without a schema the output mode decides nothing, so it is no part of the key
    assert request_key("http://h/v1", "m", "json_object", msgs, **base) == keys[0]


def test_request_keys_stay_what_json_makes_them():
    """The key is made by orjson where it writes json's bytes (issue 28): every key stays what the json module makes,
    so caches and replay bundles made before still answer."""
    msgs = [{"role": "system", "content": "Café — «quoted» \"x\" \\ \n\t\x01 😀"}, {"role": "user", "content": "hi"}]
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2]}}}
    # made by the code before the change (json.dumps), by hand
    assert request_key("http://h/v1", "m", "json_schema", msgs, schema=schema, max_tokens=64, temperature=0.7, seed=3,
                       stop=["\n"]) == "93761d6e0b58e8d472d320f24df06cb0041d64898799f693d2f54bd65c24938b"  # fmt: skip

    def by_json(messages, temperature, schema=None, top_p=None):
        request = {"endpoint": "e", "model": "m", "messages": messages, "max_tokens": 8, "temperature": temperature,
                   "top_p": top_p, "stop": None, "seed": None, "constraint": schema and {"schema": schema, "mode": "json_schema"}}
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()

    # where orjson writes other bytes (exponents, small floats, NaN, keys that are not strings), and texts that look so
    odd = [(msgs, 1e-07, None, None), (msgs, 5e-05, None, 1e-05), (msgs, float("nan"), None, None), (msgs, 1e16, None, None),
           (msgs, 0.0001, None, 9.9e15), ([{"role": "user", "content": None}, {"role": "user", "content": [1e-7]}], 0.7, None, None),
           (msgs, 0.7, {1: "int key"}, None), ([{"role": "user", "content": 'say ,1e5 and :0.00001 or [2E-3'}], 0.0, None, 1.0)]
    for messages, temperature, schema, top_p in odd:
        assert request_key("e", "m", "json_schema", messages, schema=schema, max_tokens=8, temperature=temperature, seed=None,
                           stop=None, top_p=top_p) == by_json(messages, temperature, schema, top_p)  # fmt: skip


def test_no_output_schema_holds_a_float():
    """What lets request keys be made by orjson: a request's floats are its sampling parameters (simulator/models/cache.py
    `canonical_json`), so no JSON schema a call sends may hold one."""
    from evaluations.judge import evaluator
    from evaluations.judge.rubric import CONDITIONS, FLAGS
    from simulator.conversation.episode import PersonaState, PractitionerLabel
    from simulator.models.chat import json_schema

    def floats(value) -> list:
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return [value] if isinstance(value, float) else []

    types = [PractitionerLabel, PersonaState, evaluator._grades_model(tuple(CONDITIONS)), evaluator._flags_model(tuple(FLAGS)),
             evaluator._transitions_model((0, 2)), evaluator._transitions_model(()), evaluator._outcome_model(), evaluator._Fidelity]
    for output_type in types:
        assert floats(json_schema(output_type)) == [], output_type.__name__

def test_the_endpoint_identity_carries_no_credential():
    from simulator.models.backends import endpoint_identity

    assert endpoint_identity("openai-compatible", "http://me:sk-SENTINEL@h:8000/v1/?key=sk-SENTINEL#x") == "http://h:8000/v1"
    assert endpoint_identity("openai", None) == "https://api.openai.com/v1"
    assert endpoint_identity("local", "http://127.0.0.1:43123/v1").startswith("local:SmolLM2")  # no port: a new one each time


async def test_with_the_cache_off_every_call_reaches_the_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTSTEP_CACHE_DIR", str(tmp_path / "cache"))
    stub = StubServer()
    with stub as url:
        monkeypatch.setenv("NEXTSTEP_CACHE", "1")
        await run_grid(GRID, db=tmp_path / "a.db", base_url=url)
        whole = len(stub.requests)
        await run_grid(GRID, db=tmp_path / "b.db", base_url=url, cache=False)  # --no-cache
        monkeypatch.setenv("NEXTSTEP_CACHE", "0")
        await run_grid(GRID, db=tmp_path / "c.db", base_url=url)
    assert whole > 0 and len(stub.requests) == 3 * whole
    with Store(tmp_path / "c.db") as store:
        # every call the episodes made (a run's requests are those and the model's one test call, stored with none)
        assert tuple(store.conn.execute("SELECT count(*), sum(from_cache) FROM calls").fetchone()) == (whole - 1, 0)


def test_the_cli_flags_turn_the_cache_on_and_off_and_move_it(tmp_path):
    stub = StubServer()
    run = lambda *args: subprocess.run([sys.executable, "-m", "simulator", "batch", "--personas", "aloof", "--max-turns", "1",  # noqa: E731
                                        "--judges", "0", "--base-url", url, *args], capture_output=True, text=True)
    with stub as url:
        cache = tmp_path / "moved"
        assert run("--cache", "--cache-dir", str(cache), "--db", str(tmp_path / "a.db")).returncode == 0
        assert len(stub.requests) == 5 and (cache / "responses.db").is_file()  # 4 and the model's test call
        hit = run("--cache", "--cache-dir", str(cache), "--db", str(tmp_path / "b.db"))
        assert len(stub.requests) == 5 and "5 cached calls" in hit.stdout, hit.stdout
        run("--no-cache", "--cache-dir", str(cache), "--db", str(tmp_path / "c.db"))
        assert len(stub.requests) == 10
    info = subprocess.run([sys.executable, "-m", "simulator", "cache", "info", "--cache-dir", str(cache)], capture_output=True, text=True)
    assert "entries: 5" in info.stdout and str(cache / "responses.db") in info.stdout.replace("\n", "")
    cleared = subprocess.run([sys.executable, "-m", "simulator", "cache", "clear", "--cache-dir", str(cache)], capture_output=True, text=True)
    assert "removed 5 responses" in cleared.stdout
    with sqlite3.connect(cache / "responses.db") as conn:
        assert conn.execute("SELECT count(*) FROM responses").fetchone() == (0,)
    (tmp_path / "a-file").write_text("")
    with StubServer() as url:
        bad = run("--cache", "--cache-dir", str(tmp_path / "a-file"), "--db", str(tmp_path / "d.db"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"nextstep: error: --cache-dir {tmp_path / 'a-file'}: not a directory"


async def test_a_damaged_cache_is_reported_once_and_bypassed(tmp_path, cache_on, caplog):
    cache_on.mkdir()
    (cache_on / "responses.db").write_bytes(b"this is not a database" * 100)
    stub = StubServer()
    with stub as url, caplog.at_level(logging.WARNING, logger="simulator.models.cache"):
        run_id = await run_grid(GRID, db=tmp_path / "n.db", base_url=url)
    warnings = [r for r in caplog.records if r.name == "simulator.models.cache"]
    assert len(warnings) == 1 and "responses.db is unusable" in warnings[0].getMessage()
    with Store(tmp_path / "n.db") as store:
        records = store.episodes(run_id)
    assert {e.status for e in records} == {"succeeded"}
    assert len(stub.requests) == sum(len(e.all_calls()) for e in records) + 1  # every call went to the endpoint (+ the test call)
    cleared = subprocess.run([sys.executable, "-m", "simulator", "cache", "clear"], capture_output=True, text=True)
    assert "removed a damaged cache" in cleared.stdout and not (cache_on / "responses.db").exists()


def test_a_damaged_entry_is_a_miss(tmp_path, caplog):
    cache = ResponseCache.open(tmp_path)
    cache.put("k", Completion(text="hello", prompt_tokens=3))
    assert cache.get("k").text == "hello"
    cache.conn.execute("UPDATE responses SET response = '{\"oops\": 1}'")
    with caplog.at_level(logging.WARNING):
        assert cache.get("k") is None and cache.get("k") is None
    assert len(caplog.records) == 1 and cache.broken is None


def test_expired_entries_are_misses(tmp_path):
    cache = ResponseCache.open(tmp_path, expiry_s=3600)
    cache.put("old", Completion(text="a"))
    cache.put("new", Completion(text="b"))
    cache.conn.execute("UPDATE responses SET created = created - 7200 WHERE key = 'old'")
    assert cache.get("old") is None and cache.get("new").text == "b"


def test_the_cache_stays_within_its_bound_and_drops_the_least_recently_used(tmp_path):
    bound = 256 * 1024
    cache = ResponseCache.open(tmp_path, max_bytes=bound)
    text = "x" * 1000  # 3000 entries of about 1.1 kB: about 13 times the bound
    for n in range(3000):
        cache.put(f"k{n}", Completion(text=text))
        if n == 100:
            cache.conn.execute("UPDATE responses SET used = used + 1e6 WHERE key = 'k0'")  # k0 was just used again
    assert cache.used_bytes() <= bound  # checked after every 2% of the bound written
    entries = cache.conn.execute("SELECT count(*) FROM responses").fetchone()[0]
    assert 100 < entries < 256  # the bound holds at most 256 such entries on 1 kB of text each
    assert cache.get("k2999") is not None and cache.get("k1") is None and cache.get("k0") is not None


def _writer(directory: str, start: int) -> None:
    cache = ResponseCache.open(directory)
    for n in range(start, start + 300):
        cache.put(f"k{n}", Completion(text=f"answer {n}"))
    assert cache.broken is None
    cache.close()


def test_many_processes_write_one_cache_at_once(tmp_path):
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(str(tmp_path), 300 * i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = ResponseCache.open(tmp_path)
    assert cache.conn.execute("SELECT count(*) FROM responses").fetchone() == (1200,)
    assert cache.get("k1199").text == "answer 1199"


def test_old_databases_gain_the_from_cache_column(tmp_path):
    db = tmp_path / "old.db"
    with Store(db):
        pass
    with sqlite3.connect(db) as conn:  # as made before the response cache
        conn.execute("ALTER TABLE calls DROP COLUMN from_cache")
    with Store(db) as store:
        assert "from_cache" in {row[1] for row in store.conn.execute("PRAGMA table_info(calls)")}


def test_runs_shows_tokens_spent_and_saved_with_ids_whole_at_80_columns(tmp_path):
    from simulator.core.records import RunSpec

    db = tmp_path / "n.db"
    long_id = "run-named-by-hand-0123456789abcdef"
    with Store(db) as store:
        store.create_run(long_id, RunSpec(play={}))
    listing = subprocess.run([sys.executable, "-m", "simulator", "runs", "--db", str(db)], capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert listing.returncode == 0 and long_id in listing.stdout, listing.stdout
    assert "spent" in listing.stdout and "saved" in listing.stdout
    assert max(map(len, listing.stdout.splitlines())) <= 80
