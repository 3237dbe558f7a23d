"""Grading without simulating: stored episodes again (files, runs or episodes in the store), or a gold set."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from evaluations.judge.evaluator import judge_texts
from evaluations.judge.graph import make_evaluator
from evaluations.judge.panel import graded_by, judge_panel
from evaluations.judge.rubric import load_rubric
from simulator.conversation.catalog import Catalog
from simulator.conversation.prompts import Prompts
from simulator.core.errors import UserError
from simulator.core.files import validate, write_atomic
from simulator.core.records import Episode, Verdict
from simulator.models.backends import Endpoint, endpoint
from simulator.models.config import Config
from simulator.storage.episode_files import read_episode, write_episode
from simulator.storage.store import Store

from .batch import RESUME_SETTINGS, here
from .preflight import preflight, roles_of

OnGraded = Callable[[int, int, str, list[Verdict]], None]  # (1-based position, how many in all, label, every verdict)


@dataclass
class Target:
    """One stored episode to grade again: a label to show, its record, and where its new verdicts go."""

    label: str
    record: Episode
    save: Callable[[Episode], None]


def grading_targets(names: list[str], db: Path, stores: ExitStack) -> list[Target]:
    """A Target for each episode file, directory of them, run id or episode id in `db`.

    Stored episodes are saved through one Store, kept open in `stores` (closed by the caller), which claims their runs:
    a batch or another `grade` writing one of them is refused, as a second batch is.
    """
    targets, store = [], None
    for name in names:
        path = Path(name)
        if path.exists():
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            targets += [Target(str(f), read_episode(f), lambda record, f=f: write_episode(record, f)) for f in files]
            continue
        if not db.is_file():
            raise UserError(f"{name}: no such episode file or directory, and no database {db} to look it up in")
        store = store or stores.enter_context(Store(db))
        kind, found = store.find(name)
        records = [r for r in store.episodes(found) if r.status != "failed"] if kind == "run" else [store.episode(found)]
        for run_id in {r.run_id for r in records if r.run_id}:
            store.claim(run_id)
        targets += [Target(f"{r.id} ({r.cell or r.setting})", r, lambda record, s=store: s.replace_verdicts(record.id, record.verdicts))
                    for r in records]  # fmt: skip
    if not targets:
        raise UserError(f"nothing to grade in {', '.join(names)}")
    return targets


def stored_settings(names: list[str], db: Path) -> dict:
    """The settings stored with the run(s) the named episodes come from (run ids, episode ids; files keep none): what
    grading them again starts from, as `batch --resume` does, so a run made with other prompts or personas is graded
    with those. Runs made with different settings cannot be graded together."""
    if not db.is_file():
        return {}
    found: dict[str, dict] = {}
    with Store(db) as store:
        for name in names:
            if Path(name).exists():
                continue
            try:
                kind, found_id = store.find(name)
                run_id = found_id if kind == "run" else store.episode(found_id).run_id
            except UserError:  # not in the store: grading_targets says so
                continue
            if run_id:
                stored = store.run(run_id)["settings"] or {}
                found[run_id] = {k: stored.get(k) for k in (*RESUME_SETTINGS, "rubric_file")}
    if len({json.dumps(s, sort_keys=True) for s in found.values()}) > 1:
        raise UserError(f"runs {', '.join(sorted(found))} were made with different settings: grade them one at a time")
    return next(iter(found.values()), {})


def with_new_verdicts(record: Episode, verdicts: list[Verdict]) -> Episode:
    """`record` graded anew (`Episode.with_verdicts`: usage and status follow), its old verdicts kept in `verdict_history`."""
    return record.with_verdicts(verdicts).model_copy(update={"verdict_history": record.verdict_history + record.verdicts})


@dataclass
class Grading:
    """The judges every episode of a grading pass gets, and grading one: here, or on a Ray actor, which gets a copy of
    all but the models (`shipped`) and opens its own (`opened`), as a batch's Episodes do."""

    config: Config
    catalog: Catalog
    rubric: object  # evaluations.judge.rubric.Rubric
    rubric_hash: str
    judges: int
    fidelity_judge: bool = False
    models: dict | None = None

    def shipped(self) -> Grading:
        return replace(self, models=None)

    async def opened(self, endpoint: Endpoint, stack: contextlib.AsyncExitStack) -> Grading:
        return replace(self, models=await stack.enter_async_context(endpoint.models(self.config)))

    @functools.cached_property
    def prompts(self) -> Prompts:
        """Loaded once for every episode this copy grades (a copy starts without them, so they are never shipped)."""
        return Prompts(self.catalog.prompt_dirs)

    def panel(self, seed: int) -> list:
        return judge_panel(self.models["evaluators"], self.prompts, self.rubric, self.rubric_hash,
                           judges=self.judges, seed=seed, reasks=self.config.reasks, fidelity_judge=self.fidelity_judge)  # fmt: skip

    async def graded(self, item: tuple[dict, int, list[Verdict]]) -> list[Verdict]:
        """Every judge's verdict on (transcript, first judge's seed, the verdicts kept), by the evaluator graph alone."""
        episode, seed, kept = item
        return await make_evaluator(self.panel(seed), self.catalog)(episode, previous=kept)

    def ungraded(self, item: tuple[dict, int, list[Verdict]], error: str) -> list[Verdict]:
        """The verdicts of `item` when its grading was lost (its Ray worker died): the kept ones, the others ungraded."""
        _, seed, kept = item
        done = {v.judge: v for v in kept}
        return [done.get(j.index) or Verdict(judge=j.index, model=j.model.name, seed=j.seed, temperature=j.temperature,
                                             rubric_hash=j.rubric_hash, status="ungraded", error=error)
                for j in self.panel(seed)]  # fmt: skip


