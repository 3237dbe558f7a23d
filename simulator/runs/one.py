"""One episode, watched as it happens: `nextstep run`, and `nextstep play` where a person takes a role."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evaluations.judge.graph import make_evaluator
from evaluations.judge.panel import judge_panel
from evaluations.judge.rubric import load_rubric
from simulator.conversation.catalog import Catalog
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import Prompts
from simulator.conversation.runner import run_episode
from simulator.core.records import Episode, Turn
from simulator.models.backends import endpoint
from simulator.models.config import Config

from .experiment import RUN_MAX_TURNS


def about(catalog: Catalog, scenario: Scenario, seed: int, backend: str) -> dict:
    """What is about to run, for a header: the scenario, seed, backend, the entries' summaries and any caution."""
    strategy, persona = catalog.strategies[scenario.strategy], catalog.personas[scenario.persona]
    return {"setting": scenario.setting, "persona": scenario.persona, "strategy": scenario.strategy,
            "profile": scenario.profile.id, "seed": seed, "backend": backend, "caution": strategy.caution,
            "persona_summary": persona.summary, "strategy_summary": strategy.summary}  # fmt: skip


async def run_one(config: Config, catalog: Catalog, scenario: Scenario, *, seed: int = 0, judges: int = 1,
                  rubric_file: Path | None = None, fidelity_judge: bool = False,
                  on_start: Callable[[str], None] | None = None, on_turn: Callable[[Turn], None] | None = None,
                  person: str | None = None, answer: Callable[[dict], object] | None = None) -> Episode:
    """Simulate and grade one episode on one slot; `on_start(about(...))` once the endpoint is up, `on_turn` per turn.

    `person` and `answer`: the role a person plays and where their turns come from (see `run_episode`).
    """
    for kind, name in (("settings", scenario.setting), ("personas", scenario.persona), ("strategies", scenario.strategy)):
        catalog.pick(kind, name)
    prompts = Prompts(catalog.prompt_dirs)
    rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir) if judges else (None, None)
    with endpoint(config, local_slots=1) as ep:
        if on_start:
            on_start(about(catalog, scenario, seed, ep.backend))
        async with ep.models(config) as models:
            panel = judge_panel(models["evaluators"], prompts, rubric, rubric_hash, judges=judges, seed=seed,
                                reasks=config.reasks, fidelity_judge=fidelity_judge)  # fmt: skip
            ctx = Context(models["practitioner"], models["persona"], catalog, prompts, scenario, seed,
                          temperature=config.temperature, max_turns=config.max_turns or RUN_MAX_TURNS, reasks=config.reasks,
                          evaluate=make_evaluator(panel, catalog) if panel else None, person=person)  # fmt: skip
            return await run_episode(ctx, backend=ep.backend, on_turn=on_turn, answer=answer)
