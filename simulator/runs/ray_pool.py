"""Episodes on Ray actors (`batch --ray`): the grid's cells spread over actors, one event loop and HTTP client each.

Only where an episode runs changes: each actor runs `Episodes.simulate` (the same graph and judges as a local batch)
against the shared endpoint, and hands the record back; the driver's batch counts it, enforces the budgets and alone
writes the store. An actor whose process dies is started again by Ray, and the episodes it had in flight are run
again (on it, or wherever Ray places it when its node is gone); the driver got no record of theirs, so none is stored
twice. `branch --ray` and `grade --ray` run their continuations and gradings the same way. Imported only under --ray:
Ray is the optional extra `nextstep[ray]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator

import ray
from ray.exceptions import RayActorError, RayTaskError

from simulator.conversation.prompts import SIMULATION_PROMPTS, Prompts
from simulator.conversation.runner import crashed_episode
from simulator.core.errors import UserError
from simulator.core.records import Episode, Verdict
from simulator.models.backends import Endpoint

from .batch import Cell

log = logging.getLogger(__name__)

ADDRESS_ENV = "NEXTSTEP_RAY_ADDRESS"
RETRIES = 3  # times an episode is run again after the process running it died; then it is stored as failed


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=RETRIES)
class EpisodeActor:
    """Runs the episodes of `work` (a batch's Episodes, a branch's Continuations, a grading pass's Grading) with models
    of its own: its own client, its own limit of `endpoint['concurrency']` requests in flight."""

    def __init__(self, work, endpoint: dict):
        self._work, self._endpoint = work, endpoint
        self._ready = None
        self._models = contextlib.AsyncExitStack()  # open as long as the actor lives
        self._lock = asyncio.Lock()

    def hello(self) -> dict:
        """Its process and the hashes of the prompts it reads, which must be the driver's."""
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "prompts": prompt_hashes(self._work)}

    async def call(self, method: str, arg):
        """`work.method(arg)`, on models made once, on the actor's own event loop."""
        async with self._lock:
            if self._ready is None:
                self._ready = await self._work.opened(Endpoint(**self._endpoint), self._models)
        return await getattr(self._ready, method)(arg)


def prompt_hashes(work) -> dict[str, str]:
    """{'NAME' (or 'ARM/NAME' for a branch's arms): hash} of the simulation prompts of each catalog `work` reads."""
    catalogs = work.catalogs if hasattr(work, "catalogs") else {"": work.catalog}
    return {f"{key}/{name}".lstrip("/"): Prompts(c.prompt_dirs).hash(name)
            for key, c in catalogs.items() for name in SIMULATION_PROMPTS}  # fmt: skip


class Pool:
    """The actors, each given an episode when it has the fewest in flight, behind the methods of the work they run."""

    def __init__(self, actors: list, pids: list[int], work):
        self.actors, self.pids, self.work = actors, pids, work  # `work`: the driver's own, for a lost episode's record
        self.load = [0] * len(actors)

    @staticmethod
    async def unwrapped(ref):
        """The result of an actor's call; bad input it raised (a UserError) is raised here as one line, as locally."""
        try:
            return await ref
        except RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise UserError(str(e.cause)) from None
            raise

    async def _call(self, method: str, arg):
        i = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[i] += 1
        try:
            return await self.unwrapped(self.actors[i].call.remote(method, arg))
        finally:
            self.load[i] -= 1

    async def simulate(self, cell: Cell) -> Episode:
        try:
            return await self._call("simulate", cell)
        except RayActorError as e:  # its process died RETRIES + 1 times: a failure like any other, run again on resume
            return crashed_episode(cell.scenario, cell.seed, lost(e))

    async def grade(self, record: Episode) -> list[Verdict]:
        try:
            return await self._call("grade", record)
        except RayActorError:  # it stays ungraded, as when a judge's endpoint fails
            return record.verdicts

    async def graded(self, item) -> list[Verdict]:
        try:
            return await self._call("graded", item)
        except RayActorError as e:  # kept as it was; grading again grades only what is missing
            return self.work.ungraded(item, str(lost(e)))

    async def continued(self, c) -> Episode:
        try:
            return await self._call("continued", c)
        except RayActorError as e:
            return crashed_episode(self.work.scenario(c), c.seed, lost(e))


def lost(error: RayActorError) -> RuntimeError:
    """Why an episode's work was lost: `lost(e)` -> 'the Ray worker running it died 4 times: The actor died ...'."""
    first = next(iter(str(error).splitlines()), "")
    return RuntimeError(f"the Ray worker running it died {RETRIES + 1} times: {first}")


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address`, or start a new local instance (its node at 127.0.0.1) for None, unless this
    process already has; True if it joined (and so leaves at the end)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would report its use over the network
    main = threading.current_thread() is threading.main_thread()
    term = signal.getsignal(signal.SIGTERM) if main else None
    local = {} if address else {"_node_ip_address": "127.0.0.1"}
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 **local)  # fmt: skip
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"--ray {address or 'local'}: could not join a Ray cluster: {' '.join(str(e).split())}") from None
    finally:
        if main:  # Ray's own handler exits at once; ours unwinds as Ctrl-C does, so the batch says what it stored
            signal.signal(signal.SIGTERM, term)
    return True


def reachable(address: str, timeout: float = 5.0) -> None:
    """A UserError at once if nothing listens at a cluster's host:port (Ray itself would wait minutes, deaf to
    signals, in its own code): `reachable('10.0.0.5:6379')`; 'auto' and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


def actors(address: str | None = None, count: int | None = None):
    """A `Batch.executor` (and a branch's) that runs the episodes on `count` Ray actors (default: one per CPU of the cluster), each with
    the batch's concurrency; joins the cluster at `address` (else $NEXTSTEP_RAY_ADDRESS, else a new local instance)
    when the batch starts its episodes, and leaves it when the batch ends. A cluster that does not answer is refused
    here, before anything is run."""
    address = address or os.environ.get(ADDRESS_ENV) or None
    if address:
        reachable(address)

    @contextlib.asynccontextmanager
    async def executor(work, endpoint: Endpoint, concurrency: int) -> AsyncIterator[tuple[Pool, int]]:
        joined = connect(address)
        handles = []
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            n = count or max(cpus, 1)
            if n > cpus:
                raise UserError(f"--actors {n}: the Ray cluster has {cpus} CPU(s), and each actor takes one")
            fields = {f.name: getattr(endpoint, f.name) for f in dataclasses.fields(Endpoint)
                      if f.init and f.name not in ("exit_reason", "replay")} | {"concurrency": concurrency}  # fmt: skip
            shipped = work.shipped()
            handles = [EpisodeActor.remote(shipped, fields) for _ in range(n)]
            hello = await asyncio.gather(*(Pool.unwrapped(a.hello.remote()) for a in handles))
            mine = prompt_hashes(work)
            if differ := sorted({n.split("/")[-1] for h in hello for n, digest in h["prompts"].items() if mine[n] != digest}):
                raise UserError(f"--ray: the workers read other {', '.join(differ)} prompt(s) than this machine: install "
                                "the same nextstep and prompt directories on every node")  # fmt: skip
            log.info("%d Ray actor(s) on %d node(s), %d requests in flight each", n, len({h["node"] for h in hello}), concurrency)
            yield Pool(handles, [h["pid"] for h in hello], work), n * concurrency
        finally:
            for a in handles:
                ray.kill(a)
            if joined:
                ray.shutdown()

    return executor
