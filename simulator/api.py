"""The Python API: every operation of the `nextstep` command line, as functions a notebook or script can call.

The command line is a thin layer over this module: each command parses its flags, calls one function here, and
prints what it returns. Functions that reach a model take the Config fields as keyword arguments (`base_url=`,
`model=`, `evaluator_model=`, `personas_dir=`, `prompts_dir=`, ...) and `config_file=`, as the command line does:
given > NEXTSTEP_* environment > config file > defaults. They block until done; called from a running event loop
(a notebook cell), they run in a worker thread. Bad input raises `simulator.core.errors.UserError`.
Each function imports what its work needs when it runs (the conversation graph and the model client, or the
statistics: pandas, scipy), so importing this module, and so every command's start and `--help`, stays light;
tests/test_startup.py checks it. A new function does the same: light imports at the top, its work's inside.

    from simulator import api
    batch = api.run_batch({"personas": "all", "reps": 2}, db="n.db", base_url="http://localhost:8000/v1")
    df = api.load_frame(batch.run_id, db="n.db")
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simulator.conversation.catalog import Catalog, load_catalog, profile_of
from simulator.core.errors import UserError
from simulator.core.files import export_target, output_file, write_atomic
from simulator.models.config import Config, load_config
from simulator.models.local import DEFAULT_SLOTS, serve as _serve
from simulator.runs.experiment import FAIL_FAST, Experiment, Progress, grid
from simulator.storage.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from simulator.core.records import Episode, Turn
    from simulator.models.cache import ResponseCache
    from simulator.runs.batch import Cell
    from simulator.runs.branch import Treatment
    from simulator.runs.grading import OnGraded

__all__ = [
    "BatchResult", "Experiment", "Progress", "audit_personas", "branch", "cache_info", "calibrate", "catalog",
    "clear_cache", "compare", "config", "episodes", "export", "export_bundle", "grade", "grid", "labellers_agreement",
    "load_episode", "load_episodes", "load_frame", "load_run", "plan_batch", "plan_branch", "plan_reps", "play",
    "report", "resolve_run", "rubric_anchors", "run_batch", "run_episode", "runs", "save_episode", "serve", "show",
    "summarize", "write_report",
]  # fmt: skip

DB = Path("nextstep.db")


def _wait(coro):
    """Run a coroutine to its end; from inside a running event loop (a notebook), in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _existing(db: Path | str) -> Path:
    """`db` if it is a file, else a UserError: reading a run must not create an empty database."""
    if not Path(db).is_file():
        raise UserError(f"{db}: no such database (run a batch first, or pass --db)")
    return Path(db)


def resolve_run(run_id: str, db: Path | str) -> str:
    """A run's whole id from its id or a unique prefix; an ambiguous or unknown one lists the candidates or the closest."""
    with Store(_existing(db)) as store:
        return store.resolve_run(run_id)


# --- configuration and catalog -------------------------------------------------------------------------------------


def config(config_file: Path | None = None, **config_flags) -> Config:
    """The merged configuration: the flags given (not None) > NEXTSTEP_* environment > config file > defaults."""
    return load_config(config_file, **config_flags)


def catalog(config_file: Path | None = None, **config_flags) -> Catalog:
    """The settings, personas and strategies, with `personas_dir` and `prompts_dir` overriding the shipped files."""
    c = config(config_file, **config_flags)
    return load_catalog(c.personas_dir, c.prompts_dir)


# --- simulating -----------------------------------------------------------------------------------------------------


def run_episode(setting: str = "supermarket", persona: str = "unsure", strategy: str = "common_interest", *,
                practitioner_gender: str = "man", persona_gender: str = "woman", seed: int = 0, judges: int = 1,
                rubric_file: Path | None = None, fidelity_judge: bool = False, db: Path | str | None = None,
                on_start: Callable[[dict], None] | None = None, on_turn: Callable[[Turn], None] | None = None,
                config_file: Path | None = None, **config_flags) -> Episode:
    """Simulate one episode and grade it with `judges` judges; returns the episode record (a failure is in it, not raised).

    `db`: also store it there, in run 'watch' (the path is checked first). `on_start(about)` once the endpoint is up
    (`about`: the scenario, seed, backend and the strategy's caution); `on_turn(turn)` after each turn. `max_turns`
    defaults to 8 here.
    """
    if db is not None:
        output_file(db, "--db")
    from simulator.conversation.graph import Scenario
    from simulator.runs.one import run_one
    from simulator.runs.played import save_watched

    c = config(config_file, **config_flags)
    scenario = Scenario(setting, persona, strategy, profile_of(practitioner_gender, persona_gender))
    record = _wait(run_one(c, load_catalog(c.personas_dir, c.prompts_dir), scenario, seed=seed, judges=judges,
                           rubric_file=rubric_file, fidelity_judge=fidelity_judge, on_start=on_start, on_turn=on_turn))  # fmt: skip
    if db is not None:
        save_watched(db, record)
    return record


