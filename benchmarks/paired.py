"""Client CPU per call of two commits, paired: did a change make the toolkit cost more?

    python benchmarks/paired.py BEFORE [AFTER] [--rounds 10] [--concurrency 64 128]
    python benchmarks/paired.py HEAD --smoke       # seconds: the smoke grid, one round

Each side (a commit, unpacked from git into a temporary folder, or a folder holding a checkout) runs its own
`benchmarks/trial.py toolkit` on the B2/B3 grid against one stub (pinned as in run.py). Each round runs both once, the
order alternating, so slow drift on a shared machine hits both sides alike; the verdict is on the paired differences
(after - before), with the Wilcoxon signed-rank test. AFTER defaults to the working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from run import CLIENT_CPU, FULL, SMOKE, Stub

ROOT = Path(__file__).resolve().parents[1]


def unpack(rev: str, into: Path) -> Path:
    """The code of `rev` (a commit, or a folder holding a checkout, used as it is)."""
    if Path(rev).is_dir():
        return Path(rev).resolve()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def cpu_per_call(tree: Path, url: str, concurrency: int, grid: dict) -> tuple[float, float]:
    """(client CPU ms per call, episodes/s) of one toolkit trial of the code in `tree`."""
    cmd = [sys.executable, str(tree / "benchmarks" / "trial.py"), "toolkit", "--url", url, "--concurrency", str(concurrency),
           "--grid", json.dumps(grid), "--cpu", str(CLIENT_CPU)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=os.environ | {"PYTHONPATH": str(tree)})
    if done.returncode:
        raise RuntimeError(f"trial in {tree} failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return r["cpu_s"] / r["calls"] * 1000, r["episodes"] / r["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a commit, or a folder holding a checkout")
    parser.add_argument("after", nargs="?", help="as BEFORE; the working tree when left out")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--smoke", action="store_true", help="the smoke grid and latency, one round at concurrency 8")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    if args.smoke:
        args.rounds, args.concurrency = 1, [8]
    from scipy.stats import wilcoxon

    with tempfile.TemporaryDirectory() as tmp, Stub(plan.latency) as stub:
        trees = {"before": unpack(args.before, Path(tmp) / "before"),
                 "after": unpack(args.after, Path(tmp) / "after") if args.after else ROOT}  # fmt: skip
        for c in args.concurrency:
            rows = []
            for n in range(args.rounds):
                order = ["before", "after"] if n % 2 == 0 else ["after", "before"]
                rows.append(dict(zip(order, (cpu_per_call(trees[side], stub.url, c, plan.grid) for side in order))))
                print(f"  c={c} round {n + 1}: before {rows[-1]['before'][0]:.3f}, after {rows[-1]['after'][0]:.3f} ms/call",
                      file=sys.stderr, flush=True)  # fmt: skip
            diff = [r["after"][0] - r["before"][0] for r in rows]
            median = {side: statistics.median(r[side][0] for r in rows) for side in trees}
            rate = {side: statistics.median(r[side][1] for r in rows) for side in trees}
            print(f"c={c}, {args.rounds} rounds: client CPU ms/call before {median['before']:.2f}, after {median['after']:.2f}; "
                  f"paired after - before median {statistics.median(diff):+.3f} ms [{min(diff):+.2f}, {max(diff):+.2f}], "
                  f"after higher in {sum(d > 0 for d in diff)}/{len(diff)}, Wilcoxon p {wilcoxon(diff).pvalue if any(diff) else 1:.2f}; "
                  f"episodes/s before {rate['before']:.2f}, after {rate['after']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
