"""How the response cache's storage compares: our SQLite file, `diskcache`, and one JSON file per response.

    python benchmarks/cache_storage.py [N]     # N responses (default 5000); diskcache is measured if installed

Per store: microseconds per write, per hit and per miss in one process; the microseconds per write while 4
processes write N/4 responses each into one store at once (and whether any write failed); bytes on disk per response. A response is what
the cache keeps of a completion (about 300 bytes: a line of dialogue or a small JSON answer, and its usage).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.models.cache import ResponseCache, request_key, stored  # noqa: E402
from simulator.models.chat import Completion  # noqa: E402

ANSWER = Completion(text=json.dumps({"interest": 6, "comfort": 5, "intent": "chat", "reason": "x" * 180}), finish_reason="stop",
                    prompt_tokens=812, completion_tokens=41, model="SmolLM2-135M-Instruct")


def key(n: int) -> str:
    return request_key("http://127.0.0.1:8000/v1", "m", None, [{"role": "user", "content": f"turn {n}"}], schema=None,
                       max_tokens=64, temperature=0.7, seed=n, stop=None)


class Ours:
    def __init__(self, d):
        self.c = ResponseCache.open(d)

    def put(self, k, v):
        self.c.put(k, v)

    def get(self, k):
        return self.c.get(k)

    def close(self):
        self.c.close()


class Disk:
    def __init__(self, d):
        import diskcache

        self.c = diskcache.Cache(str(d))

    def put(self, k, v):
        self.c.set(k, stored(v))

    def get(self, k):
        return self.c.get(k)

    def close(self):
        self.c.close()


class Files:
    def __init__(self, d):
        self.d = Path(d)
        self.d.mkdir(parents=True, exist_ok=True)

    def put(self, k, v):
        path = self.d / k[:2] / k
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(stored(v))
        os.replace(tmp, path)

    def get(self, k):
        try:
            return (self.d / k[:2] / k).read_text()
        except FileNotFoundError:
            return None

    def close(self):
        pass


KINDS = {"sqlite (ours)": Ours, "diskcache": Disk, "file per response": Files}


def _writer(kind: str, d: str, start: int, n: int, failures, seconds, go) -> None:
    store = KINDS[kind](d)
    keys = [key(i) for i in range(start, start + n)]
    go.wait()
    t = time.perf_counter()
    for k in keys:
        try:
            store.put(k, ANSWER)
        except Exception:  # noqa: BLE001 - a measurement: count, do not stop
            failures.value += 1
    seconds.value += time.perf_counter() - t
    if isinstance(store, Ours) and store.c.broken:
        failures.value += 1


def measure(kind: str, n: int) -> dict:
    d = tempfile.mkdtemp()
    store = KINDS[kind](d)
    keys = [key(i) for i in range(n)]
    t = time.perf_counter()
    for k in keys:
        store.put(k, ANSWER)
    write = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for k in keys:
        assert store.get(k) is not None
    hit = (time.perf_counter() - t) / n * 1e6
    absent = [key(n + i) for i in range(n)]
    t = time.perf_counter()
    for k in absent:
        assert store.get(k) is None
    miss = (time.perf_counter() - t) / n * 1e6
    store.close()
    disk = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
    shutil.rmtree(d)
    d = tempfile.mkdtemp()
    ctx = multiprocessing.get_context("spawn")
    failures, seconds, go = ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(kind, d, i * (n // 4), n // 4, failures, seconds, go)) for i in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    while not all(p.is_alive() for p in procs):
        time.sleep(0.1)
    time.sleep(3)  # every writer has imported and made its keys
    go.set()
    for p in procs:
        p.join()
    shutil.rmtree(d)
    return {"write_us": write, "hit_us": hit, "miss_us": miss, "bytes_per_response": disk / n,
            "contended_write_us": seconds.value / n * 1e6, "failures": failures.value}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    t = time.perf_counter()
    for _ in range(n):
        key(1)
    print(f"making a key: {(time.perf_counter() - t) / n * 1e6:.1f} µs")
    print("| store | write µs | hit µs | miss µs | bytes / response | write µs, 4 processes at once | failed writes |")
    print("|---|---|---|---|---|---|---|")
    for kind in KINDS:
        try:
            r = measure(kind, n)
        except ImportError:
            continue
        print(f"| {kind} | {r['write_us']:.0f} | {r['hit_us']:.0f} | {r['miss_us']:.0f} | {r['bytes_per_response']:,.0f} | "
              f"{r['contended_write_us']:.0f} | {r['failures']} |")


if __name__ == "__main__":
    main()