def save_episode(record: Episode, out: Path | str = "episodes") -> Path:
    """Write an episode record to `out/ID.json`; returns the file."""
    from simulator.storage.episode_files import write_episode

    return write_episode(record, Path(out) / f"{record.id}.json")


def play(role: str, setting: str = "supermarket", persona: str = "unsure", strategy: str = "common_interest", *,
         practitioner_gender: str = "man", persona_gender: str = "woman", seed: int = 0, judges: int = 1,
         db: Path | str = DB, read: Callable[[str], str] = input, say: Callable[[str], None] = print,
         on_start: Callable[[dict], None] | None = None, on_turn: Callable[[Turn], None] | None = None,
         config_file: Path | None = None, **config_flags) -> tuple[Episode, str]:
    """A person plays `role` (practitioner or persona) through `read` and `say`, the model the other; the episode is
    graded and stored in run 'play-ROLE' of `db`. Returns (record, run id)."""
    from simulator.conversation.graph import Scenario
    from simulator.conversation.play import ROLES, Person
    from simulator.runs.one import run_one
    from simulator.runs.played import save_played

    if role not in ROLES:
        raise UserError(f"--as {role!r}: choose practitioner or persona")
    output_file(db, "--db")
    c = config(config_file, **config_flags)
    scenario = Scenario(setting, persona, strategy, profile_of(practitioner_gender, persona_gender))
    record = _wait(run_one(c, load_catalog(c.personas_dir, c.prompts_dir), scenario, seed=seed, judges=judges,
                           on_start=on_start, on_turn=on_turn, person=role, answer=Person(read, say).answer))  # fmt: skip
    return record, save_played(db, record, role)


@dataclass
class BatchResult:
    """A finished (or stopped) batch: its run id, and the counters of this session; a replay also says where its
    records differ from the bundle's (`differences`, [] when they are equal)."""

    run_id: str
    progress: Progress
    differences: list[str] | None = None


def plan_batch(experiment: Experiment | dict | Path | None = None, *, resume: str | None = None, db: Path | str = DB,
               config_file: Path | None = None, rubric_file: Path | None = None, **config_flags) -> tuple[Experiment, list[Cell], dict]:
    """What `run_batch` with these arguments would run, nothing run: (grid, cells, bound on calls and tokens)."""
    from simulator.runs.batch import plan_grid

    resume = resume and resolve_run(resume, db)
    return plan_grid(experiment, db=db, resume=resume, config_file=config_file, rubric_file=rubric_file, **config_flags)


