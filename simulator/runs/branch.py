"""Counterfactual continuations: a stored episode's first turns, continued under a change (treatment) and unchanged (control).

Every continuation forks from one LangGraph checkpoint holding the prefix, so treatment and control start from the
identical state; treatment rep k and control rep k share a seed, so they are paired by prefix and rep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from simulator.conversation.catalog import Catalog, Profile, entry_hash
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import SIMULATION_PROMPTS, Prompts
from simulator.conversation.runner import crashed_episode, fork_point, run_episode
from simulator.core.errors import UserError
from simulator.core.records import Branch, Episode, Fidelity, RunSpec, Turn
from simulator.models.backends import Endpoint
from simulator.models.config import Config
from simulator.storage.store import Store

from .batch import cell_seed, here
from .collection import fewer_collections
from .preflight import preflight, roles_of

log = logging.getLogger(__name__)

ARMS = ("control", "treatment")


def fork_turn(turns: list[Turn], at: str, episode_id: str = "episode") -> int:
    """How many of the stored turns a branch keeps: `fork_turn(turns, '3')` -> 3.

    'first-ask' keeps the turns before the practitioner's first ask; 'peak' those up to and including the persona turn
    with the highest private interest (the first, if tied). At least one turn is kept and at least one regenerated.
    """
    n = len(turns)
    if at == "first-ask":
        asks = [t.index for t in turns if t.intent == "ask"]
        if not asks:
            raise UserError(f"--at first-ask: episode {episode_id} has no ask")
        keep, why = asks[0], "asks in its opening line: no turn before it to keep"
    elif at == "peak":
        persona = [t for t in turns if t.speaker == "persona" and t.interest is not None]
        if not persona:
            raise UserError(f"--at peak: episode {episode_id} has no persona turn")
        keep, why = max(persona, key=lambda t: t.interest).index + 1, "peaks in its last turn: nothing after it to regenerate"
    elif at.isdigit():
        keep, why = int(at), f"has turns 0-{n - 1}: turn {at} is out of range (a fork keeps 1 to {n - 1} turns)"
    else:
        raise UserError(f"--at {at!r}: give a turn index, first-ask or peak")
    if not 1 <= keep <= n - 1:
        raise UserError(f"--at {at}: episode {episode_id} {why}")
    return keep


class Treatment(BaseModel):
    """What a treatment changes for the rest of the conversation; unset fields stay as in the parent episode."""

    model_config = ConfigDict(extra="forbid")
    strategy: str | None = None
    persona: str | None = None
    prompts_dir: Path | None = None
    practitioner_model: str | None = None
    persona_model: str | None = None

    def label(self) -> str:
        """`Treatment(strategy='turn_back').label()` -> 'strategy=turn_back'."""
        return ", ".join(f"{k}={v}" for k, v in self.model_dump(mode="json").items() if v is not None)


@dataclass(frozen=True)
class Continuation:
    """One episode to run: prefix `at` turns of `parent`, continued in `arm`, repetition `rep`, with its seed."""

    parent: Episode
    at: int
    arm: str
    rep: int
    seed: int

    @property
    def prefix(self) -> str:
        return f"{self.parent.id}@{self.at}"

    @property
    def cell(self) -> str:
        return f"{self.prefix}/{self.arm}"


def continuations(parents: list[tuple[Episode, int]], reps: int) -> list[Continuation]:
    """Each (parent, fork turn) continued `reps` times per arm; rep k of both arms shares a seed."""
    return [Continuation(parent, at, arm, rep, cell_seed(parent.seed or 0, f"branch/{parent.id}@{at}", rep))
            for parent, at in parents for rep in range(reps) for arm in ARMS]  # fmt: skip


def continued_fidelity(parent: Episode, at: int, generated: Fidelity | None) -> Fidelity | None:
    """A continuation's fidelity: the rules on the turns it generated (`generated`), and for a kept prefix holding the
    first persona turn (what the rules read) the parent's verdict on it, judged against the parent's persona."""
    judged_in_prefix = any(t.speaker == "persona" for t in parent.turns[:at])
    parts = [("kept prefix: ", parent.fidelity if judged_in_prefix else None), ("", generated)]
    parts = [(label, f) for label, f in parts if f is not None]
    if not parts:
        return None
    return Fidelity(ok=all(f.ok for _, f in parts), problems=[label + p for label, f in parts for p in f.problems])


def fork_points(records: list[Episode], at: str) -> tuple[list[tuple[Episode, int]], list[str]]:
    """(parent, fork turn) for each succeeded episode, and why the others are left out (one line each)."""
    points, skipped = [], []
    for r in records:
        if r.status == "failed":
            skipped.append(f"{r.id}: failed")
            continue
        try:
            points.append((r, fork_turn(r.turns, at, r.id)))
        except UserError as e:
            skipped.append(str(e))
    return points, skipped


def used_entries(points: list[tuple[Episode, int]], treatment: Treatment, catalogs: dict[str, Catalog]) -> dict[str, str]:
    """{'ARM/KIND/NAME': entry hash} of every setting, persona and strategy a continuation of these parents reads."""
    used = {}
    for parent, _ in points:
        for arm in ARMS:
            treated = arm == "treatment"
            names = {"settings": parent.setting, "personas": treated and treatment.persona or parent.persona,
                     "strategies": treated and treatment.strategy or parent.strategy}  # fmt: skip
            used |= {f"{arm}/{kind}/{name}": entry_hash(catalogs[arm].pick(kind, name)) for kind, name in names.items()}
    return used


def branch_id(spec: RunSpec) -> str:
    return "branch-" + hashlib.sha256(json.dumps(spec.identity(), sort_keys=True).encode()).hexdigest()[:10]


def check_prompts(parent: Episode, prompts: Prompts) -> None:
    """A control is honest only if it continues with the prompts the parent used: refuse otherwise."""
    used = parent.provenance.prompts if parent.provenance else {}
    differ = [n for n in SIMULATION_PROMPTS if n in used and used[n] != prompts.hash(n)]
    if differ:
        raise UserError(f"episode {parent.id} was made with other {', '.join(differ)} prompt(s) than these; pass the "
                        "directory it used with --base-prompts (the control must continue unchanged)")  # fmt: skip


@dataclass
class Continuations:
    """What a branch run's continuations are made with, and making one: here, or on a Ray actor, which gets a copy of
    all but the models and fork points (`shipped`) and opens its own (`opened`), as a batch's Episodes do."""

    run_id: str
    catalogs: dict[str, Catalog]  # arm -> catalog
    treatment: Treatment
    config: Config  # the control's; the treatment's models are changed by the treatment
    backend: str
    judges: int = 1
    rubric: object = None  # evaluations.judge.rubric.Rubric, when continuations are graded
    rubric_hash: str | None = None
    temperature: float | None = None  # None: the parent's
    max_turns: int | None = None  # None: the parent's
    models: dict[str, dict] | None = None  # arm -> {'practitioner', 'persona', 'evaluators'}
    forks: dict[str, asyncio.Future] = field(default_factory=dict)  # prefix -> its one checkpoint, made in this process

    def treated(self) -> Config:
        return self.config.model_copy(update=self.treatment.model_dump(include={"practitioner_model", "persona_model"},
                                                                       exclude_none=True))  # fmt: skip

    def shipped(self) -> Continuations:
        return replace(self, models=None, forks={})

    async def opened(self, endpoint: Endpoint, stack: contextlib.AsyncExitStack) -> Continuations:
        """A copy with models of its own on `endpoint`, open until `stack` closes."""
        control = await stack.enter_async_context(endpoint.models(self.config))
        treatment = await stack.enter_async_context(endpoint.models(self.treated()))
        return replace(self, models={"control": control, "treatment": treatment}, forks={})

    def scenario(self, c: Continuation) -> Scenario:
        p = c.parent
        scenario = Scenario(p.setting, p.persona, p.strategy, p.profile or Profile())
        if c.arm == "treatment":
            change = {k: v for k, v in self.treatment.model_dump(include={"strategy", "persona"}).items() if v is not None}
            scenario = replace(scenario, **change)
        return scenario

    def evaluator(self, seed: int):
        """The judges of both arms: the control's evaluator models, prompts and rubric."""
        from evaluations.judge.graph import make_evaluator
        from evaluations.judge.panel import judge_panel

        base = self.catalogs["control"]
        panel = judge_panel(self.models["control"]["evaluators"], Prompts(base.prompt_dirs), self.rubric, self.rubric_hash,
                            judges=self.judges, seed=seed, reasks=self.config.reasks)  # fmt: skip
        return make_evaluator(panel, base) if panel else None

    def context(self, c: Continuation) -> Context:
        prov, cat, models = c.parent.provenance, self.catalogs[c.arm], self.models[c.arm]
        return Context(models["practitioner"], models["persona"], cat, Prompts(cat.prompt_dirs), self.scenario(c), c.seed,
                       temperature=self.temperature if self.temperature is not None else prov.temperature if prov else 0.7,
                       max_turns=self.max_turns or (prov and prov.max_turns) or 8, reasks=self.config.reasks,
                       evaluate=self.evaluator(c.seed), kept=c.at)  # fmt: skip

    async def continued(self, c: Continuation) -> Episode:
        """The continuation run from its prefix's checkpoint (made once per process); a crash is a failed record."""
        if c.prefix not in self.forks:
            self.forks[c.prefix] = asyncio.ensure_future(fork_point(c.parent.turns[: c.at], f"{self.run_id}/{c.prefix}"))
        try:
            return await run_episode(self.context(c), backend=self.backend, fork=await self.forks[c.prefix])
        except UserError:
            raise
        except Exception as e:  # a bug must not lose the continuation: it is stored as failed
            log.debug("continuation crashed", exc_info=True)
            return crashed_episode(self.scenario(c), c.seed, e)


