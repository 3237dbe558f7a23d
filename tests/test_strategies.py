"""Strategy as a view of its own: per-strategy contact with an interval, tests between strategies, the heatmap.

The expected figures are computed here another way: Wilson's interval from its formula, the tests with scipy
directly, Holm by hand.
"""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from rich.console import Console
from scipy import stats
from test_compare import episode

from evaluations.analysis.compare import persona_reactions

HITS = {"common_interest": 1, "no_ask": 5, "turn_back": 9}  # contacts out of 10 each


def strategies_frame() -> pd.DataFrame:
    """Three strategies over two personas, 10 usable episodes each, plus one out-of-character turn_back episode."""
    rows = [episode("aloof" if i % 2 else "friendly", strategy=s, contact=i < k, rep=i, interest=float(k + i % 3))
            for s, k in HITS.items() for i in range(10)]
    rows.append(episode("aloof", strategy="turn_back", contact=False, rep=99, fidelity_ok=False))
    return pd.DataFrame(rows)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre, half = (k + z * z / 2) / (n + z * z), z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_per_strategy_contact_rate_with_wilson_interval():
    r = persona_reactions(strategies_frame())
    rows = {row["strategy"]: row for row in r["strategies"]}
    assert list(rows) == sorted(HITS)
    for s, k in HITS.items():
        assert (rows[s]["n"], rows[s]["contact"]["k"]) == (10, k)  # the out-of-character episode left out
        assert rows[s]["contact"]["ci"] == pytest.approx(wilson(k, 10))


def test_strategies_omnibus_then_pairwise_holm():
    r = persona_reactions(strategies_frame())
    contact = r["strategy_tests"]["contact"]
    table = [[k, 10 - k] for _, k in sorted(HITS.items())]
    assert contact["omnibus"]["test"].startswith("chi2")
    assert contact["omnibus"]["p"] == pytest.approx(stats.chi2_contingency(table).pvalue)
    raw = {(a, b): stats.fisher_exact([table[i], table[j]]).pvalue
           for (i, a), (j, b) in [((0, "common_interest"), (1, "no_ask")), ((0, "common_interest"), (2, "turn_back")),
                                  ((1, "no_ask"), (2, "turn_back"))]}  # fmt: skip
    ordered = sorted(raw, key=raw.get)  # Holm by hand: smallest p times 3, then times 2, then 1, kept monotone
    holm, running = {}, 0.0
    for i, key in enumerate(ordered):
        running = max(running, min(1.0, raw[key] * (3 - i)))
        holm[key] = running
    got = {(p["a"], p["b"]): (p["p"], p["p_holm"]) for p in contact["pairwise"]}
    assert got == {key: (pytest.approx(raw[key]), pytest.approx(holm[key])) for key in raw}
    assert holm[("common_interest", "turn_back")] < 0.05 < raw[("common_interest", "no_ask")]


def test_compare_run_prints_the_strategies_and_their_tests():
    from simulator.cli.compare import print_reactions

    out = io.StringIO()
    print_reactions("r", persona_reactions(strategies_frame()), Console(file=out, width=80))
    text = out.getvalue()
    assert "contact by strategy" in text and "differences between strategies" in text
    lo, hi = wilson(9, 10)
    assert f"90% [{lo * 100:.0f}, {hi * 100:.0f}]" in text  # turn_back, whole
    assert "common_interest" in text and "turn_back" in text  # names never cut


def test_one_strategy_says_there_is_nothing_to_compare():
    from simulator.cli.compare import print_reactions

    frame = strategies_frame()
    out = io.StringIO()
    print_reactions("r", persona_reactions(frame[frame.strategy == "no_ask"]), Console(file=out, width=80))
    assert "one strategy (no_ask): nothing to compare between strategies" in out.getvalue()