def run_batch(experiment: Experiment | dict | Path | None = None, *, resume: str | None = None, db: Path | str = DB,
              run_id: str | None = None, concurrency: int | None = None, max_tokens: int | None = None,
              max_failures: int | None = None, max_cost: float | None = None, fail_fast: int = FAIL_FAST,
              rubric_file: Path | None = None,
              on_progress: Callable[[Progress], None] | None = None, replay: Path | str | None = None,
              ray: str | None = None, actors: int | None = None, config_file: Path | None = None,
              **config_flags) -> BatchResult:
    """Run a grid (an Experiment, a dict of its fields, an experiment YAML path, or None for the default) into `db`.

    Resumable: the same call again skips succeeded episodes, retries failed ones and grades ungraded ones;
    `resume=RUN_ID` continues a stored run with its grid and settings (config flags given override them).
    Before any episode, one test call per distinct model: an endpoint that refuses it raises UserError, nothing run.
    `fail_fast` N stops the batch when the first N episodes to end all failed with the same error (0: never).
    `max_tokens` and `max_cost` (US dollars; every model needs a known price) stop scheduling episodes once spent.
    `replay=BUNDLE` makes a bundled run again (`export_bundle`) with no endpoint: every answer comes from the bundle.
    `ray` spreads the episodes over Ray actors (the extra `nextstep[ray]`) against a shared endpoint (`base_url`): a
    cluster's address, or "" for $NEXTSTEP_RAY_ADDRESS or else a new local instance; `actors` of them (default: one per
    CPU of the cluster), each with `concurrency` requests in flight; this process alone writes `db`.
    """
    from simulator.runs.batch import run_grid
    from simulator.runs.bundle import replay_batch

    output_file(db, "--db")
    resume = resume and resolve_run(resume, db)
    final: list[Progress] = []

    def remember(p: Progress) -> None:
        final[:] = [p]
        if on_progress:
            on_progress(p)

    if replay is not None:
        if ray is not None:
            raise UserError("--replay reaches no endpoint: leave out --ray")
        if experiment is not None or resume or run_id:
            raise UserError("--replay makes the bundled run again: leave out the grid flags, --experiment, --resume and --run-id")
        run, differences = _wait(replay_batch(Path(replay), db=Path(db), on_progress=remember))
        return BatchResult(run, final[0], differences)

    run = _wait(run_grid(experiment, db=db, run_id=run_id, resume=resume, concurrency=concurrency, max_tokens=max_tokens,
                         max_failures=max_failures, max_cost=max_cost, config_file=config_file, rubric_file=rubric_file,
                         on_progress=remember, fail_fast=fail_fast, ray=ray, actors=actors, **config_flags))  # fmt: skip
    return BatchResult(run, final[0])


def plan_branch(source: str, *, at: str, strategy: str | None = None, persona: str | None = None,
                prompts_dir: Path | None = None, practitioner_model: str | None = None, persona_model: str | None = None,
                reps: int = 4, db: Path | str = DB) -> dict:
    """What `branch` with these arguments would run, read from the store before any call: {'continuations': how many
    (both arms), 'warnings': out-of-character parents, a treatment that is what the parents already had}."""
    from simulator.conversation.prompts import SIMULATION_PROMPTS, Prompts
    from simulator.runs.branch import parents

    with Store(_existing(db)) as store:
        points, _ = parents(store, source, at)
    records, warnings = [p for p, _ in points], []
    off = [r.id for r in records if r.in_character is False]
    if off:
        warnings.append(f"{len(off)} of {len(records)} parent episode(s) are out of character (e.g. {', '.join(off[:3])}): "
                        "both arms continue a persona that already left its type")  # fmt: skip
    given = {"--strategy": strategy, "--persona": persona, "--prompts-dir": prompts_dir,
             "--practitioner-model": practitioner_model, "--persona-model": persona_model}  # fmt: skip
    made = lambda r, role: r.provenance.models.get(role) if r.provenance else None  # noqa: E731
    prompts = Prompts(load_catalog(None, prompts_dir).prompt_dirs) if prompts_dir else None
    already = {"--strategy": lambda r: r.strategy == strategy, "--persona": lambda r: r.persona == persona,
               "--practitioner-model": lambda r: made(r, "practitioner") == practitioner_model,
               "--persona-model": lambda r: made(r, "persona") == persona_model,
               "--prompts-dir": lambda r: bool(r.provenance) and all(
                   r.provenance.prompts.get(n) == prompts.hash(n) for n in SIMULATION_PROMPTS)}  # fmt: skip
    changes = [flag for flag, value in given.items() if value is not None]
    if changes and all(all(already[flag](r) for r in records) for flag in changes):
        warnings.append(f"the treatment equals the control: every parent already has {', '.join(changes)} as given, so "
                        "both arms run the same conversation")  # fmt: skip
    return {"continuations": 2 * reps * len(points), "warnings": warnings}


