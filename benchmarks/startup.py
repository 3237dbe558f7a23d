"""Wall time of the light commands, from process start to exit: median of N fresh processes (issue 23, item 12).

    python benchmarks/startup.py                 # this checkout, 5 runs each
    python benchmarks/startup.py --repeats 9

Each command runs as `python -m simulator ...` against a copy of tests/fixtures/nextstep-0.1.0.db. The target is
under 0.4 s on 2 cores; the machine's load moves the wall times, so compare two checkouts in one sitting, and read
the CPU time (user + system of the child), which the load moves less.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_DB = ROOT / "tests" / "fixtures" / "nextstep-0.1.0.db"


def commands(db: Path, out: Path) -> dict[str, list[str]]:
    found = {"--help": ["--help"], "runs": ["runs", "--db", str(db)], "show EPISODE": ["show", "2aa7561c5cd7", "--db", str(db)],
             "episodes": ["episodes", "old-batch", "--db", str(db)],
             "export (jsonl)": ["export", "old-batch", "--format", "jsonl", "-o", str(out), "--db", str(db)]}
    return found


def wall(args: list[str], out: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child: user + system, exit code). CPU time moves less with the machine's load."""
    if out:
        out.unlink(missing_ok=True)  # export refuses to replace a file
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "simulator", *args], capture_output=True, cwd=ROOT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu, rc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "n.db"
        shutil.copy(OLD_DB, db)
        wall(["--help"])  # warm the file cache
        out = Path(tmp) / "out.jsonl"
        for name, argv in commands(db, out).items():
            times, cpus, codes = zip(*(wall(argv, out) for _ in range(args.repeats)))
            note = "" if set(codes) == {0} else f"  (exit {sorted(set(codes))})"
            print(f"{name:<16} wall median {statistics.median(times):.3f} s (min {min(times):.3f})  "
                  f"CPU median {statistics.median(cpus):.3f} s{note}")


if __name__ == "__main__":
    main()
