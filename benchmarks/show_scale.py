"""B6: memory and time of `nextstep show RUN` as a run grows (issue 24, item 14).

    python benchmarks/show_scale.py --episodes 20000            # make (or reuse) a database of 20,000 episodes, time `show`
    python benchmarks/show_scale.py --episodes 2000,20000 --db-dir /tmp/b6

A synthetic run: one real episode (simulated and graded by the toolkit against the loopback stub) copied N times under
new ids, cells, seeds and personas, saved through `Store.save_episode` as a batch saves. `show` then runs in a fresh
process; its peak RSS (ru_maxrss of the child) and wall time are printed as JSON, one line per size.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def measure(db: Path, run_id: str = "big") -> dict:
    """Peak RSS (MB) and wall time (s) of `nextstep show RUN` in a fresh process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "simulator", "show", run_id, "--db", str(db)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, err = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"show failed: {err[-2000:]}")
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", default="20000", help="comma list of run sizes")
    parser.add_argument("--db-dir", type=Path, default=Path("/tmp/nextstep-b6"), help="where the databases are made (and reused)")
    args = parser.parse_args()
    args.db_dir.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.episodes.split(",")):
        db = args.db_dir / f"show-{size}.db"
        if not db.exists():
            started = time.perf_counter()
            generate(db, size)
            print(f"generated {size} episodes in {time.perf_counter() - started:.0f} s: {db}", file=sys.stderr)
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each size in a process of its own
        result = json.loads(subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                                            f"import json, show_scale; print(json.dumps(show_scale.measure(__import__('pathlib').Path({str(db)!r}))))"],
                                           capture_output=True, text=True, check=True).stdout)  # fmt: skip
        print(json.dumps({"episodes": size, **result}), flush=True)


if __name__ == "__main__":
    main()
