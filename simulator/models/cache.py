"""The response cache every model call passes through: a request asked before is answered from disk, not the endpoint.

A request's key is a hash of everything that decides its answer: the endpoint's identity (never a credential), the
model, the messages, the sampling parameters and the output constraint. Entries live in one SQLite file (WAL, so many
episodes and processes read and write it at once), bounded in size by evicting the least recently used. A damaged file
is reported once and bypassed: a call then goes to the endpoint, never fails for the cache's sake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from simulator.core.errors import ModelError

from .chat import ChatModel, Completion, Message

log = logging.getLogger(__name__)

SCHEMA = "nextstep-cache/1"
FILE_NAME = "responses.db"
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: about a million calls at the default batch's size of answer
BUSY_TIMEOUT_S = 30
TOUCH_AFTER_S = 3600  # a hit refreshes its entry's last use at most this often: reads stay reads
STORED = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "model", "cached_tokens")  # of a Completion

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL,
    used REAL NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS responses_used ON responses (used);
"""


def user_cache_dir() -> Path:
    """Where a user's caches go: $XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nextstep"


def duration(text: str) -> float:
    """Seconds in '90s', '30m', '12h' or '7d': `duration('2h')` -> 7200.0; a bare number is days."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    unit = units.get(text[-1:]) if text else None
    try:
        value = float(text[:-1] if unit else text) * (unit or 86400)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 12h or 7d") from None
    if value <= 0:
        raise ValueError(f"{text!r}: an expiry must be positive")
    return value


