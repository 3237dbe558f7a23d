"""Run one episode through the graph and turn its final state into a self-contained record."""

from __future__ import annotations

import datetime as dt
import functools
import time
import uuid
from collections.abc import Callable

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from simulator.core.records import Episode, Provenance, Turn, package_version, usage
from simulator.core.redact import redact

from .catalog import entry_hash
from .graph import Context, Scenario, build_graph, then
from .prompts import SIMULATION_PROMPTS


_SAVER = InMemorySaver()


@functools.lru_cache(maxsize=None)
def graph(evaluator=None):
    """The compiled graph, built once per process and evaluator subgraph: episodes differ only in their Context."""
    return build_graph(evaluator=evaluator)


@functools.lru_cache(maxsize=None)
def checkpointed_graph(evaluator=None):
    """The graph with LangGraph's in-process checkpointer: what forking from a prefix and pausing for a person need.

    In memory, not on disk: a fork point is rebuilt from the stored turns, and the store stays the one place results live.
    One checkpointer for every evaluator, so a fork point set up without one continues with one.
    """
    return build_graph(_SAVER, evaluator)


async def fork_point(prefix: list[Turn], thread: str) -> dict:
    """A checkpoint whose state is `prefix`, as if its last speaker had just spoken; continuations fork from its config.

    `prefix` must be a stored episode's first turns (at least one), kept as they are, private states included.
    """
    values = {"turns": [t.model_dump() for t in prefix], "calls": [], "end": None, "error": None}
    after = "persona" if prefix[-1].speaker == "practitioner" else "practitioner"
    return await checkpointed_graph().aupdate_state({"configurable": {"thread_id": thread}}, then(values, after),
                                                    as_node=prefix[-1].speaker)


def provenance(ctx: Context, backend: str) -> Provenance:
    s, catalog = ctx.scenario, ctx.catalog
    prompts = {name: ctx.prompts.hash(name) for name in SIMULATION_PROMPTS}
    return Provenance(
        backend=backend,
        models={"practitioner": ctx.practitioner.name, "persona": ctx.persona.name},
        temperature=ctx.temperature,
        seed=ctx.seed,
        max_turns=ctx.max_turns,
        reasks=ctx.reasks,
        prompts=prompts,
        prompt_texts={prompts[name]: ctx.prompts.source(name) for name in prompts},
        catalog={
            f"setting/{s.setting}": entry_hash(catalog.settings[s.setting]),
            f"persona/{s.persona}": entry_hash(catalog.personas[s.persona]),
            f"strategy/{s.strategy}": entry_hash(catalog.strategies[s.strategy]),
        },
        version=package_version(),
    )


def crashed_episode(scenario: Scenario, seed: int, error: BaseException) -> Episode:
    """The record of an episode that raised instead of ending: stored as failed, with the error, and nothing else."""
    s = scenario
    return Episode(id=uuid.uuid4().hex[:12], setting=s.setting, persona=s.persona, strategy=s.strategy, profile=s.profile,
                   seed=seed, status="failed", error=redact(f"{type(error).__name__}: {error}"), usage=usage([]), duration_s=0.0)


async def _drive(app, start, config: dict, on_turn, answer, seen: int) -> dict:
    """Stream the graph to its end; where it pauses for a person, `answer(request)` gives the value it resumes with."""
    state, asked = {}, None
    while True:
        async for chunk in app.astream(start, config, stream_mode="values"):
            if "__interrupt__" in chunk:  # the pause itself, not a state
                continue
            state = chunk
            for turn in state.get("turns", [])[seen:]:
                if on_turn:
                    on_turn(Turn.model_validate(turn))
            seen = len(state.get("turns", []))
        paused = (await app.aget_state(config)).interrupts if answer else ()
        if not paused:
            return state
        if paused[0].id == asked:
            raise RuntimeError(f"the graph did not take the answer to {paused[0].value}")  # rather than ask forever
        asked = paused[0].id
        start, config = Command(resume=answer(paused[0].value)), {**config, "configurable": {
            k: v for k, v in config["configurable"].items() if k != "checkpoint_id"}}  # resume the thread where it paused


async def run_episode(ctx: Context, *, backend: str, episode_id: str | None = None,
                      on_turn: Callable[[Turn], None] | None = None, fork: dict | None = None,
                      answer: Callable[[dict], object] | None = None) -> Episode:
    """Simulate one episode; a model failure ends it as 'failed' ('ungraded' if only a judge's endpoint failed), never raised.

    `fork`: a `fork_point` config; the episode continues that prefix instead of starting afresh (its calls are only the new
    ones). `answer`: where a person plays a role (`ctx.person`), called with each request for their turn.
    """
    s = ctx.scenario
    record = {
        "id": episode_id or uuid.uuid4().hex[:12],
        "setting": s.setting, "persona": s.persona, "strategy": s.strategy, "profile": s.profile, "seed": ctx.seed,
        "caution": ctx.catalog.strategies[s.strategy].caution,  # a negative baseline's transcripts are not advice
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(ctx, backend),
    }  # fmt: skip
    start = time.perf_counter()
    config = {"configurable": {"ctx": ctx}, "recursion_limit": 2 * ctx.max_turns + 9}
    evaluator = ctx.evaluate.graph if ctx.evaluate is not None else None
    if fork is None and ctx.person is None:
        state = await _drive(graph(evaluator), {"turns": [], "calls": [], "end": None}, config, on_turn, None, 0)
    elif fork is None:
        config["configurable"]["thread_id"] = record["id"]
        state = await _drive(checkpointed_graph(evaluator), {"turns": [], "calls": [], "end": None}, config, on_turn, answer, 0)
    else:
        config["configurable"] |= fork["configurable"]
        seen = len((await checkpointed_graph().aget_state(fork)).values["turns"])
        state = await _drive(checkpointed_graph(evaluator), None, config, on_turn, answer, seen)
    error = state.get("error")
    episode = Episode.model_validate(record | {
        "status": "failed" if error else "succeeded",  # with_verdicts sets status, error and usage from the verdicts
        "error": redact(error),  # the backend hides its key; this, any credential the message quotes
        "turns": state.get("turns", []),
        "outcome": state.get("outcome"),
        "fidelity": state.get("fidelity"),
        "verdicts": state.get("verdicts", []),
        "calls": state.get("calls", []),
        "duration_s": round(time.perf_counter() - start, 3),
    })  # fmt: skip
    return episode.with_verdicts(episode.verdicts)
