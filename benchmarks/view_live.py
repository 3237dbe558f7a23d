"""Live-update latency of `nextstep view` (issue 27): from an episode's commit in the store to its appearance on an
open run page (its count, contact tables and episode list are one live part, replaced together).

    python benchmarks/view_live.py                 # a 24-episode rule-stub batch; needs the test extra and Debian's chromium
    python benchmarks/view_live.py --reps 8

A batch writes against tests/rule_stub.py while Chromium holds the run page open. One thread reads the store every
10 ms and notes when each episode count was first committed; the page notes (MutationObserver, Date.now()) when it
first shows each count. Latency = page time - commit time, per episode. The page polls once a second, so about half a
second is the wait for the next poll; the rest is the server reading the run and the browser drawing it, which the
machine's load moves (the load average is printed beside the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402
from rule_stub import rule_server  # noqa: E402
from test_view import Viewer  # noqa: E402

from simulator.runs.batch import run_grid  # noqa: E402
from simulator.storage.store import Store  # noqa: E402

WATCH = """() => { window.seen = {}; const note = () => { const c = document.querySelector('#count');
  if (c && !(c.textContent in window.seen)) window.seen[c.textContent] = Date.now(); };
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true}); note(); }"""


def commits(db: Path, run_id: str, stop: threading.Event, seen: dict[int, float]) -> None:
    """Note the wall time (ms) at which each episode count of the run was first committed."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    while not stop.is_set():
        try:
            n = conn.execute("SELECT count(*) FROM episodes WHERE run_id = ?", (run_id,)).fetchone()[0]
        except sqlite3.OperationalError:  # the tables not made yet
            n = 0
        seen.setdefault(n, time.time() * 1000)
        time.sleep(0.01)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4, help="reps of 3 personas x 2 strategies (episodes = 6 x reps)")
    parser.add_argument("--latency", type=float, default=0.15, help="the stub's seconds per call")
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "live.db"
    Store(db).close()
    grid = {"personas": "all", "strategies": "common_interest,friends_pretext", "reps": args.reps}
    stored: dict[int, float] = {}
    stop = threading.Event()
    with rule_server(latency=args.latency) as stub, Viewer(db) as site, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        batch = threading.Thread(target=lambda: asyncio.run(run_grid(grid, db=db, base_url=stub, run_id="live", concurrency=1)))
        batch.start()
        with Store.reader(db) as store:  # the page opens once the batch made its run
            while not any(r["id"] == "live" for r in store.runs()):
                time.sleep(0.01)
        page = browser.new_page()
        page.goto(site + "/run/live")
        page.evaluate(WATCH)
        watcher = threading.Thread(target=commits, args=(db, "live", stop, stored))
        watcher.start()
        batch.join()
        time.sleep(3)
        stop.set()
        watcher.join()
        shown = {int(k): v for k, v in page.evaluate("window.seen").items()}
        browser.close()
    first = min(shown)  # counts committed before the page was watching are left out
    lat = [(shown[n] - stored[n]) / 1000 for n in sorted(stored) if n > first and n in shown]
    missed = [n for n in sorted(stored) if n > first and n not in shown]
    lat.sort()
    print(f"episodes measured {len(lat)} (counts skipped because two landed within one poll: {len(missed)})")
    print(f"commit -> page: median {statistics.median(lat):.2f} s, p90 {lat[int(0.9 * (len(lat) - 1))]:.2f} s, "
          f"max {lat[-1]:.2f} s, min {lat[0]:.2f} s")  # fmt: skip
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
