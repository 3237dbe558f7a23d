"""A panel of independent judges: the evaluator models taken in turn, each judge with its own seed."""

from __future__ import annotations

from simulator.conversation.prompts import Prompts
from simulator.core.records import Verdict
from simulator.models.chat import ChatModel

from .evaluator import PROMPTS, Judge
from .rubric import Rubric


def judge_panel(models: list[ChatModel], prompts: Prompts, rubric: Rubric, rubric_hash: str, *, judges: int, seed: int,
                reasks: int, fidelity_judge: bool = False) -> list[Judge]:
    """`judges` judges over `models` in turn, judge i seeded `seed + i`: `judge_panel([a, b], ..., judges=3, seed=0)`
    -> judges on a (seed 0), b (seed 1), a (seed 2)."""
    return [Judge(models[i % len(models)], prompts, rubric, rubric_hash, seed=seed + i, index=i, reasks=reasks,
                  fidelity_judge=fidelity_judge) for i in range(judges)]  # fmt: skip



def graded_by(verdict: Verdict, judge: Judge) -> bool:
    """Whether `verdict` is this judge's completed grading: its place in the panel, model, seed, temperature, rubric,
    evaluator prompts and fidelity check all the same (what a resumed re-grade may keep instead of asking again)."""
    return (verdict.graded and verdict.judge == judge.index and verdict.model == judge.model.name and verdict.seed == judge.seed
            and verdict.temperature == judge.temperature and verdict.rubric_hash == judge.rubric_hash
            and verdict.prompts == {p: judge.prompts.hash(p) for p in PROMPTS}
            and (verdict.fidelity is not None) == judge.fidelity_judge)  # fmt: skip