@dataclass
class BranchSet:
    """A branch run's continuations, run where `executor` says (`batch.here`, or Ray actors), stored here alone."""

    continuations: Continuations
    store: Store
    endpoint: Endpoint | None = None
    concurrency: int = 4
    executor: Callable = here

    async def run(self, todo: list[Continuation], on_saved: Callable[[Episode], None] | None = None) -> None:
        """Run the continuations not yet succeeded; each forks from its prefix's one checkpoint."""
        work = self.continuations
        done = self.store.done(work.run_id)
        todo = [c for c in todo if (c.cell, c.rep) not in done]
        if not todo:
            return

        async def one(c: Continuation) -> None:
            async with limit:
                record = await where.continued(c)
                record = record.model_copy(update={"run_id": work.run_id, "cell": c.cell, "rep": c.rep,
                                                   "fidelity": continued_fidelity(c.parent, c.at, record.fidelity), "branch": Branch(
                    parent=c.parent.id, at=c.at, prefix=c.prefix, arm=c.arm,
                    treatment=work.treatment.label() if c.arm == "treatment" else None)})  # fmt: skip
                self.store.save_episode(work.run_id, c.cell, c.rep, record)
                if on_saved:
                    on_saved(record)

        async with self.executor(work, self.endpoint, self.concurrency) as (where, at_once):
            limit = asyncio.Semaphore(at_once)
            with fewer_collections():
                await asyncio.gather(*(one(c) for c in todo))


