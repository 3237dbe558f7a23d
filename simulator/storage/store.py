"""Runs and episodes in one SQLite file: plain columns to filter and aggregate on, plus each full record as JSON."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from simulator.core.errors import StorageError, UserError
from simulator.core.files import replacing, validation_message
from simulator.core.records import Episode, RunSpec, Verdict, is_contact, package_version

log = logging.getLogger(__name__)

SCHEMA = "nextstep/1"
BUSY_TIMEOUT_S = 30  # how long a connection waits for another's write before it gives up
# Columns added after databases were made: created on open when missing, so older files keep working.
ADDED_COLUMNS = {"parent_id": "TEXT", "fork_turn": "INTEGER", "arm": "TEXT", "person": "TEXT", "usable": "INTEGER",
                 "cost_usd": "REAL"}  # fmt: skip
ADDED_CALL_COLUMNS = {"from_cache": "INTEGER NOT NULL DEFAULT 0",  # older calls never came from the response cache
                      "cached_tokens": "INTEGER", "cost_usd": "REAL"}  # fmt: skip
# Tables added after databases were made: created on open when missing (a read-only open skips this and finds none).
ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS episode_history (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, cell TEXT NOT NULL, rep INTEGER NOT NULL,
    episode_id TEXT NOT NULL, status TEXT NOT NULL, error TEXT, record_json TEXT NOT NULL, replaced_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS writers (run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, token TEXT NOT NULL,
    since TEXT NOT NULL, beat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fitness (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, ablation_run_id TEXT,
    protocol_hash TEXT NOT NULL, overall TEXT NOT NULL, saved_at TEXT NOT NULL, verdict_json TEXT NOT NULL)
"""
STATUS_RANK = {"failed": 0, "ungraded": 1, "succeeded": 2}  # a save never puts a lower one in place of a higher one
LEASE_S = 120  # a writer on another host that has not beaten its heartbeat for this long has stopped
BEAT_S = 10  # how often a writer beats
SETTINGS_KEY = "run_settings"  # in runs.spec_json beside the spec; Store.run() returns it apart, as 'settings'

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, spec_json TEXT NOT NULL, version TEXT NOT NULL);
CREATE TABLE episodes (id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id), cell TEXT NOT NULL, rep INTEGER NOT NULL,
    setting TEXT, persona TEXT, strategy TEXT, practitioner_gender TEXT, persona_gender TEXT, seed INTEGER, started_at TEXT,
    status TEXT NOT NULL, error TEXT, backend TEXT, practitioner_model TEXT, persona_model TEXT, exchanged TEXT,
    next_meeting TEXT, asked INTEGER, first_ask_turn INTEGER, final_interest INTEGER, final_comfort INTEGER, end_reason TEXT,
    ended_by TEXT, fidelity_ok INTEGER, n_turns INTEGER, n_calls INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s REAL, duration_s REAL, saved_at TEXT NOT NULL, provenance_json TEXT, record_json TEXT NOT NULL,
    UNIQUE (run_id, cell, rep));
CREATE TABLE turns (episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE, turn INTEGER NOT NULL, speaker TEXT,
    text TEXT, intent TEXT, interest INTEGER, comfort INTEGER, shares_contact INTEGER, PRIMARY KEY (episode_id, turn));
CREATE TABLE calls (episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE, n INTEGER NOT NULL, judge INTEGER,
    role TEXT, purpose TEXT, model TEXT, seed INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL,
    finish_reason TEXT, retries INTEGER, ok INTEGER, error TEXT);
CREATE TABLE verdicts (episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE, judge INTEGER NOT NULL,
    model TEXT, seed INTEGER, temperature REAL, rubric_hash TEXT, n_unscored INTEGER, flags_status TEXT, outcome_status TEXT,
    verdict_json TEXT NOT NULL, PRIMARY KEY (episode_id, judge));
CREATE TABLE verdict_history (id INTEGER PRIMARY KEY, episode_id TEXT NOT NULL, judge INTEGER, model TEXT,
    verdict_json TEXT NOT NULL, replaced_at TEXT NOT NULL);
CREATE TABLE scores (episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE, judge INTEGER NOT NULL,
    transition INTEGER NOT NULL, transition_turn INTEGER, ask_turn INTEGER, has_ask INTEGER, source TEXT,
    condition TEXT NOT NULL, status TEXT, score INTEGER, turn INTEGER, quote TEXT, reason TEXT,
    PRIMARY KEY (episode_id, judge, transition, condition));
CREATE TABLE flags (episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE, judge INTEGER NOT NULL, flag TEXT,
    turn INTEGER, quote TEXT, reason TEXT);
CREATE TABLE prompts (hash TEXT PRIMARY KEY, name TEXT, text TEXT);
CREATE TABLE errors (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, cell TEXT NOT NULL, rep INTEGER NOT NULL,
    episode_id TEXT, error TEXT, at TEXT NOT NULL);
