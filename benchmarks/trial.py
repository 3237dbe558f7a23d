"""One measurement in a fresh process, printed as one JSON line; benchmarks/run.py runs these.

A fresh process per measurement keeps peak RSS and the heap of one trial out of the next.

    python benchmarks/trial.py toolkit --url URL --concurrency 64 --grid '{"reps": 4, ...}'
    python benchmarks/trial.py toolkit-before ...   # the same, with the toolkit as it was before issue 7
    python benchmarks/trial.py bare --url URL --concurrency 64 --requests requests.jsonl [--client create] [--graphs]
    python benchmarks/trial.py capture --url URL --grid '{...}'
    python benchmarks/trial.py local --prompts prompts.json [--url STUB]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import operator
import os
import resource
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypedDict


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measured(wall: float, cpu: float, **counts) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb(), **counts}


async def toolkit(url: str, concurrency: int, grid: dict) -> dict:
    """The whole toolkit: run_grid with graph, evaluator and SQLite store, as a user would call it."""
    imports = time.process_time()
    import evaluations  # noqa: F401  (run_grid imports it lazily: a one-off cost, reported apart like the bare loop's)
    from simulator.runs.batch import run_grid

    imports = time.process_time() - imports

    in_flight = 0

    def on_progress(progress) -> None:
        nonlocal in_flight
        in_flight = max(in_flight, progress.running)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        wall, cpu = time.perf_counter(), time.process_time()  # process_time counts every thread (the store's too)
        # a response cache of its own, empty: every trial asks the endpoint, and pays what a first run pays for the cache
        await run_grid(grid, db=db, base_url=url, concurrency=concurrency, on_progress=on_progress,
                       cache_dir=Path(tmp) / "cache")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with sqlite3.connect(db) as conn:
            episodes, succeeded = conn.execute("SELECT count(*), sum(status = 'succeeded') FROM episodes").fetchone()
            calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    return measured(wall, cpu, episodes=episodes, succeeded=succeeded, calls=calls, in_flight=in_flight, import_cpu_s=imports)


def undo_issue_7() -> None:
    """Put the toolkit back as it was before issue 7, for the 'before' rows (see benchmarks/README.md).

    The client goes back to openai's default httpx2 transport and chat.completions.create(), and the
    caches added for issue 7 (JSON schema per output type, the evaluator's output models, the package
    version) are bypassed.
    """
    import openai

    import evaluations.judge.evaluator as evaluator
    import simulator.conversation.runner
    import simulator.models.backends
    import simulator.models.chat
    from simulator.core.errors import ModelError
    from simulator.core.records import package_version
    from simulator.models.chat import Completion
    from simulator.models.openai_backend import OpenAIChatModel, structured_fields

    async def complete(self, messages, *, schema=None, max_tokens=128, temperature=0.7, seed=None, stop=None):
        extra = structured_fields(schema, self.output_mode) if schema else {}
        if seed is not None:
            extra["seed"] = seed
        if stop:
            extra["stop"] = stop
        start = time.perf_counter()  # no retry loop: nothing fails against the stub
        response = await self.client.chat.completions.create(
            model=self.name, messages=messages, max_tokens=max_tokens, temperature=temperature, **extra
        )
        if not response.choices:
            raise ModelError("the endpoint returned no choices")
        choice, usage = response.choices[0], response.usage
        return Completion(text=(choice.message.content or "").strip(), finish_reason=choice.finish_reason,
                          prompt_tokens=usage.prompt_tokens if usage else 0,
                          completion_tokens=usage.completion_tokens if usage else 0,
                          latency_s=time.perf_counter() - start, model=response.model or self.name)  # fmt: skip

    def httpx2_client(base_url, api_key, timeout=None):
        return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, **({"timeout": timeout} if timeout else {}))

    simulator.models.backends.async_client = httpx2_client
    OpenAIChatModel.complete = complete
    simulator.models.chat.json_schema = lambda output_type: output_type.model_json_schema()
    simulator.conversation.runner.package_version = package_version.__wrapped__
    for name in ("_grades_model", "_flags_model", "_transitions_model"):
        setattr(evaluator, name, getattr(evaluator, name).__wrapped__)


async def toolkit_before(url: str, concurrency: int, grid: dict) -> dict:
    undo_issue_7()
    return await toolkit(url, concurrency, grid)


def plan(rows: list[dict]) -> tuple[list[list[dict]], list[list[list[dict]]]]:
    """One episode's captured requests as the toolkit makes them: its conversation turns (each turn's calls one after
    another), then the judge's stages (the transitions; then its other parts at once: each transition's grades,
    flags, outcome, fidelity, issue 14), each stage a list of parts and each part its calls one after another.

    `plan([{'part': None, 'turn': '0', 'body': 1}, {'part': None, 'turn': '0', 'body': 2}, {'part': 'transitions',
    'body': 3}, {'part': 'flags', 'body': 4}, {'part': 'outcome', 'body': 5}])` -> ([[1, 2]], [[[3]], [[4], [5]]])
    """
    turns, parts = defaultdict(list), defaultdict(list)
    for row in rows:
        (turns[row["turn"]] if row["part"] is None else parts[row["part"]]).append(row["body"])
    found = parts.pop("transitions", [])
    return list(turns.values()), [[found]] + ([list(parts.values())] if parts else [])


def in_sequence(turns: list[list[dict]], judge: list[list[list[dict]]]) -> list[list[list[dict]]]:
    """A `plan` as one list of stages, one after another: each turn (one part), then the judge's."""
    return [[turn] for turn in turns] + judge


