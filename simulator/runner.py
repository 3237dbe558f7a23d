"""Run one episode through the graph and turn its final state into a self-contained record."""

from __future__ import annotations

import datetime as dt
import functools
import time
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from .catalog import entry_hash
from .graph import Context, build_graph
from .prompts import text_hash

@functools.lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return version("nextstep")
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def graph():
    """The compiled graph, built once per process: episodes differ only in their Context."""
    return build_graph()


def usage(calls: list[dict]) -> dict:
    """Token and latency totals: `usage([])` -> {'calls': 0, 'prompt_tokens': 0, ...}."""
    return {
        "calls": len(calls),
        "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
        "completion_tokens": sum(c["completion_tokens"] for c in calls),
        "cached_tokens": sum(c.get("cached_tokens") or 0 for c in calls),  # of the prompt tokens; 0 where not reported
        "latency_s": round(sum(c["latency_s"] for c in calls), 3),
    }


def provenance(ctx: Context, backend: str) -> dict:
    s, catalog = ctx.scenario, ctx.catalog
    prompts = {name: text_hash(ctx.prompts.source(name)) for name in ("practitioner", "practitioner_intent", "persona", "persona_state")}
    return {
        "backend": backend,
        "models": {"practitioner": ctx.practitioner.name, "persona": ctx.persona.name},
        "temperature": ctx.temperature,
        "seed": ctx.seed,
        "max_turns": ctx.max_turns,
        "reasks": ctx.reasks,
        "prompts": prompts,
        "prompt_texts": {prompts[name]: ctx.prompts.source(name) for name in prompts},
        "catalog": {
            f"setting/{s.setting}": entry_hash(catalog.settings[s.setting]),
            f"persona/{s.persona}": entry_hash(catalog.personas[s.persona]),
            f"strategy/{s.strategy}": entry_hash(catalog.strategies[s.strategy]),
        },
        "version": package_version(),
    }


async def run_episode(ctx: Context, *, backend: str, episode_id: str | None = None,
                      on_turn: Callable[[dict], None] | None = None) -> dict:
    """Simulate one episode; a model failure ends it as 'failed' with the error, never raised."""
    s = ctx.scenario
    record = {
        "id": episode_id or uuid.uuid4().hex[:12],
        "setting": s.setting, "persona": s.persona, "strategy": s.strategy,
        "profile": s.profile.model_dump(), "seed": ctx.seed,
        "caution": ctx.catalog.strategies[s.strategy].caution,  # a negative baseline's transcripts are not advice
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(ctx, backend),
    }  # fmt: skip
    start, state, seen = time.perf_counter(), {}, 0
    config = {"configurable": {"ctx": ctx}, "recursion_limit": 2 * ctx.max_turns + 8}
    async for state in graph().astream({"turns": [], "calls": [], "end": None}, config, stream_mode="values"):
        for turn in state.get("turns", [])[seen:]:
            if on_turn:
                on_turn(turn)
        seen = len(state.get("turns", []))
    error, verdicts = state.get("error"), state.get("verdicts", [])
    return record | {
        "status": "failed" if error else "succeeded",
        "error": error,
        "turns": state.get("turns", []),
        "outcome": state.get("outcome"),
        "fidelity": state.get("fidelity"),
        "verdicts": verdicts,
        "calls": state.get("calls", []),
        "usage": usage(state.get("calls", []) + [c for v in verdicts for c in v["calls"]]),
        "duration_s": round(time.perf_counter() - start, 3),
    }
