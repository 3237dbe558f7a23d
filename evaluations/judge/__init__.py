"""The evaluator agent: rubric, rules for evidence, the judge, and gold sets."""
