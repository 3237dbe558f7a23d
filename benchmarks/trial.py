"""One measurement in a fresh process, printed as one JSON line; benchmarks/run.py runs these.

A fresh process per measurement keeps peak RSS and the heap of one trial out of the next.

    python benchmarks/trial.py toolkit --url URL --concurrency 64 --grid '{"reps": 4, ...}'
    python benchmarks/trial.py bare --url URL --concurrency 64 --requests requests.jsonl
    python benchmarks/trial.py capture --url URL --grid '{...}'
    python benchmarks/trial.py local-toolkit|local-llama|local-standin --prompts prompts.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measured(wall: float, cpu: float, **counts) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb(), **counts}


async def toolkit(url: str, concurrency: int, grid: dict) -> dict:
    """The whole toolkit: run_grid with graph, evaluator and SQLite store, as a user would call it."""
    from simulator.batch import run_grid

    in_flight = 0

    def on_progress(progress) -> None:
        nonlocal in_flight
        in_flight = max(in_flight, progress.running)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        wall, cpu = time.perf_counter(), time.process_time()  # process_time counts every thread (the store's too)
        await run_grid(grid, db=db, base_url=url, concurrency=concurrency, on_progress=on_progress)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with sqlite3.connect(db) as conn:
            episodes, succeeded = conn.execute("SELECT count(*), sum(status = 'succeeded') FROM episodes").fetchone()
            calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    return measured(wall, cpu, episodes=episodes, succeeded=succeeded, calls=calls, in_flight=in_flight)


def load_requests(path: Path) -> list[list[dict]]:
    """Captured request bodies grouped per episode, in the order each episode sent them."""
    episodes = defaultdict(list)
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            episodes[row["episode"]].append(row["body"])
    return list(episodes.values())


async def bare(url: str, concurrency: int, requests: Path) -> dict:
    """The floor: the same requests through a plain openai client, sequential within an episode."""
    import openai

    episodes = load_requests(requests)
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    limit = asyncio.Semaphore(concurrency)
    in_flight = calls = 0

    async def episode(bodies: list[dict]) -> None:
        nonlocal in_flight, calls
        async with limit:
            in_flight += 1
            for body in bodies:
                response = await client.chat.completions.create(**body)
                assert response.choices[0].message.content
                calls += 1
            in_flight -= 1

    wall, cpu = time.perf_counter(), time.process_time()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(episode(b) for b in episodes))
    watcher.cancel()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return measured(wall, cpu, episodes=len(episodes), succeeded=len(episodes), calls=calls, in_flight=peak)


async def capture(url: str, grid: dict) -> dict:
    """Run the toolkit once, untimed, tagging each request with its episode (the cell seed) for the stub."""
    import openai

    import simulator.batch

    episode = contextvars.ContextVar("episode", default="")
    run_episode = simulator.batch.run_episode

    async def tagged(ctx, **kwargs):
        episode.set(str(ctx.seed))  # the graph's node tasks copy this context
        return await run_episode(ctx, **kwargs)

    headers = openai.AsyncOpenAI.default_headers
    simulator.batch.run_episode = tagged
    openai.AsyncOpenAI.default_headers = property(lambda self: {**headers.fget(self), "x-episode": episode.get()})
    return await toolkit(url, 64, grid)


def prompts_file(path: Path) -> dict:
    return json.loads(path.read_text())


async def local_toolkit(spec: dict, url: str | None = None) -> dict:
    """The embedded model through OpenAIChatModel, against simulator.local.local_server() (or a stub)."""
    import contextlib

    import openai

    from simulator.local import MODEL_NAME, local_server
    from simulator.openai_backend import OpenAIChatModel

    with contextlib.ExitStack() as stack:
        url = url or stack.enter_context(local_server(n_ctx=spec["n_ctx"])).url
        model = OpenAIChatModel(openai.AsyncOpenAI(base_url=url, api_key="local", max_retries=0), MODEL_NAME,
                                output_mode="json_object")  # fmt: skip

        async def generate(messages: list[dict]) -> int:
            completion = await model.complete(messages, max_tokens=spec["max_tokens"], temperature=spec["temperature"],
                                              seed=spec["seed"])  # fmt: skip
            return completion.completion_tokens

        return await timed_generation(spec, generate)


async def local_llama(spec: dict) -> dict:
    """The same GGUF through llama_cpp.Llama in this process: no server, no HTTP."""
    from llama_cpp import Llama

    from simulator.local import model_path

    llm = Llama(model_path=str(model_path()), n_ctx=spec["n_ctx"], n_threads=spec["n_threads"], seed=spec["seed"], verbose=False)

    async def generate(messages: list[dict]) -> int:
        response = llm.create_chat_completion(messages, max_tokens=spec["max_tokens"], temperature=spec["temperature"],
                                              seed=spec["seed"])  # fmt: skip
        return response["usage"]["completion_tokens"]

    return await timed_generation(spec, generate)


async def local_standin(spec: dict) -> dict:
    """Smoke mode only: a fixed pause per prompt stands in for the in-process model."""

    async def generate(messages: list[dict]) -> int:
        await asyncio.sleep(spec["standin_latency"])
        return 10  # what the stub reports

    return await timed_generation(spec, generate)


async def timed_generation(spec: dict, generate) -> dict:
    await generate(spec["prompts"][0])  # warm-up, not timed: first-call set-up on either side
    tokens, wall, cpu = 0, time.perf_counter(), time.process_time()
    for messages in spec["prompts"]:
        tokens += await generate(messages)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return measured(wall, cpu, tokens=tokens, calls=len(spec["prompts"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["toolkit", "bare", "capture", "local-toolkit", "local-llama", "local-standin"])
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--grid", type=json.loads, default={})
    parser.add_argument("--requests", type=Path)
    parser.add_argument("--prompts", type=Path)
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the trial here")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    trial = {
        "toolkit": lambda: toolkit(args.url, args.concurrency, args.grid),
        "bare": lambda: bare(args.url, args.concurrency, args.requests),
        "capture": lambda: capture(args.url, args.grid),
        "local-toolkit": lambda: local_toolkit(prompts_file(args.prompts), args.url),
        "local-llama": lambda: local_llama(prompts_file(args.prompts)),
        "local-standin": lambda: local_standin(prompts_file(args.prompts)),
    }[args.mode]
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            result = asyncio.run(trial())
        profile.dump_stats(args.profile)
    else:
        result = asyncio.run(trial())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