def branch(source: str, *, at: str, strategy: str | None = None, persona: str | None = None, prompts_dir: Path | None = None,
           practitioner_model: str | None = None, persona_model: str | None = None, reps: int = 4, judges: int = 1,
           max_turns: int | None = None, base_prompts: Path | None = None, run_id: str | None = None,
           concurrency: int | None = None, db: Path | str = DB, on_saved: Callable[[Episode], None] | None = None,
           ray: str | None = None, actors: int | None = None, config_file: Path | None = None,
           **config_flags) -> tuple[str, list[str], Treatment]:
    """Continue stored episodes (an episode id or a run id) from the turn `at`, under a change and unchanged, paired.

    The change is any of `strategy`, `persona`, `prompts_dir`, `practitioner_model`, `persona_model`;
    `base_prompts` is the prompt directory the parents were made with, if their run did not record it.
    `ray` and `actors` run the continuations on Ray actors, as `run_batch`'s do.
    Returns (branch run id, the episodes left out with why, the treatment).
    """
    from simulator.runs.branch import Treatment, run_branches

    treatment = Treatment(strategy=strategy, persona=persona, prompts_dir=prompts_dir,
                          practitioner_model=practitioner_model, persona_model=persona_model)  # fmt: skip
    run, skipped = _wait(run_branches(source, at=at, treatment=treatment, reps=reps, db=_existing(db), judges=judges,
                                      run_id=run_id, max_turns=max_turns, concurrency=concurrency, config_file=config_file,
                                      on_saved=on_saved, ray=ray, actors=actors,
                                      **({"prompts_dir": base_prompts} | config_flags)))  # fmt: skip
    return run, skipped, treatment


# --- grading --------------------------------------------------------------------------------------------------------


def grade(episodes: list[str], *, db: Path | str = DB, judges: int | None = None, seed: int | None = None,
          rubric_file: Path | None = None, fidelity_judge: bool = False, on_graded: OnGraded | None = None,
          replay: Path | str | None = None, ray: str | None = None, actors: int | None = None,
          config_file: Path | None = None, **config_flags) -> dict:
    """Grade stored episodes again, without re-simulating: episode JSON files or directories, run ids or episode ids.

    Stored episodes are graded with their run's stored settings (endpoint, models, prompt and persona directories,
    rubric), as `batch --resume` does; the flags given beat them. Each episode's new verdicts are saved as it is
    graded, once every judge has answered; earlier ones are kept as history. Where an endpoint failed the earlier
    verdicts stay current; run again, it grades only what is missing (verdicts already given with this rubric and
    panel are kept). Returns {'verdicts': per episode, every judge's current verdict; 'judge_alpha': agreement between
    judges, or None for one judge; 'graded': how many were graded now; 'skipped': how many were already graded with
    this rubric and panel; 'failed': [(label, error)] of those whose earlier verdicts stay current;
    'summary': `grading_summary`, the counts `nextstep grade` prints}.
    `replay=BUNDLE` answers from the bundle alone, with the judges and seeds of its verdicts unless `judges`/`seed`
    are given, and adds 'differences': where the run's records now differ from the bundle's.
    `ray` and `actors` grade the episodes on Ray actors, as many at once as they take (`run_batch`'s); without, one at
    a time. Either way they are saved, and passed to `on_graded`, in order.
    """
    from evaluations.analysis.agreement import judge_alpha
    from evaluations.analysis.summary import grading_summary
    from simulator.runs.batch import here, ray_executor, run_config
    from simulator.runs.bundle import replay_grading
    from simulator.runs.grading import regrade, stored_settings

    replayed = {}
    if replay is not None and ray is not None:
        raise UserError("--replay reaches no endpoint: leave out --ray")
    if replay is not None:
        done, replayed["differences"] = _wait(replay_grading(Path(replay), episodes, db=Path(db), judges=judges, seed=seed,
                                                             on_graded=on_graded))  # fmt: skip
        several = max(map(len, done.verdicts), default=0) > 1
    else:
        judges, seed = 1 if judges is None else judges, seed or 0
        stored = stored_settings(episodes, Path(db))
        c, send_key = run_config(config_file, stored, **config_flags)
        rubric_file = rubric_file or (Path(stored["rubric_file"]) if stored.get("rubric_file") else None)
        executor = ray_executor(ray, actors, c) if ray is not None else here
        done = _wait(regrade(episodes, c, load_catalog(c.personas_dir, c.prompts_dir), db=Path(db), judges=judges,
                             seed=seed, rubric_file=rubric_file, fidelity_judge=fidelity_judge, on_graded=on_graded,
                             send_key=send_key, executor=executor))  # fmt: skip
        several = judges > 1
    return {"verdicts": done.verdicts, "judge_alpha": judge_alpha(done.verdicts) if several else None,
            "graded": done.graded, "skipped": done.skipped, "failed": done.failed, "summary": grading_summary(done.verdicts),
            **replayed}  # fmt: skip


