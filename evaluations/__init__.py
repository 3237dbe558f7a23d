"""nextstep's evaluations: the judge (`evaluations.judge`) and the statistics and reports (`evaluations.analysis`)."""
