"""Garbage collection while many episodes run at once."""

from __future__ import annotations

import contextlib
import gc

YOUNG = 10_000  # allocations between collections of the youngest generation (Python's default is 700)


@contextlib.contextmanager
def fewer_collections(young: int = YOUNG):
    """Collect the youngest generation every `young` allocations instead of every 700 while the block runs.

    Every model call allocates thousands of short-lived objects (graph tasks, configs, messages, records), so at the
    default threshold the collector runs hundreds of times in a batch, and each run that reaches the older generations
    walks the whole long-lived heap (modules, compiled graphs, schemas). Cycles are still collected, only less often.
    The threshold in force when the block began comes back when it ends (so nesting is harmless).
    """
    before = gc.get_threshold()
    gc.set_threshold(max(young, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