def calibrate(gold: Path | str, *, judges: int = 1, seed: int = 0, rubric_file: Path | None = None,
              output: Path | str | None = None, on_graded: OnGraded | None = None, config_file: Path | None = None,
              **config_flags) -> dict:
    """Grade a labelled gold set (JSONL) and measure the judges against it: {'report': `calibration`, 'verdicts': by item}.

    `output`: also write every verdict there as JSON as it comes, and the report once all are in (its folder is
    checked before any call); a file left there by an interrupted calibration is resumed: verdicts the same judges
    already gave are kept, only the rest are graded.
    """
    from evaluations.analysis.agreement import calibration
    from evaluations.judge.gold import load_gold
    from simulator.runs.grading import grade_episodes, save_calibration, saved_verdicts

    if output is not None:
        output_file(output, "-o")
    c = config(config_file, **config_flags)
    cat = load_catalog(c.personas_dir, c.prompts_dir)
    items = load_gold(Path(gold), cat)
    output = Path(output) if output is not None else None
    saved = saved_verdicts(output)
    so_far = {i.id: saved[i.id] for i in items if i.id in saved}

    def graded(n: int, total: int, label: str, verdicts: list) -> None:
        if output is not None:
            so_far[label] = verdicts
            save_calibration(output, None, so_far)
        if on_graded:
            on_graded(n, total, label, verdicts)

    verdicts = _wait(grade_episodes(c, cat, [(item.id, item.episode()) for item in items], judges=judges, seed=seed,
                                    rubric_file=rubric_file, on_graded=graded,
                                    previous=[saved.get(i.id, []) for i in items]))  # fmt: skip
    result = {"report": calibration(items, verdicts, seed=seed), "verdicts": dict(zip((i.id for i in items), verdicts))}
    if output is not None:
        save_calibration(output, result["report"], result["verdicts"])
    return result


def labellers_agreement(first: Path | str, second: Path | str, *, config_file: Path | None = None, **config_flags) -> dict:
    """How far two labellers of the same sample agree (two gold files, e.g. two `nextstep label` passes of a run): per
    condition whether both find it applicable, then exact, within-one and weighted kappa where both scored; per flag
    kappa; what was exchanged. Over the episodes both labelled; the ones only one did are listed. No model is called."""
    from evaluations.analysis.agreement import labellers_agreement as agree
    from evaluations.judge.gold import load_gold

    c = config(config_file, **config_flags)
    cat = load_catalog(c.personas_dir, c.prompts_dir)
    a, b = load_gold(Path(first), cat), load_gold(Path(second), cat)
    if not {x.id for x in a} & {x.id for x in b}:
        raise UserError(f"{first} and {second}: no episode labelled in both (give two labellers' files of the same sample)")
    return agree(a, b)


def rubric_anchors(rubric_file: Path | None = None) -> tuple[dict[str, dict[int, str]], tuple[str, ...]]:
    """What a labeller sees beside each condition: ({condition: {1: text, 3: text, 5: text}}, the flag ids)."""
    from evaluations.judge.rubric import load_rubric

    rubric, _ = load_rubric(rubric_file)
    return {c: dict(sorted(cond.anchors.items())) for c, cond in rubric.conditions.items()}, tuple(rubric.flags)


# --- reading runs ---------------------------------------------------------------------------------------------------


def runs(db: Path | str = DB) -> list[dict]:
    """Every run in `db`, with its counts of episodes by status and its tokens."""
    with Store(_existing(db)) as store:
        return [r | store.completion(r["id"]) for r in store.runs()]


def load_run(run_id: str, db: Path | str = DB) -> dict:
    """A stored run: its id, spec (grid, models, prompt hashes) and the settings it resumes with."""
    with Store(_existing(db)) as store:
        return store.run(store.resolve_run(run_id))


def load_episodes(run_id: str, db: Path | str = DB) -> list[Episode]:
    """A run's episode records (turns, calls, verdicts), as the store keeps them."""
    with Store(_existing(db)) as store:
        return store.episodes(store.resolve_run(run_id))


def load_episode(episode_id: str, db: Path | str = DB) -> Episode:
    """One episode record by id, or by a unique prefix of it."""
    with Store(_existing(db)) as store:
        return store.episode(episode_id)


