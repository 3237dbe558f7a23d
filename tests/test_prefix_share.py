"""Prompts laid out for prefix caches: what stays the same within an episode comes first, the transcript after it, and
the judge's parts open alike; benchmarks/prefix_share.py measures the share of prompt a prefix cache can serve."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import prefix_share  # noqa: E402

JUDGE_PARTS = ("evaluator transitions", "evaluator transition", "evaluator flags", "evaluator outcome")


def test_servable_is_the_longest_prefix_shared_with_any_earlier_request():
    shares = prefix_share.servable([("a", "xyz"), ("b", "xyw"), ("b", "qq"), ("a", "xyzzy")])
    assert shares["a"] == {"prompt": 8, "served": 3, "share": 0.375}  # 'xyz' is new; 'xyzzy' reuses all of 'xyz'
    assert shares["b"] == {"prompt": 5, "served": 2, "share": 0.4}  # 'xyw' reuses 'xy'; 'qq' nothing
    assert shares["all"]["served"] == 5


@pytest.fixture(scope="module")
def requests():
    """The default batch's requests, in order, on the test stub (one episode at a time)."""
    return [(prefix_share.kind(b), prefix_share.rendered(b["messages"])) for b in prefix_share.capture({})]


def test_the_judges_parts_open_with_the_same_prefix(requests):
    # The first grading of each episode: its four parts, one after another in the captured order.
    episodes, current = [], {}
    for kind, text in requests:
        if kind in JUDGE_PARTS and kind not in current:
            current[kind] = text
            if len(current) == len(JUDGE_PARTS):
                episodes.append(current)
                current = {}
    assert len(episodes) == 3
    for parts in episodes:
        texts = list(parts.values())
        shared = min(prefix_share.common_prefix(texts[0], t) for t in texts[1:])
        assert shared >= 150, f"the judge's parts share only {texts[0][:shared]!r}"


def test_a_prefix_cache_can_serve_much_of_every_kind_of_call(requests):
    shares = prefix_share.servable(requests)
    # Within an episode the same instructions come first and the transcript only grows, so a call can reuse its
    # predecessor's prompt up to the new lines; the judges reuse their instructions from episode to episode.
    # (The shipped layout before issue 25: 36% in all, the transition grades 5%, the flags 12%.)
    # (the preflight is one test call per model before any episode: no earlier prompt to share with)
    low = {k: v["share"] for k, v in shares.items() if v["share"] < 0.35 and k != "preflight"}
    assert not low, f"kinds a prefix cache serves little of: {low}"
    assert shares["all"]["share"] >= 0.55, shares["all"]
