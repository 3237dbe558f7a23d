"""Run benchmarks B1-B4 side by side and write benchmarks/RESULTS.md (issue 7).

    python benchmarks/run.py                      # the full set, about 14 minutes on 2 cores
    python benchmarks/run.py --smoke --out PATH   # seconds, no local model: checks the command still works

Every measurement is a fresh process (benchmarks/trial.py) so peak RSS and heap of one trial do
not leak into the next; toolkit and bare-loop trials alternate so drift hits both alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUB_CPU, CLIENT_CPU = 1, 0  # B1-B3: the stub and the measured client each get a core of their own


@dataclass(frozen=True)
class Plan:
    grid: dict
    latency: float
    runs: int
    b1_concurrency: int = 8
    b2_concurrency: tuple[int, ...] = (64, 128)
    before_concurrency: tuple[int, ...] = (64, 128)  # the toolkit as before issue 7 (trial.py toolkit-before)
    local_model: bool = True
    b4_prompts: int = 8
    b4_max_tokens: int = 64


FULL = Plan(grid={"settings": "all", "personas": "all", "strategies": "all", "reps": 4, "max_turns": 3, "judges": 1},
            latency=0.2, runs=3)  # fmt: skip
SMOKE = Plan(grid={"settings": "supermarket", "personas": "all", "strategies": "turn_back,no_ask", "reps": 1,
                   "max_turns": 1, "judges": 1},
             latency=0.01, runs=1, before_concurrency=(), local_model=False, b4_prompts=2, b4_max_tokens=8)  # fmt: skip


class Stub:
    """benchmarks/stub.py in its own process, pinned to STUB_CPU."""

    def __init__(self, latency: float, capture: Path | None = None):
        cmd = [sys.executable, str(HERE / "stub.py"), "--latency", str(latency), "--cpu", str(STUB_CPU)]
        self.process = subprocess.Popen(cmd + (["--capture", str(capture)] if capture else []), stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"the stub did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.split()[1]}/v1"

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def trial(mode: str, *args: str, cpu: int | None = CLIENT_CPU) -> dict:
    cmd = [sys.executable, str(HERE / "trial.py"), mode, *args] + (["--cpu", str(cpu)] if cpu is not None else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"trial {mode} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {mode:14s} {' '.join(args[:4])[:60]:60s} {result['wall_s']:7.2f}s", file=sys.stderr, flush=True)
    return result


def episode_calls(capture: Path, grid: dict) -> tuple[list[int], list[int]]:
    """Per episode, in the order the batch starts them: its calls, and the calls on its critical path (`trial.stages`:
    the stages one after another, each as long as its longest part), from the captured requests."""
    from simulator.conversation.catalog import load_catalog
    from simulator.runs.batch import Experiment, expand
    from trial import stages

    rows = defaultdict(list)
    for line in capture.open():
        row = json.loads(line)
        if row["episode"]:  # untagged: the command's preflight test call, made before any episode
            rows[row["episode"]].append(row)
    order = [str(c.seed) for c in expand(Experiment(**grid).resolved(load_catalog()))]
    assert set(rows) == set(order), "every episode's requests must be tagged with its seed"
    return [len(rows[s]) for s in order], [sum(max(map(len, parts)) for parts in stages(rows[s])) for s in order]


def scheduled_makespan(durations: list[float], slots: int) -> float:
    """The batch's own schedule with zero overhead: episodes start in order as slots free up.

    `scheduled_makespan([1, 1, 2], 2)` -> 3.0 (the tail the sum/slots bound ignores).
    """
    free = [0.0] * slots
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def ideal_makespan(calls: list[int], path: list[int], latency: float, slots: int) -> float:
    """The least time the batch can take with every call taking `latency` and at most `slots` requests in flight
    (`--concurrency` counts requests, the judge's parts included): the longer of its own schedule of critical paths and
    all its calls spread over the slots.

    `ideal_makespan([4, 4], [2, 2], 1.0, 2)` -> 4.0 (its schedule alone says 2.0: each episode's parts at once).
    """
    return max(scheduled_makespan([k * latency for k in path], slots), sum(calls) * latency / slots)


def dialogue_prompts(capture: Path, n: int) -> list[list[dict]]:
    """The first n distinct plain-text requests the toolkit sent: real practitioner and persona prompts."""
    prompts, seen = [], set()
    for line in capture.open():
        body = json.loads(line)["body"]
        key = json.dumps(body["messages"])
        if "response_format" not in body and key not in seen:
            seen.add(key)
            prompts.append(body["messages"])
        if len(prompts) == n:
            break
    return prompts


def stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def run(plan: Plan, work: Path) -> dict:
    grid = json.dumps(plan.grid)
    capture = work / "requests.jsonl"
    print("capture (untimed): the toolkit's requests, tagged per episode", file=sys.stderr)
    with Stub(0.0, capture) as stub:
        trial("capture", "--url", stub.url, "--grid", grid)
    calls, path = episode_calls(capture, plan.grid)
    results = {"calls": calls, "path": path, "b1": [], "b2": {c: {"toolkit": [], "bare": [], "graphs": [], "bare_create": [], "before": []}
                                                for c in plan.b2_concurrency}}  # fmt: skip
    with Stub(plan.latency) as stub:
        for run_index in range(plan.runs):
            print(f"run {run_index + 1}/{plan.runs}", file=sys.stderr)
            results["b1"].append(trial("toolkit", "--url", stub.url, "--concurrency", str(plan.b1_concurrency), "--grid", grid))
            for c in plan.b2_concurrency:
                b2 = results["b2"][c]
                b2["toolkit"].append(trial("toolkit", "--url", stub.url, "--concurrency", str(c), "--grid", grid))
                b2["bare"].append(trial("bare", "--url", stub.url, "--concurrency", str(c), "--requests", str(capture)))
                b2["graphs"].append(trial("bare", "--url", stub.url, "--concurrency", str(c), "--requests", str(capture), "--graphs"))
                b2["bare_create"].append(trial("bare", "--url", stub.url, "--concurrency", str(c), "--requests", str(capture),
                                               "--client", "create"))  # fmt: skip
                if c in plan.before_concurrency:
                    b2["before"].append(trial("toolkit-before", "--url", stub.url, "--concurrency", str(c), "--grid", grid))
        results["b4"] = b4(plan, work, capture, stub.url)
    return results


def b4(plan: Plan, work: Path, capture: Path, stub_url: str) -> dict:
    """The embedded model through the toolkit vs xllamacpp.Server in-process: same prompts and settings."""
    spec = {"prompts": dialogue_prompts(capture, plan.b4_prompts), "max_tokens": plan.b4_max_tokens, "temperature": 0.7,
            "seed": 1, "slots": 1, "n_threads": os.cpu_count() or 1, "standin_latency": plan.latency}  # fmt: skip
    prompts = work / "prompts.json"
    prompts.write_text(json.dumps(spec))
    runs = []
    for _ in range(plan.runs):  # unpinned: llama.cpp uses every core on both sides
        args = ["--prompts", str(prompts)] + ([] if plan.local_model else ["--url", stub_url])
        runs.append(trial("local", *args, cpu=None))
    return {"toolkit": [r["toolkit"] for r in runs], "inprocess": [r["inprocess"] for r in runs],
            "spec": {k: v for k, v in spec.items() if k != "prompts"} | {"prompts": len(spec["prompts"])}}  # fmt: skip


def fmt(values: list[float], digits: int = 2) -> str:
    lo, mid, hi = stats(values)
    return f"{mid:.{digits}f} | {lo:.{digits}f} | {hi:.{digits}f}"


def row(name: str, values: list[float], target: str = "", digits: int = 2) -> str:
    return f"| {name} | {fmt(values, digits)} | {target} |"


def per_run(a: list[dict], b: list[dict], f) -> list[float]:
    """f(a_i, b_i) for each run: ratios are taken within a run, then summarised."""
    return [f(x, y) for x, y in zip(a, b)]


def check(results: list[dict], episodes: int, calls: int) -> None:
    for r in results:
        if r["succeeded"] != episodes or r["calls"] != calls:
            raise RuntimeError(f"a trial did not run the captured work: {r} (expected {episodes} episodes, {calls} calls)")


def report(plan: Plan, results: dict, smoke: bool) -> str:
    calls, path = results["calls"], results["path"]
    n, total = len(calls), sum(calls)
    eps = lambda r: n / r["wall_s"]  # noqa: E731
    cpu_ms = lambda r: 1000 * r["cpu_s"] / r["calls"]  # noqa: E731
    ideal_sum = sum(path) * plan.latency / plan.b1_concurrency
    ideal_sched = scheduled_makespan([k * plan.latency for k in path], plan.b1_concurrency)
    ideal = ideal_makespan(calls, path, plan.latency, plan.b1_concurrency)
    check(results["b1"], n, total)
    lines = [
        "| figure | median | min | max | target |",
        "| --- | ---: | ---: | ---: | --- |",
        row(f"B1 efficiency, ideal = the longer of scheduled makespan and Σ calls × {plan.latency} s / {plan.b1_concurrency}, "
            f"/ measured (c={plan.b1_concurrency})", [ideal / r["wall_s"] for r in results["b1"]], "≥ 0.95", 3),
        row(f"B1 efficiency, ideal = scheduled makespan / measured (c={plan.b1_concurrency})",
            [ideal_sched / r["wall_s"] for r in results["b1"]], "", 3),
        row(f"B1 efficiency, ideal = Σ critical-path calls × {plan.latency} s / {plan.b1_concurrency} / measured",
            [ideal_sum / r["wall_s"] for r in results["b1"]], "", 3),
        row("B1 wall time, s", [r["wall_s"] for r in results["b1"]]),
    ]  # fmt: skip
    for c, b2 in results["b2"].items():
        check(b2["toolkit"] + b2["bare"] + b2["graphs"] + b2["bare_create"] + b2["before"], n, total)
        lines += [
            row(f"B2 c={c} toolkit episodes/s", [eps(r) for r in b2["toolkit"]]),
            row(f"B2 c={c} bare loop episodes/s", [eps(r) for r in b2["bare"]]),
            row(f"B2 c={c} toolkit / bare episodes/s", per_run(b2["toolkit"], b2["bare"], lambda t, b: eps(t) / eps(b)), "≥ 1.00", 3),
            row(f"B3 c={c} toolkit client CPU ms/call", [cpu_ms(r) for r in b2["toolkit"]]),
            row(f"B3 c={c} bare loop client CPU ms/call", [cpu_ms(r) for r in b2["bare"]]),
            row(f"B3 c={c} toolkit − bare CPU ms/call", per_run(b2["toolkit"], b2["bare"], lambda t, b: cpu_ms(t) - cpu_ms(b)), "≤ 0.50"),
            row(f"LangGraph alone: c={c} bare loop in graphs / bare episodes/s",
                per_run(b2["graphs"], b2["bare"], lambda g, b: eps(g) / eps(b)), "", 3),
            row(f"LangGraph alone: c={c} bare loop in graphs − bare CPU ms/call",
                per_run(b2["graphs"], b2["bare"], lambda g, b: cpu_ms(g) - cpu_ms(b))),
            row(f"LangGraph alone: c={c} toolkit / bare loop in graphs episodes/s",
                per_run(b2["toolkit"], b2["graphs"], lambda t, g: eps(t) / eps(g)), "", 3),
            row(f"LangGraph alone: c={c} toolkit − bare loop in graphs CPU ms/call",
                per_run(b2["toolkit"], b2["graphs"], lambda t, g: cpu_ms(t) - cpu_ms(g))),
            row(f"reference: c={c} bare loop with create() on httpx2 episodes/s", [eps(r) for r in b2["bare_create"]]),
            row(f"reference: c={c} toolkit / bare loop with create() on httpx2 episodes/s",
                per_run(b2["toolkit"], b2["bare_create"], lambda t, b: eps(t) / eps(b)), "", 3),
            row(f"reference: c={c} toolkit − bare loop with create() on httpx2 CPU ms/call",
                per_run(b2["toolkit"], b2["bare_create"], lambda t, b: cpu_ms(t) - cpu_ms(b))),
        ]  # fmt: skip
        if b2["before"]:
            lines += [
                row(f"before: c={c} toolkit episodes/s", [eps(r) for r in b2["before"]]),
                row(f"before: c={c} toolkit / bare loop with create() episodes/s",
                    per_run(b2["before"], b2["bare_create"], lambda t, b: eps(t) / eps(b)), "", 3),
                row(f"before: c={c} toolkit client CPU ms/call", [cpu_ms(r) for r in b2["before"]]),
            ]  # fmt: skip
    top = max(results["b2"])
    lines += [
        row(f"B3 peak RSS, toolkit, {top} in flight, MB", [r["peak_rss_mb"] for r in results["b2"][top]["toolkit"]], "< 300", 0),
        row(f"B3 peak RSS, bare loop, {top} in flight, MB", [r["peak_rss_mb"] for r in results["b2"][top]["bare"]], "", 0),
        row("one-off import CPU, toolkit (simulator + evaluations), s", [r["import_cpu_s"] for r in results["b2"][top]["toolkit"]]),
        row("one-off import CPU, bare loop (openai), s", [r["import_cpu_s"] for r in results["b2"][top]["bare"]]),
    ]  # fmt: skip
    b4 = results["b4"]
    tps = lambda r: r["tokens"] / r["wall_s"]  # noqa: E731
    inprocess = "xllamacpp.Server in-process" if plan.local_model else "smoke stand-in (a fixed pause, no model)"
    lines += [
        row("B4 toolkit tokens/s" + ("" if plan.local_model else " (smoke: against the stub)"), [tps(r) for r in b4["toolkit"]], "", 1),
        row(f"B4 {inprocess} tokens/s", [tps(r) for r in b4["inprocess"]], "", 1),
        row("B4 toolkit / in-process tokens/s", per_run(b4["toolkit"], b4["inprocess"], lambda t, i: tps(t) / tps(i)), "≥ 0.90", 3),
    ]  # fmt: skip
    in_flight = [r["in_flight"] for r in results["b2"][top]["toolkit"]]
    tokens = f"{b4['toolkit'][0]['tokens']} (toolkit) and {b4['inprocess'][0]['tokens']} (in-process) completion tokens per run"
    header = [
        "# Benchmark results" + (" (smoke: not a measurement)" if smoke else ""),
        "",
        f"Written by `python benchmarks/run.py{' --smoke' if smoke else ''}` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. "
        f"Each figure is over {plan.runs} run(s); toolkit and bare-loop trials alternate within a run, and ratios are "
        "taken within a run, then summarised.",
        "",
        f"- machine: {cpu_model()} (flags: {cpu_flags()}), {os.cpu_count()} cores, {mem_gb():.0f} GB; {platform.platform()}; "
        f"1-minute load average {results['load'][0]:.2f} at the start, {results['load'][1]:.2f} at the end "
        "(the run itself keeps one or two cores busy; more at the start means other work on this shared VM)",
        "- versions: " + ", ".join(f"{p} {v}" for p, v in versions().items()),
        f"- cores: the stub is pinned to CPU {STUB_CPU} and each measured client process to CPU {CLIENT_CPU} "
        "(`os.sched_setaffinity`) for B1-B3; B4 is unpinned, llama.cpp using every core on both sides.",
        f"- work: the grid {json.dumps(plan.grid)} = {n} episodes, {total} calls "
        f"({min(calls)}-{max(calls)} per episode; {min(path)}-{max(path)} of them on its critical path: the conversation's "
        f"calls one after another, then the judge's transitions, then its parts at once), stub latency {plan.latency} s.",
        f"- B1 ideal: the batch's own schedule (episodes start in grid order as one of the {plan.b1_concurrency} slots frees), "
        f"each episode as long as its critical path with every call taking exactly {plan.latency} s = {ideal_sched:.1f} s; "
        f"Σ critical-path calls × latency / {plan.b1_concurrency} = {ideal_sum:.1f} s ignores the tail of the last "
        f"episodes. `--concurrency` counts requests in flight, the judge's parts included, so the batch also takes at "
        f"least Σ calls × latency / {plan.b1_concurrency} = {sum(calls) * plan.latency / plan.b1_concurrency:.1f} s; "
        f"the target row's ideal is the longer of the two, {ideal:.1f} s.",
        "- B2 bare loop: the request bodies the toolkit sent (captured at the stub, tagged per episode), sent the way "
        "the toolkit sends them: `client.post(\"/chat/completions\", body=..., cast_to=object)` on openai's aiohttp "
        "transport (`openai.DefaultAioHttpClient`), one episode's requests in the toolkit's order (the judge's parts at "
        "once, `trial.plan`), episodes under the same semaphore; "
        "no graph, no store. So the B2/B3 targets measure what the graph, evaluator and store cost on top of the same "
        "client and transport. The 'reference' rows replay the same bodies with openai's default client (httpx2) and "
        "`chat.completions.create(**body)`, the bare loop these targets used before.",
        "- 'LangGraph alone' rows: the bare loop's calls made from the nodes of two LangGraph graphs of the toolkit's "
        "shape that do nothing else (`trial.in_graphs`: a node per turn with a coroutine route, finish, a node running "
        "the evaluator graph; in that, a branch finds the transitions and a `Send` per part grades), with the garbage "
        "collector set as the toolkit's batches set it (`fewer_collections`; the bare loop keeps Python's default). So "
        "'in graphs − bare' is what LangGraph costs by itself and 'toolkit − in graphs' the toolkit's own work "
        "(prompts, parsing, records, store).",
        "- B3: client CPU = `time.process_time()` over the batch (all threads, the store's too) / calls; "
        f"peak RSS = `ru_maxrss` of the trial process (a fresh process per trial); the toolkit reached {max(in_flight)} episodes in flight.",
        "- Imports happen before the clock on both sides (the toolkit's lazy `evaluations` import included); "
        "their CPU is the one-off import row.",
        "- 'before' rows: the toolkit as it was before issue 7, rebuilt in the trial process by undoing the "
        "changes (the default httpx2 transport, the client call back to `chat.completions.create()`, "
        "schema/model/version caches bypassed); see benchmarks/README.md.",
        f"- B4: {b4['spec']['prompts']} dialogue prompts the toolkit sent, max_tokens {b4['spec']['max_tokens']}, "
        f"temperature {b4['spec']['temperature']}, seed {b4['spec']['seed']}, slots {b4['spec']['slots']}, "
        f"n_threads {b4['spec']['n_threads']}; the toolkit is `OpenAIChatModel.complete()` against `simulator.models.local.local_server()` "
        "(the engine in its own process, over HTTP), the other side `handle_chat_completions` on a `xllamacpp.Server` built "
        "with the same `simulator.models.engine.params`; "
        f"one untimed warm-up call each; {tokens}.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The instruction-set flags that matter for a prebuilt engine: AVX2, AVX-512*, AMX* (or 'none of them')."""
    try:
        flags = next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    shown = [f for f in flags if f == "avx2" or f.startswith(("avx512", "amx"))]
    return " ".join(shown) or "none of avx2/avx512/amx"


def mem_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("nextstep", "openai", "httpx2", "aiohttp", "langgraph", "pydantic", "xllamacpp"):
        try:
            out[package] = version(package)
        except Exception:
            pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, tiny grid, no local model")
    parser.add_argument("--out", type=Path, help="where to write the table (default benchmarks/RESULTS.md)")
    args = parser.parse_args()
    if args.smoke and args.out is None:
        parser.error("--smoke needs --out: a smoke run must not overwrite benchmarks/RESULTS.md")
    plan = SMOKE if args.smoke else FULL
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        results = run(plan, Path(work))
    results["load"] = (load, os.getloadavg()[0])
    out = args.out or HERE / "RESULTS.md"
    out.write_text(report(plan, results, args.smoke))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
