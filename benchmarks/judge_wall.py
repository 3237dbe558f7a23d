"""One episode's judge wall time and client CPU per judge call, before and after the evaluator became a graph (issue 14).

    python benchmarks/judge_wall.py                       # 1 and 3 judges, 200 ms per call, 5 repeats
    python benchmarks/judge_wall.py --before 519fd24 --latency 0.2 --repeats 5

'before' is the code at a git commit (default 519fd24: judges and their parts graded one after another),
unpacked into a temporary directory; 'after' is this checkout. Each side grades the same two-transition
episode in a fresh process against benchmarks/stub.py, whose answers depend only on the request body: both
sides make the same calls and reach the same verdicts, which the script checks. Figures are medians over the
repeats, after one untimed warm-up grading (imports, caches, the connection).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _turn(index: int, text: str, **fields) -> dict:
    return {"index": index, "speaker": "persona" if index % 2 else "practitioner", "text": text, **fields}


# Two transitions (an ask at turn 2 that is put off; a bridge and an ask at 6-8), so a judge has four parts to grade.
EPISODE = {"setting": "supermarket", "persona": "unsure", "strategy": "common_interest", "turns": [
    _turn(0, "Those peaches smell amazing. Do you know if they're ripe?", intent="small_talk"),
    _turn(1, "I think so, I always pick them by smell.", interest=4, comfort=5, intent="chat"),
    _turn(2, "Could I get your number?", intent="ask"),
    _turn(3, "Oh. Maybe not just yet.", interest=3, comfort=4, intent="chat"),
    _turn(4, "Fair enough. Are you making anything with them?", intent="small_talk"),
    _turn(5, "A cobbler, if I find the time. I love baking.", interest=6, comfort=6, intent="chat"),
    _turn(6, "I bake too. There's a class on Saturdays at the market hall.", intent="bridge"),
    _turn(7, "Really? I've wanted to try a class.", interest=7, comfort=7, intent="chat"),
    _turn(8, "Come along this week. Here's my number, what's yours?", intent="ask"),
    _turn(9, "Sure, it's 555 0199.", interest=7, comfort=7, intent="give_contact"),
]}  # fmt: skip


def _comparable(value):
    """A verdict as plain data without what may differ between the two sides: measured latencies, the records' schema
    version and keys left empty (0.1.0 dicts omit what the typed records spell out as null)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _comparable(x) for k, x in value.items() if x is not None and k not in ("latency_s", "schema_version")}
    return [_comparable(x) for x in value] if isinstance(value, list) else value


async def _trial(url: str, judges: int, repeats: int) -> dict:
    """Grade EPISODE with a panel of `judges` (in this process, with whichever code is on sys.path) `repeats` times."""
    try:
        from evaluations.judge.graph import make_evaluator  # after: the evaluator graph
    except ImportError:
        from evaluations.judge.evaluator import make_evaluator  # before: the callback
    from evaluations.judge.evaluator import Judge
    from evaluations.judge.rubric import load_rubric
    from simulator.conversation.catalog import load_catalog
    from simulator.conversation.prompts import Prompts
    from simulator.models.openai_backend import OpenAIChatModel, async_client

    catalog = load_catalog()
    rubric, rubric_hash = load_rubric()
    async with async_client(url, "sk-stub") as client:
        model = OpenAIChatModel(client, "stub")
        panel = [Judge(model, Prompts(catalog.prompt_dirs), rubric, rubric_hash, seed=i, index=i) for i in range(judges)]
        evaluate = make_evaluator(panel, catalog)
        verdicts = await evaluate(EPISODE)  # warm-up
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            verdicts = await evaluate(EPISODE)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    verdicts = _comparable(verdicts)
    calls = sum(len(v["calls"]) for v in verdicts)
    digest = hashlib.sha256(json.dumps(verdicts, sort_keys=True).encode()).hexdigest()
    return {"wall_s": statistics.median(walls), "cpu_ms_per_call": 1000 * statistics.median(cpus) / calls, "calls": calls,
            "longest_judge_calls": max(len(v["calls"]) for v in verdicts), "statuses": [v["status"] for v in verdicts],
            "verdicts": digest}  # fmt: skip


def unpack(commit: str, into: Path) -> Path:
    """The repository as it was at `commit`, unpacked under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, url: str, judges: int, repeats: int) -> dict:
    """A trial in a fresh process that imports the toolkit from `tree`."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--trial", "--url", url, "--judges", str(judges), "--repeats", str(repeats)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"trial in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="519fd24", help="Git commit of the code to compare with.")
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds the stub takes per call.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--judges", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(asyncio.run(_trial(args.url, args.judges[0], args.repeats))))
        return

    sys.path.insert(0, str(HERE))
    from run import Stub

    rows = []
    with tempfile.TemporaryDirectory() as tmp, Stub(args.latency) as stub:
        trees = {f"before ({args.before})": unpack(args.before, Path(tmp)), "after": ROOT}
        for judges in args.judges:
            results = {label: measure(tree, stub.url, judges, args.repeats) for label, tree in trees.items()}
            same = len({r["verdicts"] for r in results.values()}) == 1
            for label, r in results.items():
                rows.append(f"| {judges} | {label} | {r['wall_s']:.2f} | {r['calls']} | {r['longest_judge_calls']} "
                             f"| {r['calls'] * args.latency:.1f} | {r['cpu_ms_per_call']:.2f} | {'yes' if same else 'NO'} |")  # fmt: skip
    print(f"One episode's judge wall time, stub at {args.latency * 1000:.0f} ms per call, median of {args.repeats}\n")
    print("| judges | code | wall s | calls | calls of the busiest judge | calls × latency s | client CPU ms/call | same verdicts |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