async def grade_episodes(config: Config, catalog: Catalog, episodes: list[tuple[str, dict]], *, judges: int, seed: int = 0,
                         rubric_file: Path | None = None, fidelity_judge: bool = False, on_graded: OnGraded | None = None,
                         episode_seeds: list[int] | None = None, send_key: bool = True,
                         replay: Endpoint | None = None, previous: list[list[Verdict]] | None = None,
                         executor: Callable = here) -> list[list[Verdict]]:
    """Every judge's verdict on each (label, episode), in order; `on_graded` after each, in order.

    Judge i of episode n is seeded `seed + episode_seeds[n] + i` (a batch seeds them its episode's seed + i), or
    `seed + i` for every episode without `episode_seeds` (a gold set's items have no seed of their own).
    `replay`: a bundle's endpoint, which answers instead of the configured one.
    `previous` (each episode's verdicts so far) makes it resume: a verdict that this very judge completed
    (`graded_by`) is kept without asking again, and an episode all of whose judges are kept is not passed to `on_graded`.
    `executor` (`batch.here`: one episode at a time; Ray actors: as many as they take) is where episodes are graded.
    """
    if judges < 1:
        raise UserError(f"--judges {judges}: grading needs at least one judge")
    rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir)
    with contextlib.nullcontext(replay) if replay else endpoint(config, local_slots=1, send_key=send_key) as ep:
        async with ep.models(config) as models:
            if episodes and not replay:  # one test call per distinct evaluator model before grading anything
                await preflight(roles_of(models, simulate=False, judges=judges))
            work = Grading(config, catalog, rubric, rubric_hash, judges, fidelity_judge, models)
            panels = [work.panel(seed + (episode_seeds[n] if episode_seeds else 0)) for n in range(len(episodes))]
            kept = [[v for v in (previous[n] if previous else []) if any(graded_by(v, j) for j in panel)]
                    for n, panel in enumerate(panels)]  # fmt: skip
            async with executor(work, ep, ep.concurrency) as (where, at_once):
                # here, one episode at a time as ever (its judges' calls run at once); on actors, as many as they take
                limit = asyncio.Semaphore(1 if executor is here else at_once)

                async def one(n: int) -> list[Verdict]:
                    async with limit:
                        return await where.graded((episodes[n][1], panels[n][0].seed, kept[n]))

                tasks = [asyncio.ensure_future(one(n)) for n in range(len(episodes))]
                results = []
                try:
                    for n, task in enumerate(tasks):  # saved in order, however many are graded at once
                        results.append(await task)
                        if on_graded and len(kept[n]) < len(panels[n]):
                            on_graded(n + 1, len(episodes), episodes[n][0], results[-1])
                finally:
                    for task in tasks:
                        task.cancel()
            return results


