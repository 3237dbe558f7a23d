"""nextstep evaluations: rubric, evaluator agent, statistics, calibration, reports."""