def canonical_json(value) -> bytes:
    """`json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))` in UTF-8, made by orjson (a tenth
    of the CPU, on every call) where it writes the same bytes: `canonical_json({'b': 1, 'a': 'é'})` ->
    b'{"a":"\xc3\xa9","b":1}'.

    orjson writes a float json would write with an exponent otherwise (1e-7 and 0.00001 where json writes 1e-07 and
    1e-05; NaN as null), and refuses keys that are not strings: such values go through `json`. Floats are looked for
    among the dict's own values and in its 'messages' (their texts); a request has no others (its JSON schema comes
    from our output types, which hold none: tests/test_cache.py checks every one).
    """
    if not _plain_floats(value):
        return _json_bytes(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a key that is not a string, an integer over 64 bits, a lone surrogate
        return _json_bytes(value)


def _json_bytes(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _plain_floats(value) -> bool:
    """Whether every float among a dict's own values is one json writes without an exponent (as orjson does), and its
    'messages' hold only texts."""
    if not isinstance(value, dict):
        return False
    for v in value.values():
        if isinstance(v, float) and not (v == 0 or 1e-4 <= abs(v) < 1e16):  # NaN and infinities fail both
            return False
    messages = value.get("messages") or []
    return all(isinstance(m, dict) and all(type(v) is str for v in m.values()) for m in messages)


def request_key(endpoint: str, model: str, output_mode: str | None, messages: list[Message], *, schema: dict | None,
                max_tokens: int, temperature: float, seed: int | None, stop: list[str] | None, top_p: float | None = None) -> str:
    """The sha256 of what decides an answer, as canonical JSON; the same request always has the same key."""
    request = {"endpoint": endpoint, "model": model, "messages": messages, "max_tokens": max_tokens,
               "temperature": temperature, "top_p": top_p, "stop": stop, "seed": seed,
               "constraint": schema and {"schema": schema, "mode": output_mode}}  # fmt: skip
    return hashlib.sha256(canonical_json(request)).hexdigest()


def stored(completion: Completion) -> str:
    """What the cache keeps of a completion: the answer and its reported usage, not this call's latency or retries."""
    return json.dumps({k: getattr(completion, k) for k in STORED}, ensure_ascii=False)


def from_stored(data: str) -> Completion:
    """A completion back from `stored`; ValueError if the entry is not one."""
    value = json.loads(data)
    if not isinstance(value, dict) or not isinstance(value.get("text"), str) or set(value) - set(STORED):
        raise ValueError("not a stored completion")
    return Completion(**value)


@dataclass
class ResponseCache:
    """A SQLite file of responses by request key: `cache.get(key)`, `cache.put(key, completion)`.

    `max_bytes` bounds the file's used pages; `expiry_s` makes older entries misses. Every SQLite error (a damaged
    file, a full disk, a lock held too long) turns the cache off for this process with one warning.
    """

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    expiry_s: float | None = None
    broken: str | None = None  # why the cache is bypassed
    conn: sqlite3.Connection | None = field(default=None, repr=False)
    unchecked: int = 0  # bytes written since the size bound was last checked
    skipped_entry: bool = False  # an unreadable entry was reported already

    @classmethod
    def open(cls, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, expiry_s: float | None = None) -> ResponseCache:
        cache = cls(Path(directory) / FILE_NAME, max_bytes, expiry_s)
        cache._guard(cache._connect)
        return cache

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")  # in WAL: a commit survives a killed process, not a power cut
        self.conn.executescript(_TABLES)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        found = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        if found != SCHEMA:
            raise sqlite3.DatabaseError(f"schema {found}, not {SCHEMA}")
        self._evict()

    def _guard(self, action, *args):
        """Run a database action; the first error turns the cache off, with one warning saying where and why."""
        if self.broken:
            return None
        try:
            return action(*args)
        except (sqlite3.Error, OSError) as e:
            self.broken = f"{type(e).__name__}: {e}"
            log.warning("response cache %s is unusable (%s): calls go to the endpoint; `nextstep cache clear` resets it",
                        self.path, self.broken)
            self.close()
            return None

    def get(self, key: str) -> Completion | None:
        """The stored answer to a request, or None (not there, expired, unreadable, or the cache is off)."""
        return self._guard(self._get, key)

    def _get(self, key: str) -> Completion | None:
        row = self.conn.execute("SELECT response, created, used FROM responses WHERE key = ?", (key,)).fetchone()
        now = time.time()
        if row is None or (self.expiry_s is not None and row[1] < now - self.expiry_s):
            return None
        try:
            completion = from_stored(row[0])
        except (ValueError, TypeError):
            self._damaged_entry(key)
            return None
        if row[2] < now - TOUCH_AFTER_S:
            self.conn.execute("UPDATE responses SET used = ? WHERE key = ?", (now, key))
        return completion

    def _damaged_entry(self, key: str) -> None:
        if not self.skipped_entry:
            self.skipped_entry = True
            log.warning("response cache %s: an unreadable entry was skipped and will be asked again", self.path)
        self.conn.execute("DELETE FROM responses WHERE key = ?", (key,))

    def put(self, key: str, completion: Completion) -> None:
        self._guard(self._put, key, stored(completion))

    def _put(self, key: str, data: str) -> None:
        now = time.time()
        self.conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", (key, data, now, now, len(key) + len(data)))
        self.unchecked += len(key) + len(data)
        if self.unchecked > self.max_bytes // 50:  # the bound is checked after every 2% of it written
            self._evict()

    def used_bytes(self) -> int:
        """Bytes of the file's pages in use (freed pages are reused, so this is what the bound holds)."""
        pages, free, size = (self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def _evict(self) -> None:
        """Delete the least recently used entries until the file's used pages are under 90% of the bound."""
        self.unchecked = 0
        used = self.used_bytes()
        if used <= 0.95 * self.max_bytes:
            return
        count = self.conn.execute("SELECT count(*) FROM responses").fetchone()[0]
        drop = max(1, int(count * (1 - 0.9 * self.max_bytes / used)) + 1)
        self.conn.execute("DELETE FROM responses WHERE key IN (SELECT key FROM responses ORDER BY used LIMIT ?)", (drop,))

    def info(self) -> dict:
        """Entries, bytes in use, on disk, the oldest and newest entry's time; `broken` when unreadable."""
        def read():
            entries, oldest, newest = self.conn.execute("SELECT count(*), min(created), max(created) FROM responses").fetchone()
            disk = sum(p.stat().st_size for p in self._files() if p.exists())
            return {"entries": entries, "used_bytes": self.used_bytes(), "disk_bytes": disk, "oldest": oldest, "newest": newest}

        found = self._guard(read) or {}
        return {"path": str(self.path), "max_bytes": self.max_bytes, "expiry_s": self.expiry_s, "broken": self.broken, **found}

    def _files(self) -> list[Path]:
        return [self.path, self.path.with_name(FILE_NAME + "-wal"), self.path.with_name(FILE_NAME + "-shm")]

    def clear(self) -> int:
        """Remove every entry; a damaged file is deleted outright. Returns how many entries were removed (-1: unknown)."""
        if not self.broken and self.conn is not None:
            try:
                removed = self.conn.execute("DELETE FROM responses").rowcount
                self.conn.execute("VACUUM")
                return removed
            except sqlite3.Error:
                pass
        self.close()
        for p in self._files():
            p.unlink(missing_ok=True)
        return -1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Responses:
    """A read-only set of responses by key (a replay bundle's): a request not in it is an error, never the endpoint."""

    def __init__(self, responses: dict[str, str], source: str):
        self.responses, self.source = responses, source

    def get(self, key: str) -> Completion | None:
        if key not in self.responses:
            raise ModelError(f"{self.source} holds no response to this request (key {key[:12]}); it cannot be replayed")
        return from_stored(self.responses[key])

    def put(self, key: str, completion: Completion) -> None:
        raise AssertionError("a replay never reaches an endpoint")


class CachedModel:
    """A chat model whose answers come from `cache` when it has them, and go into it when it did not.

    A sampled request without a seed (temperature above 0) is asked every time: its answers are meant to differ.
    """

    def __init__(self, model: ChatModel, cache: ResponseCache | Responses, endpoint: str):
        self.model, self.cache, self.endpoint = model, cache, endpoint
        self.name = model.name
        self.output_mode = getattr(model, "output_mode", None)
        self.price = getattr(model, "price", None)  # what a call that reaches the endpoint costs (models/prices.py)

    async def complete(self, messages: list[Message], *, schema: dict | None = None, max_tokens: int = 128,
                       temperature: float = 0.7, seed: int | None = None, stop: list[str] | None = None) -> Completion:
        key = request_key(self.endpoint, self.name, self.output_mode, messages, schema=schema, max_tokens=max_tokens,
                          temperature=temperature, seed=seed, stop=stop)  # fmt: skip
        if seed is None and temperature > 0 and isinstance(self.cache, ResponseCache):
            return replace(await self.model.complete(messages, schema=schema, max_tokens=max_tokens,
                                                     temperature=temperature, seed=seed, stop=stop), key=key)  # fmt: skip
        start = time.perf_counter()
        if (hit := self.cache.get(key)) is not None:
            return replace(hit, latency_s=time.perf_counter() - start, from_cache=True, key=key, cost_usd=0.0)  # nothing paid
        completion = await self.model.complete(messages, schema=schema, max_tokens=max_tokens, temperature=temperature,
                                               seed=seed, stop=stop)  # fmt: skip
        self.cache.put(key, completion)
        return replace(completion, key=key)