@dataclass
class Regraded:
    """What `regrade` did: every episode's current verdicts, and which were graded, kept after a failure, or skipped."""

    verdicts: list[list[Verdict]]  # per episode, in order: the new verdicts, or the earlier ones where those stay current
    graded: int = 0
    skipped: int = 0  # already graded with this rubric and panel
    failed: list[tuple[str, str]] = field(default_factory=list)  # (label, error): the new grading did not complete


async def regrade(names: list[str], config: Config, catalog: Catalog, *, db: Path, judges: int, seed: int = 0,
                  rubric_file: Path | None = None, fidelity_judge: bool = False, on_graded: OnGraded | None = None,
                  send_key: bool = True, replay: Endpoint | None = None, executor: Callable = here) -> Regraded:
    """Grade stored episodes again and save each as it is graded; earlier verdicts are kept as history. The rubric and
    judges' prompts are kept in the store by hash, as a batch keeps them, so `compare` can show how they differ.
    `replay`: a bundle's endpoint, which answers instead of the configured one. `executor`: as `grade_episodes`'s.

    New verdicts take the old ones' place only when every judge completed: where an endpoint failed, the earlier
    verdicts stay current (and `failed` names the episode). Run again, it resumes: verdicts already given by this
    rubric and panel are kept, so only what is missing is graded.
    """
    with ExitStack() as stores:
        targets = grading_targets(names, db, stores)
        done = Regraded([t.record.verdicts for t in targets])
        if any(not Path(name).exists() for name in names):  # some come from the store
            rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir)
            with Store(db) as store:
                store.save_texts(judge_texts(Prompts(catalog.prompt_dirs), rubric, rubric_hash))

        def save(n: int, total: int, label: str, verdicts: list[Verdict]) -> None:
            target = targets[n - 1]
            if errors := [f"judge {v.judge}: {v.error}" for v in verdicts if not v.graded]:
                done.failed.append((label, errors[0]))
            else:
                target.save(with_new_verdicts(target.record, verdicts))
                done.verdicts[n - 1], done.graded = verdicts, done.graded + 1
            if on_graded:
                on_graded(n, total, label, verdicts)

        await grade_episodes(config, catalog, [(t.label, t.record.transcript()) for t in targets], judges=judges, seed=seed,
                             rubric_file=rubric_file, fidelity_judge=fidelity_judge, on_graded=save,
                             episode_seeds=[t.record.seed or 0 for t in targets], send_key=send_key, replay=replay,
                             previous=[t.record.verdicts for t in targets], executor=executor)  # fmt: skip
        done.skipped = len(targets) - done.graded - len(done.failed)
        return done


def saved_verdicts(path: Path | None) -> dict[str, list[Verdict]]:
    """The verdicts by item in a calibration file (`save_calibration`); none if there is no file yet."""
    if path is None or not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        verdicts = saved["verdicts"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a calibration file to resume ({e}); choose another -o") from None
    return {item: [validate(Verdict, v, f"{path}: {item}") for v in vs] for item, vs in verdicts.items()}


def save_calibration(path: Path, report: dict | None, verdicts: dict[str, list[Verdict]]) -> None:
    """Write the report (None while it is under way) and every verdict by item, whole or not at all."""
    judged = {item: [v.model_dump(mode="json") for v in vs] for item, vs in verdicts.items()}
    write_atomic(path, json.dumps({"report": report, "verdicts": judged}, indent=2))