def parents(store: Store, source: str, at: str) -> tuple[list[tuple[Episode, int]], list[str]]:
    """(parent, fork turn) pairs from a run id (each episode that can be forked) or one episode id, and what was left out."""
    kind, found = store.find(source)
    if kind == "run":
        points, skipped = fork_points(store.episodes(found), at)
        if not points:
            raise UserError(f"no episode of run {found} can be forked --at {at}: {skipped[0] if skipped else 'it is empty'}")
        return points, skipped
    record = store.episode(found)
    if record.status == "failed":
        raise UserError(f"episode {record.id} failed: there is no conversation to fork")
    return [(record, fork_turn(record.turns, at, record.id))], []


async def run_branches(source: str, *, at: str, treatment: Treatment, reps: int = 4, db: Path | str = "nextstep.db",
                       judges: int = 1, run_id: str | None = None, max_turns: int | None = None,
                       concurrency: int | None = None, config_file: Path | None = None, rubric_file: Path | None = None,
                       on_saved: Callable[[Episode], None] | None = None, ray: str | None = None, actors: int | None = None,
                       **config_flags) -> tuple[str, list[str]]:
    """Continue every prefix of `source` (a run or an episode id) `reps` times per arm; returns (branch run id, skipped).

    The base settings (endpoint, models, prompt and persona directories) are those the parent run was made with;
    `config_flags` (Config fields) override them, as on `batch --resume`. `ray` and `actors`: as `run_grid`'s.
    """
    from evaluations.judge.evaluator import PROMPTS as EVALUATOR_PROMPTS
    from evaluations.judge.rubric import load_rubric

    from simulator.models.backends import endpoint
    from .batch import ray_executor, run_config, run_settings
    from simulator.conversation.catalog import load_catalog

    if not treatment.label():
        raise UserError("nothing to change: give --strategy, --persona, --prompts-dir, --practitioner-model or --persona-model")
    with Store(Path(db)) as store:
        source = store.find(source)[1]  # the whole id, so a prefix names the same branch run
        points, skipped = parents(store, source, at)
        parent_run = points[0][0].run_id
        stored = (store.run(parent_run)["settings"] or {}) if parent_run else {}
        config, send_key = run_config(config_file, stored, **config_flags)
        base = load_catalog(config.personas_dir, config.prompts_dir)
        catalogs = {"control": base, "treatment": load_catalog(config.personas_dir, treatment.prompts_dir or config.prompts_dir)}
        for kind, name in (("strategies", treatment.strategy), ("personas", treatment.persona)):
            if name:
                catalogs["treatment"].pick(kind, name)
        for parent, _ in points:
            check_prompts(parent, Prompts(base.prompt_dirs))
        rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir) if judges else (None, None)
        executor = ray_executor(ray, actors, config) if ray is not None else here
        # The id hashes what the continuations are made and graded with, by content (as a batch's does): each arm's
        # prompts, the judges' prompts and rubric, the catalog entries and the temperature (the parents', as sampled).
        judged = {name: Prompts(base.prompt_dirs).hash(name) for name in EVALUATOR_PROMPTS} if judges else {}
        spec = RunSpec(
            branch={"source": source, "parents": sorted(p.id for p, _ in points), "at": at, "reps": reps,
                    "treatment": treatment.model_dump(mode="json"), "judges": judges, "max_turns": max_turns,
                    "temperature": sorted({p.provenance.temperature for p, _ in points if p.provenance})},
            prompts={f"{arm}/{name}": Prompts(catalogs[arm].prompt_dirs).hash(name) for arm in ARMS
                     for name in SIMULATION_PROMPTS} | judged,
            rubric_hash=rubric_hash, catalog=used_entries(points, treatment, catalogs),
        )  # fmt: skip
        run_id = run_id or branch_id(spec)
        with endpoint(config, concurrency, send_key=send_key) as ep:
            treated = Continuations(run_id, catalogs, treatment, config, ep.backend).treated()
            async with ep.models(config) as control, ep.models(treated) as models:
                spec = spec.model_copy(update={"backend": ep.backend, "models": {
                    arm: {r: m[r].name for r in ("practitioner", "persona")} for arm, m in (("control", control), ("treatment", models))}})
                done, todo = store.done(run_id), continuations(points, reps)
                if any((c.cell, c.rep) not in done for c in todo):  # one test call per distinct model before fanning out
                    treated_roles = roles_of(models, simulate=True, judges=0, arm="treatment")
                    await preflight(roles_of(control, simulate=True, judges=judges) | treated_roles)
                store.create_run(run_id, spec.model_copy(update={"planned": len(todo)}),
                                 run_settings(config, concurrency=concurrency, rubric_file=rubric_file))  # fmt: skip
                store.claim(run_id)  # refused while another live process writes this branch run

                work = Continuations(run_id, catalogs, treatment, config, ep.backend, judges, rubric, rubric_hash,
                                     max_turns=max_turns, models={"control": control, "treatment": models})  # fmt: skip
                branches = BranchSet(work, store, ep, concurrency or ep.concurrency, executor)
                await branches.run(todo, on_saved)
    return run_id, skipped