def stages(rows: list[dict]) -> list[list[list[dict]]]:
    return in_sequence(*plan(rows))


def load_requests(path: Path) -> list[tuple[list[list[dict]], list[list[list[dict]]]]]:
    """Captured request bodies per episode, as `plan`, in the order the episodes first sent one."""
    episodes = defaultdict(list)
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if row["episode"]:  # untagged: the command's preflight test call, made before any episode
                episodes[row["episode"]].append(row)
    return [plan(rows) for rows in episodes.values()]


class JudgeState(TypedDict, total=False):  # in_graphs' evaluator state: the episode's key, not its bodies
    key: int
    parts: Annotated[list, operator.add]
    verdicts: list


class ConversationState(TypedDict, total=False):  # in_graphs' conversation state
    key: int
    done: Annotated[list, operator.add]
    verdicts: list


def in_graphs(part: Callable[[list[dict]], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """An episode run through LangGraph graphs of the toolkit's shape whose nodes only make its captured calls
    (`part(bodies)`): the conversation (a node per turn, a coroutine route after each, finish, then a node that runs
    the evaluator graph on its own), and the evaluator (a branch to find the transitions, a `Send` per part, the
    verdict). So what it costs over the bare loop is LangGraph's own."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, Send

    plans = {}  # key -> (turns, the transitions' calls, the other parts): the state carries the key, as small as can be

    async def transitions(branch: dict):  # no annotations naming langgraph: imported here, LangGraph reads the hints
        _, found, parts = plans[branch["key"]]
        await part(found)
        return Command(update={"parts": [0]}, goto=[Send("part", branch | {"n": n}) for n in range(len(parts))])

    async def one_part(branch: dict) -> dict:
        await part(plans[branch["key"]][2][branch["n"]])
        return {"parts": [1]}

    async def assign(state: JudgeState) -> list:
        return [Send("transitions", {"key": state["key"]})]

    async def verdict(state: JudgeState) -> dict:
        return {"verdicts": [len(state["parts"])]}

    judge = StateGraph(JudgeState)  # every node and edge a coroutine, as the toolkit's: LangGraph runs a function on a thread
    judge.add_node("transitions", transitions, destinations=("part",))
    judge.add_node("part", one_part)
    judge.add_node("verdict", verdict)
    judge.add_conditional_edges(START, assign, ["transitions"])
    judge.add_edge("part", "verdict")
    judge.add_edge("verdict", END)
    evaluator = judge.compile()

    async def turn(state: ConversationState) -> dict:
        await part(plans[state["key"]][0][len(state.get("done", []))])
        return {"done": [1]}

    async def route(state: ConversationState) -> str:
        return "finish" if len(state["done"]) == len(plans[state["key"]][0]) else "turn"

    async def finish(state: ConversationState) -> dict:
        return {}

    async def evaluate(state: ConversationState) -> dict:
        return {"verdicts": (await evaluator.ainvoke({"key": state["key"]}))["verdicts"]}

    conversation = StateGraph(ConversationState)
    conversation.add_node("turn", turn)
    conversation.add_node("finish", finish)
    conversation.add_node("evaluate", evaluate)
    conversation.add_edge(START, "turn")
    conversation.add_conditional_edges("turn", route, ["turn", "finish"])
    conversation.add_edge("finish", "evaluate")
    conversation.add_edge("evaluate", END)
    graph = conversation.compile()

    async def episode(turns: list[list[dict]], stages: list[list[list[dict]]]) -> None:
        [found], *rest = stages
        key = len(plans)
        plans[key] = turns, found, [calls for stage in rest for calls in stage]
        await graph.ainvoke({"key": key})

    return episode


async def bare(url: str, concurrency: int, requests: Path, client_call: str = "post", graphs: bool = False) -> dict:
    """The floor: the toolkit's captured request bodies through a plain openai client, in the toolkit's order within an
    episode (`plan`: the turns one after another, then the judge's stages, each stage's parts at once).

    'post' sends them as the toolkit does (simulator/openai_backend.py): `client.post("/chat/completions",
    body=..., cast_to=object)` on openai's aiohttp transport. 'create' is the reference: openai's default
    client (httpx2) and its typed `chat.completions.create(**body)`. `graphs` makes the same calls from the nodes of
    LangGraph graphs of the toolkit's shape (`in_graphs`), with the garbage collector set as the toolkit's batches set
    it (`fewer_collections`), so that the toolkit's cost over it is its own work and not a collector setting.
    """
    imports = time.process_time()
    import openai

    if graphs:
        import langgraph.graph  # noqa: F401

        from simulator.runs.collection import fewer_collections  # the toolkit's batches run under it too
    imports = time.process_time() - imports
    episodes = load_requests(requests)
    if client_call == "post":
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, http_client=openai.DefaultAioHttpClient())

        async def send(body: dict) -> str:
            response = await client.post("/chat/completions", body=body, cast_to=object, options={"security": {"bearer_auth": True}})
            return response["choices"][0]["message"]["content"]
    else:
        client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)

        async def send(body: dict) -> str:
            return (await client.chat.completions.create(**body)).choices[0].message.content
    limit = asyncio.Semaphore(concurrency)
    in_flight = calls = 0

    async def part(bodies: list[dict]) -> None:
        nonlocal calls
        for body in bodies:
            assert await send(body)
            calls += 1

    async def in_order(turns: list[list[dict]], stages: list[list[list[dict]]]) -> None:
        for parts in in_sequence(turns, stages):
            await asyncio.gather(*map(part, parts))

    run = in_graphs(part) if graphs else in_order

    async def episode(turns: list[list[dict]], stages: list[list[list[dict]]]) -> None:
        nonlocal in_flight
        async with limit:
            in_flight += 1
            await run(turns, stages)
            in_flight -= 1

    wall, cpu = time.perf_counter(), time.process_time()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    with fewer_collections() if graphs else contextlib.nullcontext():
        await asyncio.gather(*(episode(*e) for e in episodes))
    watcher.cancel()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await client.close()
    return measured(wall, cpu, episodes=len(episodes), succeeded=len(episodes), calls=calls, in_flight=peak, import_cpu_s=imports)


async def capture(url: str, grid: dict) -> dict:
    """Run the toolkit once, untimed, tagging each request with its episode (the cell seed) for the stub."""
    import openai

    import simulator.runs.batch

    episode = contextvars.ContextVar("episode", default="")
    run_episode = simulator.runs.batch.run_episode

    async def tagged(ctx, **kwargs):
        episode.set(str(ctx.seed))  # the graph's node tasks copy this context
        return await run_episode(ctx, **kwargs)

    import simulator.conversation.graph as conversation
    from evaluations.judge.evaluator import Judge

    turn, say = contextvars.ContextVar("turn", default=""), conversation._say

    async def tagged_say(ctx, model, messages, role, n, calls):
        turn.set(str(n))  # the node's task keeps it for the turn's label or rating call that follows
        return await say(ctx, model, messages, role, n, calls)

    part, ask = contextvars.ContextVar("part", default=""), Judge.ask

    async def tagged_ask(self, prompt, output_type, purpose, calls, k, *rest):
        part.set(f"{purpose}{(k - 100) // 10}" if purpose == "transition" else purpose)  # one part per transition graded
        return await ask(self, prompt, output_type, purpose, calls, k, *rest)

    headers = openai.AsyncOpenAI.default_headers
    simulator.runs.batch.run_episode, conversation._say, Judge.ask = tagged, tagged_say, tagged_ask
    tags = {"x-episode": episode, "x-turn": turn, "x-part": part}
    openai.AsyncOpenAI.default_headers = property(
        lambda self: headers.fget(self) | {k: v.get() for k, v in tags.items() if v.get()})
    return await toolkit(url, 64, grid)


def prompts_file(path: Path) -> dict:
    return json.loads(path.read_text())


async def local(spec: dict, url: str | None = None) -> dict:
    """B4: the embedded model through the toolkit vs `xllamacpp.Server` in this process, prompt by prompt.

    The toolkit side is OpenAIChatModel.complete() against simulator.models.local.local_server() (the engine in its
    own process, over HTTP); the in-process side hands the same request to a Server built with the same
    parameters (`simulator.models.engine.params`) through `handle_completions`, no HTTP. The sides take turns per
    prompt, in a rotating order, so drift on a shared machine hits them alike.
    With `url` (smoke mode) the toolkit talks to that stub and a fixed pause stands in for the model.
    """
    import contextlib

    from simulator.models.local import MODEL_NAME, local_server, model_path
    from simulator.models.openai_backend import OpenAIChatModel, async_client

    options = {"max_tokens": spec["max_tokens"], "temperature": spec["temperature"], "seed": spec["seed"]}

    async with contextlib.AsyncExitStack() as stack:
        if url:
            server_url = url

            async def inprocess(messages: list[dict]) -> int:
                await asyncio.sleep(spec["standin_latency"])
                return 10  # what the stub reports
        else:
            import xllamacpp

            from simulator.models.engine import params

            server_url = stack.enter_context(local_server(slots=spec["slots"])).url
            server = xllamacpp.Server(params(str(model_path()), MODEL_NAME, 0, spec["slots"], spec["n_threads"]))

            async def inprocess(messages: list[dict]) -> int:
                body = {"model": MODEL_NAME, "messages": messages, **options}
                response = await asyncio.to_thread(server.handle_chat_completions, body)
                return response["usage"]["completion_tokens"]

        model = OpenAIChatModel(await stack.enter_async_context(async_client(server_url, "local")), MODEL_NAME)

        async def toolkit(messages: list[dict]) -> int:
            return (await model.complete(messages, **options)).completion_tokens

        sides = {"toolkit": toolkit, "inprocess": inprocess}
        totals = {side: {"tokens": 0, "wall_s": 0.0} for side in sides}
        for generate in sides.values():
            await generate(spec["prompts"][0])  # warm-up, not timed: first-call set-up on every side
        names = list(sides)
        for i, messages in enumerate(spec["prompts"]):
            for side in names[i % len(names):] + names[: i % len(names)]:
                start = time.perf_counter()
                totals[side]["tokens"] += await sides[side](messages)
                totals[side]["wall_s"] += time.perf_counter() - start
    return {"wall_s": sum(t["wall_s"] for t in totals.values()), "calls": len(spec["prompts"]), **totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["toolkit", "toolkit-before", "bare", "capture", "local"])
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--grid", type=json.loads, default={})
    parser.add_argument("--requests", type=Path)
    parser.add_argument("--prompts", type=Path)
    parser.add_argument("--client", choices=["post", "create"], default="post",
                        help="bare: post the bodies on aiohttp as the toolkit does, or create() on the default client")
    parser.add_argument("--graphs", action="store_true",
                        help="bare: make the calls from LangGraph graphs of the toolkit's shape whose nodes do nothing else")
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the trial here")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    trial = {
        "toolkit": lambda: toolkit(args.url, args.concurrency, args.grid),
        "toolkit-before": lambda: toolkit_before(args.url, args.concurrency, args.grid),
        "bare": lambda: bare(args.url, args.concurrency, args.requests, args.client, args.graphs),
        "capture": lambda: capture(args.url, args.grid),
        "local": lambda: local(prompts_file(args.prompts), args.url),
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