CREATE INDEX calls_episode ON calls (episode_id);
CREATE INDEX flags_episode ON flags (episode_id);
"""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def plain(value):
    """A value SQLite can hold: `plain({'a': 1})` -> '{"a": 1}'; `plain(True)` -> True (stored as 1)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def pick(record, *names: str) -> dict:
    """Those attributes of a record, None where it has none: `pick(episode.usage, 'calls')` -> {'calls': 3}."""
    return {n: getattr(record, n, None) for n in names}


def covers(new, old) -> bool:
    """Whether `new` has everything `old` has, unchanged: `covers({'a': 1, 'b': 2}, {'a': 1})` -> True."""
    if isinstance(new, dict) and isinstance(old, dict):
        return all(k in new and covers(new[k], v) for k, v in old.items())
    return new == old


def _alive(writer) -> bool:
    """Whether a `writers` row is a writer still at work: its heartbeat is recent, and on this host its process runs."""
    if time.time() - writer["beat"] > LEASE_S:
        return False
    if writer["host"] != socket.gethostname():
        return True
    try:
        os.kill(writer["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def insert(conn: sqlite3.Connection, table: str, row: dict, verb: str = "INSERT") -> None:
    """Insert a dict as one row; column names come from our own code, never from records."""
    insert_rows(conn, table, [row], verb)


def insert_rows(conn: sqlite3.Connection, table: str, rows: list[dict], verb: str = "INSERT") -> None:
    """Insert dicts with the same keys, in one statement run for each (an episode's calls, turns, scores)."""
    if rows:
        cols = ", ".join(rows[0])
        conn.executemany(f"{verb} INTO {table} ({cols}) VALUES ({', '.join('?' * len(rows[0]))})",
                         [[plain(v) for v in row.values()] for row in rows])  # fmt: skip


def resolve(given: str, ids: list[str], kind: str, where: Path) -> str:
    """The id `given` names, whole or as a unique prefix of one of `ids`; else a UserError listing the candidates
    (ambiguous) or the closest ids (unknown): `resolve('run-3e', ['run-3efd', 'run-77aa'], 'run', p)` -> 'run-3efd'."""
    if given in ids:
        return given
    found = sorted(i for i in ids if i.startswith(given))
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        raise UserError(f"{given!r} is the start of more than one {kind} id in {where}: {shown}; give more of it")
    close = closest(given, ids)
    raise UserError(f"no {kind} {given!r} in {where}" + (f"; the closest: {', '.join(close)}" if close else ""))


def closest(given: str, ids: list[str]) -> list[str]:
    """Up to three ids `given` may have meant, compared whole and by their start (a mistyped prefix):
    `closest('alpah', ['alpha-1', 'beta'])` -> ['alpha-1']."""
    starts: dict[str, list[str]] = {}
    for i in ids:
        starts.setdefault(i[: len(given)], []).append(i)
    near = difflib.get_close_matches(given, list(starts), n=3, cutoff=0.7)
    found = [i for start in near for i in starts[start]] + difflib.get_close_matches(given, ids, n=3, cutoff=0.6)
    return list(dict.fromkeys(found))[:3]


class Store:
    """A nextstep database: `with Store(path) as db: db.create_run('r1', spec)`."""

    def __init__(self, path: Path, *, read_only: bool = False):
        self.path = Path(path)
        self._claims: dict[str, str] = {}  # run id -> the token of this Store's claim on it
        self._beating: threading.Event | None = None  # set to stop the heartbeat thread
        # A file that cannot be written here (read-only media, an archive) is opened for reading only: nothing to migrate.
        self.read_only = read_only or (self.path.is_file() and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)))
        self.conn = self._connect()
        try:
            self._open_read_only() if self.read_only else self._open()
        except sqlite3.OperationalError as e:  # locked, unwritable directory: about access, not the file's contents
            self.conn.close()
            raise UserError(f"{self.path}: {e}") from None
        except sqlite3.DatabaseError:  # "file is not a database"
            self.conn.close()
            raise UserError(f"{self.path}: not a nextstep database") from None
        except UserError:
            self.conn.close()
            raise

    @classmethod
    def reader(cls, path: Path) -> Store:
        """Open a database for reading only (SQLite `mode=ro`), even one this user could write: it never writes the file
        nor waits for a writer's lock, so a viewer can read while a batch writes (WAL readers see the last commit)."""
        if not Path(path).is_file():
            raise UserError(f"{path}: no such database")
        store = cls(path, read_only=True)
        have = {t: {row[1] for row in store.conn.execute(f"PRAGMA table_info({t})")} for t in ("episodes", "calls")}
        if missing := [f"{t}.{c}" for t, cols in (("episodes", ADDED_COLUMNS), ("calls", ADDED_CALL_COLUMNS)) for c in cols
                       if c not in have[t]]:  # fmt: skip
            store.close()
            raise UserError(f"{path}: made by an older nextstep (no {', '.join(missing)}); any nextstep command that writes it "
                            f"(e.g. `nextstep runs --db {path}`) brings it up to date")  # fmt: skip
        return store

    def last_saved(self, run_id: str) -> str | None:
        """When the run's newest episode was saved (ISO, UTC), None before its first."""
        return self.conn.execute("SELECT max(saved_at) FROM episodes WHERE run_id = ?", (run_id,)).fetchone()[0]

    def _connect(self, immutable: bool = False) -> sqlite3.Connection:
        # Autocommit mode: every write goes through `_tx`, which takes the write lock up front.
        # check_same_thread=False: a batch hands all its writes to one dedicated writer thread.
        where, uri = (f"{self.path.resolve().as_uri()}?{'immutable=1' if immutable else 'mode=ro'}", True) if self.read_only else (self.path, False)
        conn = sqlite3.connect(where, uri=uri, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def _open_read_only(self) -> None:
        """Read a file that cannot be written; a WAL database whose shared-memory file cannot be made is read as immutable."""
        try:
            found = self._schema()
        except sqlite3.OperationalError:
            self.conn.close()
            self.conn = self._connect(immutable=True)
            found = self._schema()
        if found != SCHEMA:
            raise UserError(f"{self.path}: schema {found}, but this nextstep reads {SCHEMA}" if found and found.startswith("nextstep/")
                            else f"{self.path}: not a nextstep database")  # fmt: skip

    def _open(self) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self._schema() == "":  # checked before WAL, which would change someone else's file
            raise UserError(f"{self.path}: not a nextstep database")
        self._wal()
        for pragma in ("synchronous = NORMAL", "foreign_keys = ON"):
            self.conn.execute(f"PRAGMA {pragma}")
        # Check and create in one write transaction, so two processes opening a new file don't both create.
        with self._tx() as conn:
            if self._schema() is None:
                for statement in filter(str.strip, _TABLES.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA,))
        if (found := self._schema()) != SCHEMA:
            ours = found.startswith("nextstep/")
            raise UserError(f"{self.path}: schema {found}, but this nextstep reads {SCHEMA}" if ours
                            else f"{self.path}: not a nextstep database")  # fmt: skip
        with self._tx() as conn:
            for table, columns in (("episodes", ADDED_COLUMNS), ("calls", ADDED_CALL_COLUMNS)):
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for statement in filter(str.strip, ADDED_TABLES.split(";")):
                conn.execute(statement)

    def _wal(self) -> None:
        """Switch to WAL, waiting for other writers as every write here does.

        A new file is in rollback mode until a Store switches it, and that switch writes the file. While another
        connection writes to a rollback-mode file, SQLite refuses the switch at once ('database is locked') instead of
        waiting the busy timeout, so two processes opening one new database together would fail: hence the retries.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _schema(self) -> str | None:
        """The schema named in meta: None for an empty file, '' for SQLite that is not ours."""
        names = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master")}  # a non-SQLite file fails here
        if not names:
            return None
        row = "meta" in names and self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        return str(row[0]) if row else ""

    @contextmanager
    def _tx(self):
        """One write transaction; SQLite's failures (full disk, a lock held past the busy timeout, a damaged file, a
        read-only file) become a StorageError naming the file."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StorageError(f"{self.path}: cannot write: {e}") from None

    def close(self) -> None:
        self.release()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create_run(self, run_id: str, spec: RunSpec, settings: dict | None = None) -> None:
        """Register a run, or resume it: the same spec again is accepted, a different one refused.

        `settings` (endpoint, models, directories: what a resume needs) are kept in spec_json under 'run_settings', are
        no part of the run's identity, and are replaced by the latest ones. A run stored before settings were kept
        has fewer spec fields: it resumes as long as every field it has is unchanged. The schema version is kept
        beside the spec and is no part of its identity either, so a run stored by 0.1.0 resumes.
        """
        version = {"schema_version": spec.schema_version} | ({"planned": spec.planned} if spec.planned is not None else {})
        spec = spec.identity()
        with self._tx() as conn:
            row = conn.execute("SELECT spec_json FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                insert(conn, "runs", {"id": run_id, "created_at": now(), "version": package_version(),
                                      "spec_json": dumps(spec | version | {SETTINGS_KEY: settings or {}})})  # fmt: skip
                return
            stored = json.loads(row[0])
            older = SETTINGS_KEY not in stored
            stored.pop(SETTINGS_KEY, None)
            stored.pop("schema_version", None)
            planned = stored.pop("planned", None)
            version.setdefault("planned", planned)
            # A template added since the run was made (a newer nextstep) is no change to the ones it has.
            same = lambda k: covers(spec.get(k), stored.get(k)) if older or k == "prompts" else spec.get(k) == stored.get(k)  # noqa: E731
            if differ := [k for k in sorted(stored.keys() | spec.keys()) if (k in stored or not older) and not same(k)]:
                raise UserError(f"run {run_id!r} in {self.path} was made with a different {', '.join(differ)}; start a new run instead")
            if settings is not None or version.get("planned") != planned:
                settings = settings if settings is not None else json.loads(row[0]).get(SETTINGS_KEY)
                kept = {SETTINGS_KEY: settings} if settings is not None else {}
                conn.execute("UPDATE runs SET spec_json = ? WHERE id = ?", (dumps(spec | version | kept), run_id))

    def resolve_run(self, run_id: str) -> str:
        """A run's full id from its id or a unique prefix (a UserError lists the candidates, or the closest)."""
        return resolve(run_id, [r[0] for r in self.conn.execute("SELECT id FROM runs")], "run", self.path)

    def find(self, given: str) -> tuple[str, str]:
        """('run', id) or ('episode', id) for a run or episode id, or a unique prefix of one of them."""
        runs = [r[0] for r in self.conn.execute("SELECT id FROM runs")]
        if given in runs:
            return "run", given
        if self.conn.execute("SELECT 1 FROM episodes WHERE id = ?", (given,)).fetchone():
            return "episode", given
        episodes = [r[0] for r in self.conn.execute("SELECT id FROM episodes WHERE substr(id, 1, ?) = ?", (len(given), given))]
        found = [("run", i) for i in runs if i.startswith(given)] + [("episode", i) for i in episodes]
        if len(found) == 1:
            return found[0]
        if found:
            shown = ", ".join(f"{kind} {i}" for kind, i in found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
            raise UserError(f"{given!r} is the start of more than one id in {self.path}: {shown}; give more of it")
        every = runs + [r[0] for r in self.conn.execute("SELECT id FROM episodes")]
        close = closest(given, every)
        raise UserError(f"no run or episode {given!r} in {self.path}" + (f"; the closest: {', '.join(close)}" if close else ""))

    def completion(self, run_id: str) -> dict:
        """How far a run is: {'done' (succeeded), 'planned' (None: open-ended), 'failed', 'ungraded', 'complete'
        (None if nothing was planned), 'balanced' (every planned cell holds as many succeeded episodes), 'resume'
        (the command that continues it, None if there is none)}. Every view of a run says this."""
        run = self.run(run_id)
        spec, counts = run["spec"], run["counts"]
        done, planned = counts.get("succeeded", 0), spec.planned
        cells = dict(self.conn.execute("SELECT cell, sum(status = 'succeeded') FROM episodes WHERE run_id = ? GROUP BY cell",
                                       (run_id,)).fetchall())  # fmt: skip
        reps = (spec.experiment or spec.branch or {}).get("reps")
        expected = planned // reps if planned and reps else None  # cells of the plan
        filled = [n for n in cells.values() if n]
        balanced = len(set(filled)) <= 1 and (expected is None or len(filled) in (0, expected))
        return {"done": done, "planned": planned, "failed": counts.get("failed", 0), "ungraded": counts.get("ungraded", 0),
                "complete": None if planned is None else done >= planned, "balanced": balanced,
                "resume": resume_command(run["id"], spec, self.path)}  # fmt: skip

    def run(self, run_id: str) -> dict:
        """{'id', 'created_at', 'spec' (a RunSpec), 'settings' (None: stored before settings were kept), 'version', 'counts'}."""
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            self.resolve_run(run_id)  # says which runs were meant
            raise UserError(f"no run {run_id!r} in {self.path} (give its whole id here)")
        counts = self.conn.execute("SELECT status, count(*) FROM episodes WHERE run_id = ? GROUP BY status", (run_id,))
        spec = json.loads(row["spec_json"])
        settings = spec.pop(SETTINGS_KEY, None)
        return {"id": row["id"], "created_at": row["created_at"], "spec": self._valid(RunSpec, spec, f"run {run_id}"),
                "settings": settings, "version": row["version"], "counts": dict(counts.fetchall())}  # fmt: skip

    def runs(self) -> list[dict]:
        """Every run, newest first, with episode counts, the episodes planned (None: open-ended), tokens spent at the
        endpoint and tokens saved by the response cache (either None: some call's endpoint reported no usage), and what
        was spent in US dollars (None: some call's price or usage is unknown)."""
        rows = self.conn.execute("""
            SELECT r.id, r.created_at, count(e.id) AS episodes, json_extract(r.spec_json, '$.planned') AS planned,
                   coalesce(sum(e.status = 'succeeded'), 0) AS succeeded, coalesce(sum(e.status = 'ungraded'), 0) AS ungraded,
                   coalesce(sum(e.status = 'failed'), 0) AS failed,
                   CASE WHEN sum(e.n_calls > 0 AND (e.prompt_tokens IS NULL OR e.completion_tokens IS NULL)) > 0 THEN NULL
                        ELSE coalesce(sum(e.prompt_tokens + e.completion_tokens), 0) END AS tokens,
                   (SELECT CASE WHEN sum(c.prompt_tokens IS NULL OR c.completion_tokens IS NULL) > 0 THEN NULL
                                ELSE coalesce(sum(c.prompt_tokens + c.completion_tokens), 0) END
                    FROM calls c JOIN episodes x ON x.id = c.episode_id WHERE x.run_id = r.id AND c.from_cache) AS saved_tokens,
                   CASE WHEN sum(e.n_calls > 0 AND e.cost_usd IS NULL) > 0 THEN NULL ELSE coalesce(sum(e.cost_usd), 0) END AS cost_usd
            FROM runs r LEFT JOIN episodes e ON e.run_id = r.id
            GROUP BY r.id ORDER BY r.created_at DESC, r.rowid DESC""")  # fmt: skip
        return [dict(row) for row in rows]

    def save_episode(self, run_id: str, cell: str, rep: int, episode: Episode) -> None:
        """Store one episode (as the run's `cell`, `rep`) with its child rows.

        A retried (cell, rep) replaces the earlier attempt unless that one got further (succeeded beats ungraded beats
        failed): a late failure never takes a success's place. The attempt not kept goes to episode_history.
        """
        with self._tx() as conn:
            self._check_run(run_id)
            old = conn.execute("SELECT id, status, error, record_json FROM episodes WHERE run_id = ? AND cell = ? AND rep = ?",
                               (run_id, cell, rep)).fetchone()  # fmt: skip
            if old and STATUS_RANK[old["status"]] > STATUS_RANK[episode.status]:
                self._keep_attempt(run_id, cell, rep, episode.id, episode.status, episode.error, episode.model_dump_json())
                insert(conn, "errors", {"run_id": run_id, "cell": cell, "rep": rep, "episode_id": episode.id,
                                        "error": episode.error, "at": now()})  # fmt: skip
                return
            if old:
                self._keep_attempt(run_id, cell, rep, *old)
            # Deleting first cascades to the earlier attempt's turns, calls, verdicts, scores and flags.
            conn.execute("DELETE FROM episodes WHERE run_id = ? AND cell = ? AND rep = ?", (run_id, cell, rep))
            self._insert_episode(run_id, cell, rep, episode)

    def add_episode(self, run_id: str, cell: str, episode: Episode) -> int:
        """Store one more episode of `cell` as its next repetition and return that rep; it never replaces one.

        The rep is chosen inside the insert's own write transaction, so two sessions saving the same cell at once
        (two `nextstep play` terminals) each get their own.
        """
        with self._tx() as conn:
            self._check_run(run_id)
            rep = conn.execute("SELECT coalesce(max(rep) + 1, 0) FROM episodes WHERE run_id = ? AND cell = ?",
                               (run_id, cell)).fetchone()[0]  # fmt: skip
            self._insert_episode(run_id, cell, rep, episode)
        return rep

    def _check_run(self, run_id: str) -> None:
        if self.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise UserError(f"no run {run_id!r} in {self.path}")

    def _insert_episode(self, run_id: str, cell: str, rep: int, episode: Episode) -> None:
        """The episode's row and child rows, inside the caller's transaction."""
        conn, episode = self.conn, episode.model_copy(update={"run_id": run_id, "cell": cell, "rep": rep})
        insert(conn, "episodes", self._episode_row(episode))
        insert_rows(conn, "turns", [{"episode_id": episode.id, "turn": t.index,
                                     **pick(t, "speaker", "text", "intent", "interest", "comfort", "shares_contact")}
                                    for t in episode.turns])  # fmt: skip
        self._insert_calls(episode.id, None, episode.calls)
        self._insert_verdicts(episode.id, episode.verdicts)
        if prov := episode.provenance:
            insert_rows(conn, "prompts", [{"hash": digest, "name": name, "text": prov.prompt_texts.get(digest)}
                                          for name, digest in prov.prompts.items()], "INSERT OR IGNORE")  # fmt: skip
        if episode.status != "succeeded":
            insert(conn, "errors", {"run_id": run_id, "cell": cell, "rep": rep, "episode_id": episode.id,
                                    "error": episode.error, "at": now()})  # fmt: skip

    def _keep_attempt(self, run_id: str, cell: str, rep: int, episode_id: str, status: str, error: str | None, record_json: str) -> None:
        insert(self.conn, "episode_history", {"run_id": run_id, "cell": cell, "rep": rep, "episode_id": episode_id,
                                              "status": status, "error": error, "record_json": record_json, "replaced_at": now()})  # fmt: skip

    # --- one writer per run: a lease with the holder's pid, host and a heartbeat ----------------------------------------

    def claim(self, run_id: str) -> None:
        """Become the run's only writer, or a UserError naming the live writer that holds it.

        A holder is stale (and taken over) when its heartbeat is older than LEASE_S, or at once when it ran on this host
        and its process is gone (killed, even by SIGKILL).
        """
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM writers WHERE run_id = ?", (run_id,)).fetchone()
            if row and row["token"] != self._token(run_id) and _alive(row):
                raise UserError(f"run {run_id!r} in {self.path} is being written by pid {row['pid']} on {row['host']} "
                                f"since {row['since']}; wait for it to end, or stop it and resume")  # fmt: skip
            self._claims[run_id] = token = self._token(run_id) or secrets.token_hex(8)
            insert(conn, "writers", {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "token": token,
                                     "since": now(), "beat": time.time()}, "INSERT OR REPLACE")  # fmt: skip

        if not self._beating:
            self._beating = threading.Event()
            threading.Thread(target=self._beat, args=(self._beating,), daemon=True, name="nextstep-heartbeat").start()

    def _beat(self, stop: threading.Event) -> None:
        """Every BEAT_S, tell other processes this Store still writes its claimed runs (on a connection of its own)."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            while not stop.wait(BEAT_S):
                try:
                    conn.executemany("UPDATE writers SET beat = ? WHERE token = ?", [(time.time(), t) for t in list(self._claims.values())])
                except sqlite3.Error as e:  # a full disk or a long lock: the next beat tries again
                    log.debug("%s: heartbeat not written: %s", self.path, e)
        finally:
            conn.close()

    def release(self) -> None:
        """Let go of every run this Store claimed (closing it does too)."""
        if self._beating:
            self._beating.set()
            self._beating = None
        tokens, self._claims = list(self._claims.values()), {}
        if tokens:
            try:
                with self._tx() as conn:
                    conn.executemany("DELETE FROM writers WHERE token = ?", [(t,) for t in tokens])
            except StorageError:  # left for the next writer to find stale (this process will be gone)
                pass

    def _token(self, run_id: str) -> str | None:
        return self._claims.get(run_id)

    def _episode_row(self, e: Episode) -> dict:
        prov, branch = e.provenance, e.branch
        return {
            **pick(e, "id", "run_id", "cell", "rep", "status", "setting", "persona", "strategy", "seed", "started_at", "error",
                   "duration_s", "person"),
            **pick(e.profile, "practitioner_gender", "persona_gender"),
            "backend": prov and prov.backend,
            "practitioner_model": prov and prov.models.get("practitioner"), "persona_model": prov and prov.models.get("persona"),
            **pick(e.outcome, "exchanged", "next_meeting", "asked", "first_ask_turn", "final_interest", "final_comfort",
                   "end_reason", "ended_by"),
            "parent_id": branch and branch.parent, "fork_turn": branch and branch.at,
            "arm": branch and (branch.treatment or branch.arm),
            "fidelity_ok": e.in_character, "usable": e.usable, "n_turns": len(e.turns),
            "n_calls": e.usage and e.usage.calls, **pick(e.usage, "prompt_tokens", "completion_tokens", "latency_s", "cost_usd"),
            "saved_at": now(), "provenance_json": prov and prov.model_dump_json(), "record_json": e.model_dump_json(),
        }  # fmt: skip

    def _insert_calls(self, episode_id: str, judge: int | None, calls: list) -> None:
        insert_rows(self.conn, "calls", [{"episode_id": episode_id, "n": n, "judge": judge, **pick(
            call, "role", "purpose", "model", "seed", "prompt_tokens", "completion_tokens", "latency_s", "finish_reason",
            "retries", "ok", "error", "from_cache", "cached_tokens", "cost_usd")} for n, call in enumerate(calls)])  # fmt: skip

    def _insert_verdicts(self, episode_id: str, verdicts: list[Verdict]) -> None:
        for v in verdicts:
            insert(self.conn, "verdicts", {
                "episode_id": episode_id, **pick(v, "judge", "model", "seed", "temperature", "rubric_hash"),
                "n_unscored": len(v.unscored), "flags_status": v.flags and v.flags.status,
                "outcome_status": v.outcome and v.outcome.status, "verdict_json": v.model_dump_json(),
            })  # fmt: skip
            insert_rows(self.conn, "scores", [{
                "episode_id": episode_id, "judge": v.judge, "transition": n, "transition_turn": t.turn,
                **pick(t, "ask_turn", "has_ask", "source"), "condition": condition,
                **pick(g, "status", "score", "turn", "quote", "reason"),
            } for n, t in enumerate(v.transitions) for condition, g in t.conditions.items()])  # fmt: skip
            for f in v.flags.raised if v.flags else []:
                insert(self.conn, "flags", {"episode_id": episode_id, "judge": v.judge, **pick(f, "flag", "turn", "quote", "reason")})
            self._insert_calls(episode_id, v.judge, v.calls)

    def done(self, run_id: str) -> set[tuple[str, int]]:
        """(cell, rep) of the run's succeeded episodes: what a resumed run can skip."""
        rows = self.conn.execute("SELECT cell, rep FROM episodes WHERE run_id = ? AND status = 'succeeded'", (run_id,))
        return {(cell, rep) for cell, rep in rows}

    def rubrics(self, run_id: str) -> dict[str | None, int]:
        """{rubric hash: episodes with a current verdict under it}: more than one key, and the run is graded under a mix."""
        rows = self.conn.execute("""SELECT v.rubric_hash, count(DISTINCT v.episode_id) FROM verdicts v JOIN episodes e ON e.id = v.episode_id
                                    WHERE e.run_id = ? GROUP BY v.rubric_hash ORDER BY v.rubric_hash""", (run_id,))  # fmt: skip
        return dict(rows.fetchall())

    def ungraded(self, run_id: str) -> list[Episode]:
        """The run's episodes whose conversation is stored but a judge's endpoint failed: a resumed run grades them again."""
        rows = self.conn.execute("SELECT id, record_json FROM episodes WHERE run_id = ? AND status = 'ungraded' ORDER BY cell, rep",
                                 (run_id,))  # fmt: skip
        return [self._episode(row) for row in rows]

    def episodes(self, run_id: str, *, include_failed: bool = True) -> list[Episode]:
        return list(self.each_episode(run_id, include_failed=include_failed))

    def each_episode(self, run_id: str, *, include_failed: bool = True) -> Iterator[Episode]:
        """The run's records one at a time, in cell order: a summary of 100,000 episodes holds one record at once."""
        only = "" if include_failed else " AND status = 'succeeded'"
        # A cursor of its own, so that other queries on this Store between two records leave it where it is.
        rows = self.conn.cursor().execute(f"SELECT id, record_json FROM episodes WHERE run_id = ?{only} ORDER BY cell, rep", (run_id,))
        for row in rows:
            yield self._episode(row)

    def listing(self, run_id: str, *, persona: str | None = None, setting: str | None = None, strategy: str | None = None,
                status: str | None = None, contact: bool | None = None, unusable: bool = False) -> list[dict]:
        """The run's episodes that pass the filters, in cell order, as the columns `nextstep episodes` lists, read from
        the episodes table: a record is parsed only where an older nextstep left `usable` unset.

        `contact` True / False: those that ended in contact (number or email) / did not (an unknown outcome passes
        neither); `unusable`: only those the statistics leave out (`Episode.usable`)."""
        if status is not None and status not in STATUS_RANK:
            raise UserError(f"--status {status!r}: choose from {', '.join(reversed(STATUS_RANK))}")
        where = [f"{c} = ?" for c, v in (("persona", persona), ("setting", setting), ("strategy", strategy),
                                         ("status", status)) if v is not None]  # fmt: skip
        rows = self.conn.execute(
            f"""SELECT id AS episode_id, setting, persona, strategy, rep, status, exchanged, NULL AS contact, end_reason, n_turns AS turns,
                       fidelity_ok, usable, error FROM episodes WHERE {" AND ".join(["run_id = ?", *where])} ORDER BY cell, rep""",
            (run_id, *(v for v in (persona, setting, strategy, status) if v is not None)))  # fmt: skip
        found = []
        for row in map(dict, rows):
            if row["usable"] is None:  # saved before the column existed
                record = self.episode(row["episode_id"])
                row["fidelity_ok"], row["usable"] = record.in_character, record.usable
            row["contact"] = is_contact(row["exchanged"])
            row["usable"] = bool(row["usable"])
            row["fidelity_ok"] = None if row["fidelity_ok"] is None else bool(row["fidelity_ok"])
            if (contact is None or (row["contact"] is not None and row["contact"] == contact)) and not (unusable and row["usable"]):
                found.append(row)
        return found

    def export_jsonl(self, run_id: str, output: Path) -> int:
        """Write the run's records to `output`, one JSON line each, a record in memory at a time; returns how many."""
        self.run(run_id)
        n = 0
        with replacing(output) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for n, record in enumerate(self.each_episode(run_id), 1):
                f.write(record.model_dump_json() + "\n")
        return n

    def _episode(self, row) -> Episode:
        return self._valid(Episode, row["record_json"], f"episode {row['id']}")

    def _valid(self, record: type, data: str | dict, what: str):
        """The stored data as its record, or one line naming what does not read and why (a broken or foreign row)."""
        try:
            return record.model_validate_json(data) if isinstance(data, str) else record.model_validate(data)
        except ValidationError as e:
            raise UserError(f"{self.path}: {what} is not a valid {record.__name__.lower()} record: {validation_message(e)}") from None

    def prompt_texts(self) -> dict[str, str]:
        """{hash: text} of every prompt, rubric and evaluator prompt kept: what a diff of two runs' prompts shows."""
        return dict(self.conn.execute("SELECT hash, text FROM prompts").fetchall())

    def _resolve(self, episode_id: str) -> str:
        """The full id for an id or a unique prefix of one (a UserError lists the candidates, or the closest)."""
        if self.conn.execute("SELECT 1 FROM episodes WHERE id = ?", (episode_id,)).fetchone():
            return episode_id
        rows = self.conn.execute("SELECT id FROM episodes WHERE substr(id, 1, ?) = ?", (len(episode_id), episode_id)).fetchall()
        ids = [r[0] for r in rows] or [r[0] for r in self.conn.execute("SELECT id FROM episodes")]
        return resolve(episode_id, ids, "episode", self.path)

    def episode(self, episode_id: str) -> Episode:
        """An episode by its id or a unique prefix of it."""
        return self._episode(self.conn.execute("SELECT id, record_json FROM episodes WHERE id = ?", (self._resolve(episode_id),)).fetchone())

    def replace_verdicts(self, episode_id: str, verdicts: list[Verdict]) -> None:
        """Re-grade an episode: the old verdicts move to verdict_history, the new ones take their place.

        A simulated episode becomes 'ungraded' or 'succeeded' by its new verdicts; a failed one stays failed.
        """
        with self._tx() as conn:
            eid = self._resolve(episode_id)
            conn.execute("""INSERT INTO verdict_history (episode_id, judge, model, verdict_json, replaced_at)
                            SELECT episode_id, judge, model, verdict_json, ? FROM verdicts WHERE episode_id = ?""",
                         (now(), eid))  # fmt: skip
            for table in ("verdicts", "scores", "flags"):
                conn.execute(f"DELETE FROM {table} WHERE episode_id = ?", (eid,))
            conn.execute("DELETE FROM calls WHERE episode_id = ? AND judge IS NOT NULL", (eid,))
            self._insert_verdicts(eid, verdicts)
            e = self._episode(conn.execute("SELECT id, record_json FROM episodes WHERE id = ?", (eid,)).fetchone()).with_verdicts(verdicts)
            conn.execute("""UPDATE episodes SET record_json = ?, status = ?, error = ?, n_calls = ?, prompt_tokens = ?,
                            completion_tokens = ?, latency_s = ?, fidelity_ok = ?, usable = ?, cost_usd = ? WHERE id = ?""",
                         (e.model_dump_json(), e.status, e.error, e.usage.calls, e.usage.prompt_tokens,
                          e.usage.completion_tokens, e.usage.latency_s, e.in_character, e.usable, e.usage.cost_usd, eid))  # fmt: skip

    def replaced_verdicts(self, run_id: str) -> list[Verdict]:
        """The verdicts re-grading displaced from a run's episodes (verdict_history), oldest first."""
        rows = self.conn.execute("""SELECT h.episode_id AS id, h.verdict_json FROM verdict_history h JOIN episodes e
                                    ON e.id = h.episode_id WHERE e.run_id = ? ORDER BY h.id""", (run_id,))  # fmt: skip
        return [self._valid(Verdict, row["verdict_json"], f"replaced verdict of episode {row['id']}") for row in rows]

    def save_texts(self, texts: dict[str, tuple[str, str]]) -> None:
        """Keep texts by hash ({hash: (name, text)}), e.g. the rubric and evaluator prompts of a run."""
        with self._tx() as conn:
            for digest, (name, text) in texts.items():
                insert(conn, "prompts", {"hash": digest, "name": name, "text": text}, "INSERT OR IGNORE")

    def save_fitness(self, verdict: dict) -> None:
        """Keep a `nextstep fitness` verdict beside the runs it read (its 'runs': 'grid' and, if run, 'ablation')."""
        with self._tx() as conn:
            insert(conn, "fitness", {"run_id": verdict["runs"]["grid"], "ablation_run_id": verdict["runs"].get("ablation"),
                                     "protocol_hash": verdict["protocol"]["hash"], "overall": verdict["overall"],
                                     "saved_at": now(), "verdict_json": json.dumps(verdict, allow_nan=False)})  # fmt: skip

    def fitness(self, run_id: str) -> dict | None:
        """The latest fitness verdict that read this run (as its grid or its ablation), or None."""
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fitness'").fetchone():
            return None  # an older file opened read-only: no verdict was ever stored in it
        row = self.conn.execute("SELECT verdict_json FROM fitness WHERE ? IN (run_id, ablation_run_id) ORDER BY id DESC",
                                (run_id,)).fetchone()  # fmt: skip
        return json.loads(row["verdict_json"]) if row else None

    def integrity_ok(self) -> bool:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def resume_command(run_id: str, spec: RunSpec, db: Path) -> str | None:
    """The command that continues a run: a grid's `batch --resume`, a branch run's own `branch` again; None for runs
    that are not continued (played, watched)."""
    if spec.experiment is not None:
        return f"nextstep batch --resume {run_id} --db {db}"
    if b := spec.branch:
        changed = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (b.get("treatment") or {}).items() if v is not None)
        turns = f" --max-turns {b['max_turns']}" if b.get("max_turns") else ""
        return (f"nextstep branch {b['source']} --at {b['at']} {changed} --reps {b['reps']} --judges {b['judges']}{turns} "
                f"--run-id {run_id} --db {db}")
    return None
