"""The toolkit's own client CPU per call, and where it goes, with no HTTP at all (issue 28).

    python benchmarks/own_cpu.py [--concurrency 64] [--runs 2] [--grid '{...}']

run_grid as trial.py runs it (graph, evaluator, response cache, SQLite store), with openai's `client.post` answered in
this process by the test stub's answer after a 10 ms pause: what is left is the toolkit's own work and LangGraph's,
without the client and transport that the bare loop shares with it. The stand-in's own CPU is left out. Some of the
toolkit's functions are wrapped to time them (each one's thread CPU, `time.thread_time`), which adds a little.
Figures on a shared machine move with its load: compare runs made together.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the answers are the test stub's
from stub_server import answer, completion  # noqa: E402

from run import FULL  # noqa: E402

WRAPPED = {  # module: (object, attribute) pairs, timed
    "simulator.models.cache": ["request_key", "ResponseCache.get", "ResponseCache.put"],
    "simulator.conversation.prompts": ["Prompts.render"],
    "simulator.models.chat": ["_call", "parse"],
    "simulator.core.records": ["Episode.model_validate", "Episode.with_verdicts"],
    "simulator.storage.store": ["Store.save_episode"],
    "simulator.conversation.runner": ["provenance"],
    "simulator.models.openai_backend": ["completion"],
    "evaluations.judge.evaluator": ["cited_schema", "numbered"],
}


def wrap(spent: collections.Counter, counted: collections.Counter) -> None:
    import importlib

    for module, names in WRAPPED.items():
        for name in names:
            owner = importlib.import_module(module)
            *path, attr = name.split(".")
            for part in path:
                owner = getattr(owner, part)
            f = getattr(owner, attr)

            @functools.wraps(f)
            def timed(*args, __f=f, __name=name, **kwargs):
                start = time.thread_time()
                try:
                    return __f(*args, **kwargs)
                finally:
                    spent[__name] += time.thread_time() - start
                    counted[__name] += 1

            setattr(owner, attr, timed)


async def main(grid: dict, concurrency: int, runs: int) -> None:
    import openai

    import evaluations  # noqa: F401  (imported before the clock, as trial.py does)
    import simulator.models.backends
    from simulator.runs.batch import run_grid

    standin = [0.0]

    async def post(self, path, *, cast_to, body=None, options=None, **kwargs):
        start = time.thread_time()
        reply = completion(body, answer(body))
        standin[0] += time.thread_time() - start
        await asyncio.sleep(0.01)
        return reply

    openai.AsyncOpenAI.post = post
    simulator.models.backends.check_reachable = lambda *args, **kwargs: None  # nothing listens: nothing is asked
    spent, counted = collections.Counter(), collections.Counter()
    wrap(spent, counted)
    for _ in range(runs):
        spent.clear(), counted.clear()
        standin[0] = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            cpu = time.process_time()
            await run_grid(grid, db=Path(tmp) / "n.db", base_url="http://127.0.0.1:9/v1", concurrency=concurrency,
                           cache_dir=Path(tmp) / "cache")  # fmt: skip
            cpu = time.process_time() - cpu - standin[0]
            with sqlite3.connect(Path(tmp) / "n.db") as conn:
                calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        print(f"own CPU {cpu / calls * 1e3:.3f} ms a call over {calls} calls; of it:")
        for name, s in spent.most_common():
            print(f"  {s / calls * 1e3:6.3f} ms a call  {counted[name]:6d} x {s / counted[name] * 1e6:7.1f} us  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--grid", type=json.loads, default=FULL.grid)
    args = parser.parse_args()
    asyncio.run(main(args.grid, args.concurrency, args.runs))
