"""nextstep evaluations: rubric, evaluator agent, agreement and calibration against gold sets."""

from .agreement import calibration, judge_alpha, panel_scores
from .evaluator import Judge, grade, judge_max_calls, make_evaluator
from .frame import load_run
from .gold import GoldItem, load_gold
from .rubric import CONDITIONS, FLAGS, Rubric, load_rubric
from .rules import episode_scores

__all__ = [
    "CONDITIONS", "FLAGS", "GoldItem", "Judge", "Rubric", "calibration", "episode_scores", "grade",
    "judge_alpha", "judge_max_calls", "load_gold", "load_run", "load_rubric", "make_evaluator", "panel_scores",
]  # fmt: skip