def episodes(run_id: str, db: Path | str = DB, *, persona: str | None = None, setting: str | None = None,
             strategy: str | None = None, status: str | None = None, contact: bool | None = None,
             unusable: bool = False) -> list[dict]:
    """A run's episodes as rows (id, cell, status, outcome), filtered: `contact` True or False keeps those that did or
    did not end in contact (number or email); `unusable` keeps only those the statistics leave out."""
    with Store(_existing(db)) as store:
        return store.listing(store.resolve_run(run_id), persona=persona, setting=setting, strategy=strategy, status=status,
                             contact=contact, unusable=unusable)  # fmt: skip


def load_frame(run_id: str, db: Path | str = DB) -> pd.DataFrame:
    """A run as a pandas DataFrame, one row per episode: status, outcome, private state, a column per condition."""
    from evaluations.analysis.frame import load_run as _frame

    return _frame(resolve_run(run_id, db), db)


def summarize(run_id: str, db: Path | str = DB) -> dict:
    """Per persona x setting: episodes, exclusions, contact rates and mean scores; cautions, judge agreement, tokens."""
    from evaluations.analysis.summary import run_summary

    return run_summary(resolve_run(run_id, db), db)


def show(run_or_episode: str, db: Path | str = DB) -> dict:
    """{'run': the stored run, 'summary': `summarize`} for a run id, else {'episode': the record} (an id or prefix)."""
    with Store(_existing(db)) as store:
        kind, found = store.find(run_or_episode)
        if kind == "episode":
            return {"episode": store.episode(found)}
        run = store.run(found)
    return {"run": run, "summary": summarize(found, db)}


def export(run_id: str, output: Path | str | None = None, fmt: str | None = None, db: Path | str = DB, *,
           force: bool = False) -> tuple[int, Path]:
    """Write a run as jsonl (full records), csv or parquet (one row per episode); returns (episodes, file).

    The format follows `output`'s extension, `output` defaults to RUN_ID.FORMAT, and an existing file is replaced
    only with `force`.
    """
    run_id = resolve_run(run_id, db)
    fmt, output = export_target(run_id, Path(output) if output is not None else None, fmt)
    output_file(output, "-o", force=force)
    if fmt == "jsonl":  # the records as stored: no analysis to import
        with Store(_existing(db)) as store:
            return store.export_jsonl(run_id, output), output
    from evaluations.analysis.frame import export as _export

    return _export(run_id, db, fmt, output), output


def export_bundle(run_id: str, output: Path | str, *, db: Path | str = DB, force: bool = False,
                  config_file: Path | None = None, **config_flags) -> dict:
    """Write a replay bundle: the run's records and every response it used, taken from the response cache (`cache_dir=`),
    with nothing secret in it. `run_batch(replay=...)` and `grade(replay=...)` make the run again from it alone.
    Returns {'episodes', 'responses'}; an existing `output` is replaced only with `force`."""
    from simulator.runs.bundle import write_bundle

    c = config(config_file, **config_flags)
    cache = _cache(c) if c.cache else None
    try:
        return write_bundle(run_id, _existing(db), Path(output), cache, force=force)
    finally:
        if cache:
            cache.close()


# --- analysis -------------------------------------------------------------------------------------------------------


def compare(run_a: str, run_b: str | None = None, *, db: Path | str = DB, include_unfaithful: bool = False) -> dict:
    """Persona reactions within run A (a branch run: treatment vs control, with a 'branch' key), or what changed
    from A to B, paired by cell and seed (with 'a' and 'b' keys); when one of them is the `play-persona` run, the
    personas people played beside the simulated ones (with 'people' and 'models' keys)."""
    from evaluations.analysis import compare as _compare
    from evaluations.analysis.frame import scan_run

    run_a, run_b = resolve_run(run_a, db), run_b and resolve_run(run_b, db)
    db = Path(db)
    branches = _compare.load_branches(run_a, db) if run_b is None else None
    if branches:
        result = _compare.compare_branches(*branches, include_unfaithful=include_unfaithful)
    elif run_b is None:
        scan = scan_run(run_a, db)  # one pass over the run, its records never held at once
        result = _compare.run_analysis(scan.frame, scan.judges, include_unfaithful=include_unfaithful)
    else:
        runs = _compare.load_pair(run_a, run_b, db)
        if _compare.played_persona(runs[0]) or _compare.played_persona(runs[1]):  # people beside models, unpaired
            result = _compare.people_vs_models(*runs, include_unfaithful=include_unfaithful)
        else:
            result = _compare.compare_runs(*runs, include_unfaithful=include_unfaithful)
    with Store(db) as store:  # how far each run is: a half-done grid must not pass for the run
        return result | {"completion": {r: store.completion(r) for r in (run_a, run_b) if r}}


