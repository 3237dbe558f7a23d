"""B6: memory and time of `nextstep show`, `report` and `personas` as a run grows (issue 24, item 14).

    python benchmarks/show_scale.py --episodes 20000            # make (or reuse) a database of 20,000 episodes, time each
    python benchmarks/show_scale.py --episodes 2000,20000 --db-dir /tmp/b6 --commands show

A synthetic run: one real episode (simulated and graded by the toolkit against the loopback stub) copied N times under
new ids, cells, seeds and personas, saved through `Store.save_episode` as a batch saves. Each command then runs in a fresh
process; its peak RSS (ru_maxrss of the child) and wall time are printed as JSON, one line per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PERSONAS = ("friendly", "aloof", "unsure")


def generate(db: Path, episodes: int, run_id: str = "big") -> None:
    """A run of `episodes` copies of one stub-made episode, each with its own id, cell, seed and persona."""
    from graded_stub import graded
    from stub_server import StubServer

    import simulator.api as api
    from simulator.core.records import RunSpec
    from simulator.storage.store import Store

    with StubServer(fault=graded) as url:
        template = api.run_episode("supermarket", "aloof", "common_interest", judges=2, max_turns=4, base_url=url)
    spec = RunSpec(experiment={"settings": ["supermarket"], "personas": list(PERSONAS), "reps": episodes // 3 + 1})
    with Store(db) as store:
        store.create_run(run_id, spec)
        for n in range(episodes):
            persona = PERSONAS[n % 3]
            record = template.model_copy(update={"id": f"{n:012x}", "seed": n, "persona": persona})
            store.save_episode(run_id, f"supermarket/{persona}/common_interest/man-woman", n // 3, record)


COMMANDS = ("show", "report", "personas")  # the summaries that read a whole run


def measure(db: Path, run_id: str = "big", command: str = "show") -> dict:
    """Peak RSS (MB) and wall time (s) of `nextstep COMMAND RUN` in a fresh process (its own rusage, from wait4)."""
    out = ["-o", str(db.with_suffix(".html")), "--force"] if command == "report" else []
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "simulator", command, run_id, "--db", str(db), *out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{command} failed: {err[-2000:]}")
    return {"command": command, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", default="20000", help="comma list of run sizes")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"comma list of {', '.join(COMMANDS)}")
    parser.add_argument("--db-dir", type=Path, default=Path("/tmp/nextstep-b6"), help="where the databases are made (and reused)")
    args = parser.parse_args()
    args.db_dir.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.episodes.split(",")):
        db = args.db_dir / f"show-{size}.db"
        if not db.exists():
            started = time.perf_counter()
            generate(db, size)
            print(f"generated {size} episodes in {time.perf_counter() - started:.0f} s: {db}", file=sys.stderr)
        for command in args.commands.split(","):
            print(json.dumps({"episodes": size, **measure(db, command=command)}), flush=True)

if __name__ == "__main__":
    main()
