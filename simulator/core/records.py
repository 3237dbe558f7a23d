"""What an episode record contains, and the sums over it that every layer shares."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return version("nextstep")
    except PackageNotFoundError:
        return "unknown"


def total(values: list[int | None]) -> int | None:
    """A sum that is unknown if any part is: `total([3, 4])` -> 7; `total([3, None])` -> None."""
    return None if None in values else sum(values)


def usage(calls: list[dict]) -> dict:
    """Token and latency totals: `usage([])` -> {'calls': 0, 'prompt_tokens': 0, ...}; a call without usage makes tokens None."""
    return {
        "calls": len(calls),
        "prompt_tokens": total([c["prompt_tokens"] for c in calls]),
        "completion_tokens": total([c["completion_tokens"] for c in calls]),
        "cached_tokens": total([c.get("cached_tokens") for c in calls]),  # of the prompt tokens, where the server says
        "latency_s": round(sum(c["latency_s"] for c in calls), 3),
    }


def episode_calls(record: dict) -> list[dict]:
    """Every call an episode made: the simulation's, then each verdict's."""
    return (record.get("calls") or []) + [c for v in record.get("verdicts") or [] for c in v.get("calls") or []]


def episode_status(verdicts: list[dict]) -> str:
    """'ungraded' when a judge's endpoint failed (a resumed batch grades it again, the conversation is kept), else 'succeeded'."""
    return "ungraded" if any(v.get("status") == "ungraded" for v in verdicts) else "succeeded"


def judge_errors(verdicts: list[dict]) -> str | None:
    """Why the ungraded verdicts are ungraded: `judge 1: APIConnectionError: ...`, or None."""
    errors = [f"judge {v['judge']}: {v['error']}" for v in verdicts if v.get("status") == "ungraded"]
    return "; ".join(errors) or None
