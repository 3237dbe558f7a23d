"""B5: the README's default batch on the embedded engine, at several slot counts (issue 11).

    python benchmarks/local_batch.py --slots 1,2,4,8            # one fresh `nextstep batch` per slot count
    python benchmarks/local_batch.py --slots 2 --repeat 2        # the same batch twice: are transcripts identical?
    python benchmarks/local_batch.py --slots 2 --output-mode json_schema   # the engine's padded JSON, for comparison

Each batch is the `nextstep batch` command a user types (default grid: supermarket x 3 personas x
common_interest, 3 rounds, 1 judge), in a fresh database, with `--concurrency N`, which on the local
engine is also its number of parallel slots. Prints one JSON line per batch (with `cache_share`: per call kind, the
share of prompt tokens the engine served from its prefix cache) and a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulator.models.local import HOST, MODEL_NAME, _wait_ready, free_port  # noqa: E402
from simulator.storage.store import Store  # noqa: E402

from prefix_share import from_run  # noqa: E402

STRUCTURED = ("intent", "state", "transitions", "transition", "flags", "outcome", "fidelity")


def batch(slots: int, work: Path, output_mode: str | None, extra: list[str], threads: int | None = None) -> dict:
    """One default batch in a fresh database and response cache; its wall time, tokens and per-purpose call figures.

    `threads`: the engine started here with that many threads (the same engine, model and output mode as the default
    batch's, reached by --base-url); on a machine busy with other work one thread avoids llama.cpp's threads spinning
    on each other, which slows two threads on two loaded cores by orders of magnitude."""
    db = work / f"b5-{slots}-{time.monotonic_ns()}.db"
    cmd = [sys.executable, "-m", "simulator", "batch", "--db", str(db), "--run-id", "b5", "--concurrency", str(slots), *extra,
           "--cache-dir", str(db.with_suffix(".cache"))]  # a fresh response cache too: every batch asks the engine
    if output_mode:
        cmd += ["--output-mode", output_mode]
    load, cpu, start = os.getloadavg()[0], _children_cpu(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        if threads:
            port = free_port()
            engine = stack.enter_context(subprocess.Popen([sys.executable, "-m", "simulator.models.engine", "--port", str(port),
                                                           "--slots", str(slots), "--threads", str(threads)], stdout=subprocess.DEVNULL))
            stack.callback(lambda: (engine.terminate(), engine.wait()))
            _wait_ready(engine, f"http://{HOST}:{port}/v1", tempfile.TemporaryFile(), 120)
            cmd += ["--base-url", f"http://{HOST}:{port}/v1", "--model", MODEL_NAME, "--output-mode", output_mode or "llguidance"]
        done = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    with Store(db) as store:
        episodes = store.episodes("b5")
    cache = from_run(db, "b5")  # per call kind, the prompt tokens the engine served from its prefix cache
    calls = [c.model_dump() for e in episodes for c in e.all_calls()]
    purposes = defaultdict(list)
    for c in calls:
        purposes[c["purpose"]].append(c)
    return {
        "slots": slots, "threads": threads or os.cpu_count(), "output_mode": output_mode or "llguidance", "wall_s": round(wall, 1),
        "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)],  # before and after: others' work inflates wall_s
        "cpu_s": round(cpu, 1),  # the command's and its engine's CPU time: load-independent, unlike wall_s
        "episodes": len(episodes),
        "succeeded": sum(e.status == "succeeded" for e in episodes),
        "episodes_per_min": round(60 * len(episodes) / wall, 3), "calls": len(calls),
        "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
        "cached_tokens": sum(c.get("cached_tokens") or 0 for c in calls),
        "completion_tokens": sum(c["completion_tokens"] for c in calls),
        "structured": {p: {"calls": len(cs), "mean_completion_tokens": round(statistics.mean(c["completion_tokens"] for c in cs), 1),
                           "mean_latency_s": round(statistics.mean(c["latency_s"] for c in cs), 2),
                           "cut_off": sum(c["finish_reason"] == "length" for c in cs)}
                       for p, cs in sorted(purposes.items()) if p in STRUCTURED},
        "cache_share": {kind: v["share"] for kind, v in cache.items()},
        "kinds": kinds(calls),
        "transcripts": {f"{e.cell}/{e.rep}": [t.text for t in e.turns] for e in episodes},
    }  # fmt: skip


def _children_cpu() -> float:
    """User and system CPU seconds of this process's finished children and theirs (the engine is the command's child)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kinds(calls: list[dict]) -> dict[str, dict]:
    """Per `role purpose`: calls, prompt tokens (served from the engine's prefix cache), output tokens, how many of those
    went into answers cut off at max_tokens or rejected and re-asked (wasted), and the summed latency."""
    out: dict[str, dict] = {}
    for c in calls:
        k = out.setdefault(f"{c['role']} {c['purpose']}", {"calls": 0, "prompt_tokens": 0, "cached_tokens": 0,
                                                          "completion_tokens": 0, "cut_off": 0, "wasted_tokens": 0,
                                                          "latency_s": 0.0, "max_completion_tokens": 0})  # fmt: skip
        k["calls"] += 1
        k["prompt_tokens"] += c["prompt_tokens"] or 0
        k["cached_tokens"] += c.get("cached_tokens") or 0
        k["completion_tokens"] += c["completion_tokens"] or 0
        k["max_completion_tokens"] = max(k["max_completion_tokens"], c["completion_tokens"] or 0)
        k["cut_off"] += c["finish_reason"] == "length"
        k["wasted_tokens"] += (c["completion_tokens"] or 0) if not c["ok"] or c["finish_reason"] == "length" else 0
        k["latency_s"] = round(k["latency_s"] + c["latency_s"], 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["latency_s"]))


def table(results: list[dict]) -> str:
    lines = ["| slots | output mode | wall s | episodes/min | prompt tokens (from cache) | completion tokens | structured calls: mean output tokens, cut off |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        structured = [c for c in r["structured"].values()]
        n = sum(c["calls"] for c in structured)
        mean_out = sum(c["mean_completion_tokens"] * c["calls"] for c in structured) / n if n else 0
        lines.append(f"| {r['slots']} | {r['output_mode']} | {r['wall_s']} | {r['episodes_per_min']} | "
                     f"{r['prompt_tokens']:,} ({r['cached_tokens']:,}) | {r['completion_tokens']:,} | "
                     f"{mean_out:.1f} over {n}, {sum(c['cut_off'] for c in structured)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1,2,4,8", help="comma list of slot counts")
    parser.add_argument("--repeat", type=int, default=1, help="batches per slot count")
    parser.add_argument("--output-mode", help="as `nextstep batch --output-mode` [default: the local engine's]")
    parser.add_argument("--threads", type=int, help="start the engine here with this many threads [default: the batch's own "
                                                    "engine, every core]")
    parser.add_argument("--keep", type=Path, help="keep each batch's database and response cache in this directory")
    parser.add_argument("extra", nargs="*", help="more `nextstep batch` flags, after --")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as temp:
        work = args.keep or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        for slots in map(int, args.slots.split(",")):
            for _ in range(args.repeat):
                results.append(batch(slots, work, args.output_mode, args.extra, args.threads))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "transcripts"}), flush=True)
    if args.repeat > 1:
        for slots in sorted({r["slots"] for r in results}):
            runs = [r["transcripts"] for r in results if r["slots"] == slots]
            same = sum(all(run.get(k) == runs[0][k] for run in runs[1:]) for k in runs[0])
            print(f"slots {slots}: {same} of {len(runs[0])} episodes identical across {len(runs)} batches")
    print(table(results))


if __name__ == "__main__":
    main()