def plan_reps(run_id: str, *, contact_change: float = 0.1, score_change: float = 0.5, alpha: float = 0.05,
              power: float = 0.8, db: Path | str = DB, include_unfaithful: bool = False) -> dict:
    """Repetitions per cell a paired `compare A B` needs to detect the given changes, from this run's variance."""
    from evaluations.analysis.frame import load_run as _frame
    from evaluations.analysis.power import plan

    if not (0 < alpha < 1 and 0 < power < 1):
        raise UserError(f"--alpha {alpha} and --power {power} must both lie between 0 and 1")
    return plan(_frame(resolve_run(run_id, db), db), contact_change=contact_change, score_change=score_change, alpha=alpha,
                power=power, include_unfaithful=include_unfaithful)  # fmt: skip


def audit_personas(run_id: str, *, db: Path | str = DB, personas_dir: Path | None = None) -> dict:
    """Persona fidelity: does each type behave as its file says (`personas_dir`, or the shipped ones), told apart?"""
    from evaluations.analysis.fidelity import audit

    with Store(_existing(db)) as store:
        run_id = store.resolve_run(run_id)
        run = store.run(run_id)
        return audit(store.each_episode(run_id), load_catalog(personas_dir).personas, run_catalog=run["spec"].catalog)


def report(run_id: str, *, vs: str | None = None, db: Path | str = DB, personas_dir: Path | None = None,
           include_unfaithful: bool = False, all_transcripts: bool = False) -> str:
    """One self-contained HTML report of a run (with `vs`, paired against that baseline), as a string.
    `include_unfaithful` keeps out-of-character episodes in the statistics, as `compare` does; `all_transcripts`
    shows every transcript, not the first 300."""
    from evaluations.analysis.report import render_report

    return render_report(resolve_run(run_id, db), _existing(db), vs=vs and resolve_run(vs, db), personas_dir=personas_dir,
                         include_unfaithful=include_unfaithful, all_transcripts=all_transcripts)


def write_report(run_id: str, output: Path | str | None = None, *, force: bool = False, db: Path | str = DB,
                 **report_flags) -> Path:
    """Write `report` to `output` (default RUN_ID.html), checked before the work: its folder must exist, and an
    existing file is replaced only with `force`. Returns the file."""
    output = Path(output) if output is not None else Path(f"{resolve_run(run_id, db)}.html")
    output_file(output, "-o", force=force)
    return write_atomic(output, report(run_id, db=db, **report_flags))


# --- the response cache ---------------------------------------------------------------------------------------------


def cache_info(config_file: Path | None = None, **config_flags) -> dict:
    """The response cache the configuration names: {'on', 'path', 'entries', 'used_bytes', 'disk_bytes', 'max_bytes',
    'expiry_s', 'oldest', 'newest' (epoch seconds), 'broken' (why it is unusable, or None)}."""
    c = config(config_file, **config_flags)
    cache = _cache(c)
    try:
        return {"on": c.cache, **cache.info()}
    finally:
        cache.close()


def clear_cache(config_file: Path | None = None, **config_flags) -> dict:
    """Empty the response cache (a damaged one is deleted): {'path', 'removed' (entries, or -1 when it was unreadable)}."""
    cache = _cache(config(config_file, **config_flags))
    return {"path": str(cache.path), "removed": cache.clear()}


def _cache(c: Config) -> ResponseCache:
    from simulator.models.cache import ResponseCache, duration, user_cache_dir  # the cache's module loads the model client

    return ResponseCache.open(c.cache_dir or user_cache_dir(), max_bytes=c.cache_max_mb << 20,
                              expiry_s=duration(c.cache_expiry) if c.cache_expiry else None)  # fmt: skip


def serve(port: int = 8080, slots: int = DEFAULT_SLOTS) -> int:
    """Serve the embedded model's OpenAI-compatible endpoint on 127.0.0.1 in the foreground; returns its exit code."""
    return _serve(port, slots)
