"""A panel of independent judges: the evaluator models taken in turn, each judge with its own seed."""

from __future__ import annotations

from simulator.conversation.prompts import Prompts
from simulator.models.chat import ChatModel

from .evaluator import Judge
from .rubric import Rubric


def judge_panel(models: list[ChatModel], prompts: Prompts, rubric: Rubric, rubric_hash: str, *, judges: int, seed: int,
                reasks: int, fidelity_judge: bool = False) -> list[Judge]:
    """`judges` judges over `models` in turn, judge i seeded `seed + i`: `judge_panel([a, b], ..., judges=3, seed=0)`
    -> judges on a (seed 0), b (seed 1), a (seed 2)."""
    return [Judge(models[i % len(models)], prompts, rubric, rubric_hash, seed=seed + i, index=i, reasks=reasks,
                  fidelity_judge=fidelity_judge) for i in range(judges)]  # fmt: skip

