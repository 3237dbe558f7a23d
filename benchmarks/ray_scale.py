"""`batch --ray` against one stub: episodes/s and client CPU per call with 1 and 2 Ray actors, beside the in-process
batch, and the sizing on paper that follows from them (issue 28).

    python benchmarks/ray_scale.py [--episodes-per-cell 24] [--concurrency 64] [--latency 0.2] [--out FILE.json]

Each setup runs in a fresh process (`trial`), against benchmarks/stub.py in a process of its own. The clock and the
CPU start when the first episode starts (imports, Ray's start and the actors' own imports are left out) and stop when
the batch has ended. Client CPU is the driver's `time.process_time()` plus each actor process's user+system time (read
from /proc while it lives), over the calls the stored episodes made. The machine is shared: wall times move with the
load, CPU per call much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Stub  # noqa: E402  (benchmarks/stub.py in its own process)

GRID = {"settings": "supermarket", "personas": "all", "strategies": "common_interest,turn_back,high_point_exit,no_ask",
        "max_turns": 3, "judges": 1}  # fmt: skip
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float | None:
    """A live process's user + system CPU seconds, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def trial(url: str, actors: int, concurrency: int, reps: int) -> dict:
    """One batch; `actors` 0 runs it in this process. Returns wall, CPU and calls from the first episode's start."""
    from simulator.runs import ray_pool
    from simulator.runs.batch import run_grid
    from simulator.storage.store import Store

    clock: dict = {}
    actor_cpu: dict[int, list[float]] = {}  # pid -> [at the first episode, last seen]

    def on_progress(p) -> None:
        if "start" not in clock and p.running:
            clock["start"], clock["cpu"] = time.monotonic(), time.process_time()
            for pid in actor_cpu:
                actor_cpu[pid] = [cpu_of(pid)] * 2
        if p.finished:
            clock["end"], clock["cpu_end"] = time.monotonic(), time.process_time()

    if actors:
        import ray

        ray.init(address="local", num_cpus=actors, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        made = ray_pool.Pool.__init__

        def watched(self, handles, pids, work):
            made(self, handles, pids, work)
            actor_cpu.update({pid: [0.0, 0.0] for pid in pids})

            def sample():  # until the actors are killed at the batch's end
                while any(cpu_of(pid) is not None for pid in pids):
                    for pid in pids:
                        if (now := cpu_of(pid)) is not None and actor_cpu[pid][0]:
                            actor_cpu[pid][1] = now
                    time.sleep(0.1)

            threading.Thread(target=sample, daemon=True).start()

        ray_pool.Pool.__init__ = watched
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "n.db"
        run_id = asyncio.run(run_grid(GRID | {"reps": reps}, db=db, base_url=url, concurrency=concurrency, cache=False,
                                      on_progress=on_progress, ray="" if actors else None, actors=actors or None))  # fmt: skip
        with Store(db) as store:
            episodes = store.episodes(run_id)
    calls = sum(len(e.all_calls()) for e in episodes)
    driver = clock["cpu_end"] - clock["cpu"]
    actor = sum(last - first for first, last in actor_cpu.values())
    wall = clock["end"] - clock["start"]
    return {"actors": actors, "concurrency": concurrency, "episodes": len(episodes), "calls": calls, "wall_s": wall,
            "episodes_per_s": len(episodes) / wall, "driver_cpu_s": driver, "actor_cpu_s": actor,
            "cpu_ms_per_call": 1000 * (driver + actor) / calls, "driver_ms_per_episode": 1000 * driver / len(episodes),
            "failed": sum(e.status != "succeeded" for e in episodes)}  # fmt: skip


def sizing(calls_per_episode: float, cpu_ms_per_call: float, driver_ms_per_episode: float, throughput: float,
           episodes: int) -> dict:
    """On paper: an endpoint answering `throughput` calls/s, kept busy. The client needs throughput x CPU per call of
    cores (actors), and the driver stores throughput / calls-per-episode episodes a second at its CPU per episode
    (one core at most: it is one process). `sizing(20, 2.5, 5, 1000, 100_000)['hours']` -> 0.56 (2M calls at 1000/s)."""
    episodes_per_s = throughput / calls_per_episode
    driver_cores = episodes_per_s * driver_ms_per_episode / 1000
    if driver_cores > 1:  # the driver, not the endpoint, sets the pace
        episodes_per_s, driver_cores = 1000 / driver_ms_per_episode, 1.0
    return {"throughput_calls_s": throughput, "episodes": episodes, "actor_cores": round(episodes_per_s * calls_per_episode
            * cpu_ms_per_call / 1000, 1), "driver_cores": round(driver_cores, 2),
            "hours": round(episodes / episodes_per_s / 3600, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-per-cell", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per actor (and in process)")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--trial", nargs=2, metavar=("URL", "ACTORS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], int(args.trial[1]), args.concurrency, args.episodes_per_cell)))
        return
    results, load = [], []
    with Stub(args.latency) as stub:
        for actors in (0, 1, 2):
            load.append(os.getloadavg()[0])
            out = subprocess.run([sys.executable, __file__, "--trial", stub.url, str(actors), "--concurrency",
                                  str(args.concurrency), "--episodes-per-cell", str(args.episodes_per_cell)],
                                 capture_output=True, text=True, env=os.environ | {"RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            results.append(json.loads(out.stdout.strip().splitlines()[-1]) | {"load_1min_before": load[-1]})
    print("| setup | episodes | calls | wall s | episodes/s | client CPU ms/call | driver ms/episode | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        setup = "in process" if not r["actors"] else f"--ray, {r['actors']} actor(s)"
        print(f"| {setup}, c={r['concurrency']} | {r['episodes']} | {r['calls']} | {r['wall_s']:.1f} | {r['episodes_per_s']:.2f} "
              f"| {r['cpu_ms_per_call']:.2f} | {r['driver_ms_per_episode']:.2f} | {r['load_1min_before']:.1f} |")
    two = results[-1]
    per_episode = two["calls"] / two["episodes"]
    paper = [sizing(per_episode, two["cpu_ms_per_call"], two["driver_ms_per_episode"], t, n)
             for n in (100_000, 1_000_000) for t in (200, 1000, 5000)]  # fmt: skip
    print(f"\non paper ({per_episode:.1f} calls/episode, {two['cpu_ms_per_call']:.2f} ms client CPU/call, "
          f"{two['driver_ms_per_episode']:.2f} ms driver CPU/episode):")
    print("| episodes | endpoint calls/s | actor cores | driver cores | hours |")
    print("|---|---|---|---|---|")
    for s in paper:
        print(f"| {s['episodes']:,} | {s['throughput_calls_s']:,} | {s['actor_cores']} | {s['driver_cores']} | {s['hours']} |")
    if args.out:
        args.out.write_text(json.dumps({"trials": results, "paper": paper}, indent=2))


if __name__ == "__main__":
    main()
