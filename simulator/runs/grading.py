"""Grading without simulating: stored episodes again (files, runs or episodes in the store), or a gold set."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evaluations.judge.evaluator import judge_texts
from evaluations.judge.graph import make_evaluator
from evaluations.judge.panel import judge_panel
from evaluations.judge.rubric import load_rubric
from simulator.conversation.catalog import Catalog
from simulator.conversation.prompts import Prompts
from simulator.core.errors import UserError
from simulator.core.records import Episode, Verdict
from simulator.models.backends import Endpoint, endpoint
from simulator.models.config import Config
from simulator.storage.episode_files import read_episode, write_episode
from simulator.storage.store import Store

from .batch import RESUME_SETTINGS
from .preflight import preflight, roles_of

OnGraded = Callable[[int, int, str, list[Verdict]], None]  # (1-based position, how many in all, label, every verdict)


@dataclass
class Target:
    """One stored episode to grade again: a label to show, its record, and where its new verdicts go."""

    label: str
    record: Episode
    save: Callable[[Episode], None]


def grading_targets(names: list[str], db: Path) -> list[Target]:
    """A Target for each episode file, directory of them, run id or episode id in `db`."""
    targets = []
    for name in names:
        path = Path(name)
        if path.exists():
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            targets += [Target(str(f), read_episode(f), lambda record, f=f: write_episode(record, f)) for f in files]
            continue
        if not db.is_file():
            raise UserError(f"{name}: no such episode file or directory, and no database {db} to look it up in")
        with Store(db) as store:
            kind, found = store.find(name)
            records = [r for r in store.episodes(found) if r.status != "failed"] if kind == "run" else [store.episode(found)]

        def save(record: Episode, db: Path = db) -> None:
            with Store(db) as store:
                store.replace_verdicts(record.id, record.verdicts)

        targets += [Target(f"{r.id} ({r.cell or r.setting})", r, save) for r in records]
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


async def grade_episodes(config: Config, catalog: Catalog, episodes: list[tuple[str, dict]], *, judges: int, seed: int = 0,
                         rubric_file: Path | None = None, fidelity_judge: bool = False, on_graded: OnGraded | None = None,
                         episode_seeds: list[int] | None = None, send_key: bool = True,
                         replay: Endpoint | None = None) -> list[list[Verdict]]:
    """Every judge's verdict on each (label, episode), in order, one episode at a time; `on_graded` after each.

    Judge i of episode n is seeded `seed + episode_seeds[n] + i` (a batch seeds them its episode's seed + i), or
    `seed + i` for every episode without `episode_seeds` (a gold set's items have no seed of their own).
    `replay`: a bundle's endpoint, which answers instead of the configured one."""
    if judges < 1:
        raise UserError(f"--judges {judges}: grading needs at least one judge")
    rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir)
    with contextlib.nullcontext(replay) if replay else endpoint(config, local_slots=1, send_key=send_key) as ep:
        async with ep.models(config) as models:
            if episodes and not replay:  # one test call per distinct evaluator model before grading anything
                await preflight(roles_of(models, simulate=False, judges=judges))
            prompts, results = Prompts(catalog.prompt_dirs), []
            for n, (label, episode) in enumerate(episodes, start=1):
                panel = judge_panel(models["evaluators"], prompts, rubric, rubric_hash, judges=judges,
                                    seed=seed + (episode_seeds[n - 1] if episode_seeds else 0), reasks=config.reasks,
                                    fidelity_judge=fidelity_judge)  # fmt: skip
                results.append(await make_evaluator(panel, catalog)(episode))  # the evaluator graph, run alone
                if on_graded:
                    on_graded(n, len(episodes), label, results[-1])
            return results


async def regrade(names: list[str], config: Config, catalog: Catalog, *, db: Path, judges: int, seed: int = 0,
                  rubric_file: Path | None = None, fidelity_judge: bool = False,
                  on_graded: OnGraded | None = None, send_key: bool = True, replay: Endpoint | None = None) -> list[list[dict]]:
    """Grade stored episodes again and save each as it is graded; earlier verdicts are kept as history. The rubric and
    judges' prompts are kept in the store by hash, as a batch keeps them, so `compare` can show how they differ.
    `replay`: a bundle's endpoint, which answers instead of the configured one."""
    targets = grading_targets(names, db)
    if any(not Path(name).exists() for name in names):  # some come from the store
        rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir)
        with Store(db) as store:
            store.save_texts(judge_texts(Prompts(catalog.prompt_dirs), rubric, rubric_hash))

    def save(n: int, total: int, label: str, verdicts: list[dict]) -> None:
        target = targets[n - 1]
        target.save(with_new_verdicts(target.record, verdicts))
        if on_graded:
            on_graded(n, total, label, verdicts)

    return await grade_episodes(config, catalog, [(t.label, t.record.transcript()) for t in targets], judges=judges, seed=seed,
                                rubric_file=rubric_file, fidelity_judge=fidelity_judge, on_graded=save,
                                episode_seeds=[t.record.seed or 0 for t in targets], send_key=send_key,
                                replay=replay)  # fmt: skip
