"""Batch runs: a factorial grid of episodes, run concurrently, stored as they end, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from simulator.conversation.catalog import Catalog, entry_hash, load_catalog
from simulator.conversation.graph import LINE_TOKENS, Context, Scenario
from simulator.conversation.prompts import SIMULATION_PROMPTS, Prompts
from simulator.conversation.episode import max_rounds
from simulator.conversation.runner import crashed_episode, run_episode
from simulator.core.records import Call, Episode, RunSpec, Verdict
from simulator.core.errors import StorageError, UserError
from simulator.core.redact import redact
from simulator.models.backends import Endpoint, endpoint, role_models, role_prices
from simulator.models.config import Config, load_config
from simulator.models.prices import money
from simulator.storage.store import Store

from .collection import fewer_collections
from .preflight import preflight, roles_of
from .experiment import FAIL_FAST, Experiment, Progress, as_experiment, grid, load_experiment, profiles_from  # noqa: F401 (the grid's home)

log = logging.getLogger(__name__)

# Config fields stored with a run, so that `nextstep batch --resume RUN_ID` needs nothing else. Never the key, nor the
# name of its variable; the endpoint is stored too, but a resume takes it only as `run_config` says.
RESUME_SETTINGS = ("backend", "model", "practitioner_model", "persona_model", "evaluator_model", "output_mode", "reasks",
                   "timeout", "personas_dir", "prompts_dir", "prices_file")


def with_config(exp: Experiment, config: Config) -> Experiment:
    """max_turns and temperature from the environment or config file wherever the grid leaves them unset.

    So flags > experiment file > NEXTSTEP_* environment > config file > the Experiment's defaults.
    """
    ambient = {"max_turns": config.max_turns, "temperature": config.temperature}
    return exp.model_copy(update={k: v for k, v in ambient.items() if v is not None and k not in exp.model_fields_set})


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    rep: int
    seed: int

    @property
    def key(self) -> str:
        s = self.scenario
        return f"{s.setting}/{s.persona}/{s.strategy}/{s.profile.id}"


def cell_seed(run_seed: int, key: str, rep: int) -> int:
    """A stable seed per cell and repetition: the same grid always gets the same seeds."""
    return int(hashlib.sha256(f"{run_seed}/{key}/{rep}".encode()).hexdigest()[:8], 16) % 2**31


def expand(exp: Experiment) -> list[Cell]:
    """Every episode of the grid, in a stable order."""
    cells = []
    for setting in exp.settings:
        for persona in exp.personas:
            for strategy in exp.strategies:
                for profile in exp.profiles:
                    scenario = Scenario(setting, persona, strategy, profile)
                    key = Cell(scenario, 0, 0).key
                    cells += [Cell(scenario, rep, cell_seed(exp.seed, key, rep)) for rep in range(exp.reps)]
    return cells


# What a dry run assumes a conversation call takes: TALK_BASE_TOKENS of instructions, then the transcript at the lines'
# cap (LINE_TOKENS). At round k a call has 2k - 1 lines in view on average over its four kinds (the practitioner's line
# sees 2(k - 1), its intent and the persona's line 2k - 1, her state 2k), so over R rounds R lines a call. The base is
# measured: the default batch's first-round prompts are 189, 195, 312 and 574 tokens (mean 318) with one line of about
# 40 in view. Each call, a judge's too, has CALL_COMPLETION_TOKENS of answer, and none is served from a cache; the
# preflight's test call (`{"ok": true}`) is 38 + 6 tokens there.
TALK_BASE_TOKENS, CALL_COMPLETION_TOKENS, TEST_CALL_TOKENS = 280, 100, 50


def estimate(exp: Experiment, cells: list[Cell], reasks: int, judge_max_calls: Callable[[int, int], int], catalog: Catalog,
             prices: dict | None = None, test_calls: int = 0, judge_prompt: Callable[[str, str, int], int] | None = None) -> dict:
    """A true upper bound on calls; tokens, roughly, if nothing is re-asked; and their cost at most and then.

    A round is at most 4 calls (the practitioner's line and its intent, the persona's line and its private state),
    each tried up to reasks + 1 times; a cell has at most `max_rounds` rounds (one more where its strategy has a
    parting line); `judge_max_calls(rounds, reasks)` bounds one judge on one episode of that many rounds.
    A conversation call in a cell of R rounds is taken as TALK_BASE_TOKENS + R x LINE_TOKENS of prompt, a judge's as
    `judge_prompt(setting, persona, rounds)` (the same as a conversation call when not given), each with
    CALL_COMPLETION_TOKENS of answer.
    `prices` ({'practitioner', 'persona', 'evaluators'}: a Price or None each) prices the calls, judge j at evaluator
    model j modulo their number; a cost is None if a role's price is unknown (or no prices are given). `test_calls`
    are the preflight's, one per distinct model, made once before the episodes: counted in calls and tokens.
    """
    rounds = [max_rounds(exp.max_turns, catalog.strategies[c.scenario.strategy].parting is not None) for c in cells]
    talked = [TALK_BASE_TOKENS + r * LINE_TOKENS for r in rounds]
    judged = [judge_prompt(c.scenario.setting, c.scenario.persona, r) if judge_prompt else t
              for c, r, t in zip(cells, rounds, talked)]  # fmt: skip

    def calls(tries: int) -> dict[str, list[tuple[int, int]]]:
        """Per role, (calls, prompt tokens a call) of each cell."""
        talk = [(2 * tries * r, t) for r, t in zip(rounds, talked)]
        judge = [(judge_max_calls(r, tries - 1), p) for r, p in zip(rounds, judged)]
        return {"practitioner": talk, "persona": talk} | {f"judge {j}": judge for j in range(exp.judges)}

    def count(per_role: dict) -> int:
        return sum(n for cells in per_role.values() for n, _ in cells)

    def cost(per_role: dict) -> float | None:
        if prices is None:
            return None
        evaluators = prices["evaluators"]
        by_role = {role: prices[role] if role in prices else evaluators[int(role.split()[1]) % len(evaluators)] for role in per_role}
        if any(p is None for p in by_role.values()):
            return None
        return sum(n * by_role[r].cost(p, 0, CALL_COMPLETION_TOKENS) for r, cells in per_role.items() for n, p in cells)

    at_most, typical = calls(reasks + 1), calls(1)
    tokens = sum(n * (p + CALL_COMPLETION_TOKENS) for cells in typical.values() for n, p in cells)
    return {"episodes": len(cells), "reasks": reasks, "test_calls": test_calls, "calls_at_most": count(at_most) + test_calls,
            "tokens_roughly": tokens + test_calls * TEST_CALL_TOKENS,
            "talk_call_tokens": round(sum(talked) / len(talked)) + CALL_COMPLETION_TOKENS if cells else None,
            "judge_call_tokens": round(sum(judged) / len(judged)) + CALL_COMPLETION_TOKENS if exp.judges and cells else None,
            "cost_at_most": cost(at_most), "cost_roughly": cost(typical)}  # fmt: skip


def run_spec(exp: Experiment, catalog: Catalog, config: Config, backend: str, models: dict, rubric_hash: str | None,
             judge_prompts: dict[str, str] | None = None) -> RunSpec:
    """What makes a run what it is; its hash is the default run id, so an edited prompt, rubric or catalog entry
    makes a new run. `judge_prompts` is {name: hash} of the evaluator prompts, when episodes are graded."""
    prompts = Prompts(catalog.prompt_dirs)
    return RunSpec(
        experiment=exp.model_dump(mode="json"),
        backend=backend,
        models={"practitioner": models["practitioner"].name, "persona": models["persona"].name,
                "evaluators": [m.name for m in models["evaluators"]]},
        reasks=config.reasks,
        prompts={name: prompts.hash(name) for name in SIMULATION_PROMPTS} | (judge_prompts or {}),
        rubric_hash=rubric_hash,
        catalog={f"{kind}/{name}": entry_hash(getattr(catalog, kind)[name])
                 for kind in ("settings", "personas", "strategies") for name in getattr(exp, kind)},
    )  # fmt: skip


def _differing(spec: RunSpec, other: RunSpec) -> list[str]:
    """The spec fields that differ: `_differing(RunSpec(reasks=1), RunSpec(reasks=2))` -> ['reasks']."""
    a, b = spec.identity(), other.identity()
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def spec_id(spec: RunSpec) -> str:
    return "run-" + hashlib.sha256(json.dumps(spec.identity(), sort_keys=True).encode()).hexdigest()[:10]


def run_settings(config: Config, *, concurrency: int | None = None, rubric_file: Path | None = None) -> dict:
    """The non-secret settings a run is resumed with: endpoint, models, output mode, files, limits; never the key."""
    values = config.model_dump(mode="json", include=set(RESUME_SETTINGS)) | {"base_url": redact(config.base_url)}
    for key in ("personas_dir", "prompts_dir"):
        values[key] = values[key] and str(Path(values[key]).resolve())
    return values | {"rubric_file": rubric_file and str(Path(rubric_file).resolve()), "concurrency": concurrency}


def run_config(config_file: Path | None, stored: dict, **flags) -> tuple[Config, bool]:
    """(config, whether to send it the key): flags given > a resumed run's stored settings > NEXTSTEP_* environment >
    config file > defaults.

    The secret and where it goes come from the user, never from a database (which anyone may have edited): the key's
    variable is never read from `stored`; the stored endpoint is used only when the user gives none, is named before
    any call, and gets a key only if the user names its variable (--api-key-env, NEXTSTEP_API_KEY_ENV, config file).
    """
    given = {k: v for k, v in flags.items() if v is not None}
    config = load_config(config_file, **({k: stored.get(k) for k in RESUME_SETTINGS} | given))
    kept = stored.get("base_url")
    if not kept or kept == redact(config.base_url):
        return config, True
    if config.base_url:
        log.warning("the run was made against %s; this session uses %s", kept, redact(config.base_url))
        return config, True
    named = "api_key_env" in config.model_fields_set
    key = f"with the key in ${config.api_key_env}" if named else "sending no API key (name its variable with --api-key-env)"
    log.warning("using the run's stored endpoint %s, %s; --base-url chooses another", kept, key)
    return config.model_copy(update={"base_url": kept}), named


def stored_run(db: Path | str, run_id: str) -> tuple[dict, dict]:
    """(grid, settings) of a stored run; runs stored before settings were kept have none."""
    with Store(Path(db)) as store:
        run = store.run(run_id)
    return run["spec"].experiment, run["settings"] or {}


def _crashed(cell: Cell, error: BaseException) -> Episode:
    """The record of an episode that raised instead of ending: stored as failed, with the error."""
    log.debug("episode crashed: %s", "".join(traceback.format_exception(error)))
    return crashed_episode(cell.scenario, cell.seed, error)


@dataclass(frozen=True)
class Episodes:
    """Where a batch's episodes run: here, on `models`, through the graph and the judges. All but the models can be
    pickled, so a Ray actor (`ray_pool.py`) makes its own copy with models of its own and runs the same code."""

    experiment: Experiment
    catalog: Catalog
    config: Config
    backend: str
    rubric: object = None  # evaluations.judge.rubric.Rubric, when episodes are graded
    rubric_hash: str | None = None
    episode_ids: dict[tuple[str, int], str] | None = None  # a replay: each (cell, rep)'s episode id as it was
    models: dict | None = None

    def shipped(self) -> Episodes:
        """What a Ray actor gets: all but the models."""
        return dataclasses.replace(self, models=None)

    async def opened(self, endpoint: Endpoint, stack: contextlib.AsyncExitStack) -> Episodes:
        """A copy with models of its own on `endpoint`, open until `stack` closes (what a Ray actor runs with)."""
        return dataclasses.replace(self, models=await stack.enter_async_context(endpoint.models(self.config)))

    @functools.cached_property
    def prompts(self) -> Prompts:
        """Loaded once for every episode this copy runs (a copy starts without them, so they are never shipped)."""
        return Prompts(self.catalog.prompt_dirs)

    def evaluator(self, seed: int):
        from evaluations.judge.graph import make_evaluator
        from evaluations.judge.panel import judge_panel

        judges = judge_panel(self.models["evaluators"], self.prompts, self.rubric, self.rubric_hash,
                             judges=self.experiment.judges, seed=seed, reasks=self.config.reasks)  # fmt: skip
        return make_evaluator(judges, self.catalog) if judges else None

    async def simulate(self, cell: Cell) -> Episode:
        """The cell's episode, simulated and graded; a crash is a failed record, bad input (a UserError) is raised."""
        exp, cat = self.experiment, self.catalog
        ctx = Context(self.models["practitioner"], self.models["persona"], cat, self.prompts, cell.scenario,
                      cell.seed, temperature=exp.temperature, max_turns=exp.max_turns, reasks=self.config.reasks,
                      evaluate=self.evaluator(cell.seed))  # fmt: skip
        try:
            return await run_episode(ctx, backend=self.backend, episode_id=(self.episode_ids or {}).get((cell.key, cell.rep)))
        except UserError:
            raise  # bad input (e.g. a prompt with an undefined variable) fails every episode alike
        except Exception as e:  # a bug must not lose the episode: it is stored as failed
            return _crashed(cell, e)

    async def grade(self, record: Episode) -> list[Verdict]:
        """An ungraded episode's verdicts, asking only the judges that did not answer; its conversation is kept."""
        return await self.evaluator(record.seed)(record.transcript(), previous=record.verdicts)


@contextlib.asynccontextmanager
async def here(work, endpoint: Endpoint, concurrency: int) -> AsyncIterator[tuple[object, int]]:
    """Run the episodes of `work` (Episodes, or a branch's Continuations) in this process, `concurrency` at a time:
    (where they run, how many at once)."""
    yield work, concurrency


@dataclass
class Batch:
    """Everything one batch needs; `run()` works through the cells not yet succeeded."""

    experiment: Experiment
    catalog: Catalog
    config: Config
    endpoint: Endpoint
    store: Store
    run_id: str | None = None
    concurrency: int | None = None
    max_tokens: int | None = None
    max_failures: int | None = None
    rubric_file: Path | None = None
    on_progress: Callable[[Progress], None] | None = None
    fail_fast: int = FAIL_FAST
    max_cost: float | None = None  # US dollars
    expected: RunSpec | None = None  # a replay: the spec the run was made with, which this one must match
    episode_ids: dict[tuple[str, int], str] | None = None  # a replay: each (cell, rep)'s episode id as it was
    settings: dict | None = None  # a replay: the run's settings as it was made (not the bundle's temporary files)
    # Where episodes run (`here`, or `ray_pool.actors`): given the Episodes, the endpoint and the concurrency, it yields
    # an object with their `simulate(cell)` and `grade(record)`, and how many episodes may be in flight through it.
    executor: Callable = here

    async def run(self) -> tuple[str, Progress]:
        async with self.endpoint.models(self.config) as models:
            if self.max_cost is not None:
                unpriced = sorted({m.name for m in [models["practitioner"], models["persona"], *models["evaluators"]] if m.price is None})
                if unpriced:
                    raise UserError(f"--max-cost: no price known for {', '.join(unpriced)}; give one in prices.toml "
                                    "(--prices FILE; see README 'Cost')")
            return await self._run(models)

    async def _run(self, models: dict) -> tuple[str, Progress]:
        from evaluations.judge.evaluator import Judge
        from evaluations.judge.rubric import load_rubric

        exp, cat, config = self.experiment, self.catalog, self.config
        rubric, rubric_hash = load_rubric(self.rubric_file, config.prompts_dir) if exp.judges else (None, None)
        prompts = Prompts(cat.prompt_dirs)
        texts = Judge(models["evaluators"][0], prompts, rubric, rubric_hash).texts() if exp.judges else {}
        judge_prompts = {name: digest for digest, (name, _) in texts.items() if name != "rubric"}
        spec = run_spec(exp, cat, config, self.endpoint.backend, models, rubric_hash, judge_prompts)
        if self.expected is not None and (differ := _differing(spec, self.expected)):
            raise UserError(f"this nextstep would not make the bundled run again: its {', '.join(differ)} differ")
        run_id = self.run_id or spec_id(spec)
        settings = self.settings
        if settings is None:
            settings = run_settings(config, concurrency=self.concurrency, rubric_file=self.rubric_file)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextstep-store")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(writer, self.store.claim, run_id)  # refused while another live process writes the run
        done = await loop.run_in_executor(writer, self.store.done, run_id)
        regrade = await loop.run_in_executor(writer, self.store.ungraded, run_id)  # simulated; a judge's endpoint failed
        stored = done | {(r.cell, r.rep) for r in regrade}
        planned = expand(exp)
        cells = [c for c in planned if (c.key, c.rep) not in stored]
        # Before anything is stored or fanned out: a wrong model name, path or key fails here, once.
        roles = roles_of(models, simulate=bool(cells), judges=exp.judges if cells or regrade else 0)
        tested = [] if self.endpoint.replay else await preflight(roles)  # a replay reaches no endpoint
        spec = spec.model_copy(update={"planned": len(planned)})
        await loop.run_in_executor(writer, self.store.create_run, run_id, spec, settings)
        if texts:
            await loop.run_in_executor(writer, self.store.save_texts, texts)
        progress = Progress(run_id, total=len(cells) + len(regrade), skipped=len(done), test_calls=len(tested))
        self._count_tokens(progress, tested)
        if self.max_tokens is not None and progress.tokens >= self.max_tokens:
            progress.stopped = f"token budget of {self.max_tokens:,} reached"
        first_errors: list[str] = []  # of the episodes that ended, while none has succeeded
        episodes = Episodes(exp, cat, config, self.endpoint.backend, rubric, rubric_hash, self.episode_ids, models)

        broken: list[StorageError] = []

        async def saved(write: Callable, *args) -> bool:
            """Write through the writer thread; a database that fails (full, locked, damaged) stops the batch."""
            try:
                await loop.run_in_executor(writer, write, *args)
                return True
            except StorageError as e:  # the episode is not stored: it runs again on resume
                broken.append(e)
                progress.running -= 1
                progress.stopped, progress.fault = progress.stopped or str(e), True
                return False

        async def one(cell: Cell) -> None:
            async with limit:
                if progress.stopped:
                    return
                progress.running += 1
                self._report(progress)
                record = await where.simulate(cell)
                record = record.model_copy(update={"run_id": run_id, "cell": cell.key, "rep": cell.rep})
                if await saved(self.store.save_episode, run_id, cell.key, cell.rep, record):
                    ended(record, record.all_calls())

        async def grade_again(record: Episode) -> None:
            """Grade an ungraded episode with the judges that did not answer; its conversation is kept as it is."""
            async with limit:
                if progress.stopped:
                    return
                progress.running += 1
                self._report(progress)
                verdicts = await where.grade(record)
                if await saved(self.store.replace_verdicts, record.id, verdicts):
                    new = [c for v in verdicts if v not in record.verdicts for c in v.calls]
                    ended(record.with_verdicts(verdicts), new)

        def ended(record: Episode, calls: list[Call]) -> None:
            """Count an episode that ended (simulated, or graded again) with the calls it made just now."""
            progress.running -= 1
            self._count_tokens(progress, calls)
            if record.status == "succeeded":
                progress.done += 1
            else:
                if record.status == "ungraded":
                    progress.ungraded += 1
                else:
                    progress.failed += 1
                    if not (progress.done or progress.ungraded) and len(first_errors) < self.fail_fast:
                        first_errors.append(record.error or "")  # the first episodes to end, while every one failed
                log.warning("episode %s (%s rep %d) %s: %s", record.id, record.cell, record.rep, record.status, record.error)
                if (reason := self.endpoint.exit_reason()) and not progress.stopped:
                    progress.stopped, progress.fault = reason, True
                if self.fail_fast and first_errors == [record.error or ""] * self.fail_fast and not progress.stopped:
                    progress.stopped = f"the first {self.fail_fast} episodes all failed with the same error ({record.error})"
                    progress.fault = True
            if self.max_tokens is not None and progress.tokens >= self.max_tokens and not progress.stopped:
                progress.stopped = f"token budget of {self.max_tokens:,} reached"
            if self.max_cost is not None and progress.cost_usd >= self.max_cost and not progress.stopped:
                progress.stopped = f"cost budget of {money(self.max_cost)} reached"
            if self.max_failures is not None and progress.failed >= self.max_failures and not progress.stopped:
                progress.stopped, progress.fault = f"{progress.failed} failures reached --max-failures", True
            self._report(progress)

        try:
            concurrency = self.concurrency or self.endpoint.concurrency
            executor = self.executor if cells or regrade else here  # nothing to run: no actors to start
            async with executor(episodes, self.endpoint, concurrency) as (where, at_once):
                limit = asyncio.Semaphore(at_once)
                with fewer_collections():
                    await asyncio.gather(*(grade_again(r) for r in regrade), *(one(c) for c in cells))
        finally:
            writer.shutdown(wait=True)
        if broken:
            raise StorageError(f"{broken[0]}; {progress.skipped + progress.done} succeeded episode(s) of run {run_id} stored, "
                               f"those in flight not; resume with: nextstep batch --resume {run_id} --db {self.store.path}")
        progress.finished = True
        self._report(progress)
        return run_id, progress

    def _count_tokens(self, progress: Progress, calls: list[Call]) -> None:
        """Add the tokens the endpoint reported (spent), apart from those of calls the cache answered (saved); warn once
        per run about calls it reported none for."""
        hits = [c for c in calls if c.from_cache]
        progress.cache_hits += len(hits)
        progress.saved_tokens += sum((c.prompt_tokens or 0) + (c.completion_tokens or 0) for c in hits)
        calls = [c for c in calls if not c.from_cache]
        unknown = sum(c.prompt_tokens is None or c.completion_tokens is None for c in calls)
        if unknown and not progress.unknown_usage_calls:
            budget = f"; --max-tokens {self.max_tokens:,} cannot be enforced for them" if self.max_tokens is not None else ""
            log.warning("the endpoint reported no token usage for some calls: their tokens are stored as unknown (null), "
                        "not counted in token totals%s", budget)  # fmt: skip
        progress.unknown_usage_calls += unknown
        progress.tokens += sum((c.prompt_tokens or 0) + (c.completion_tokens or 0) for c in calls)
        progress.unknown_cost_calls += sum(c.cost_usd is None for c in calls)
        progress.cost_usd += sum(c.cost_usd or 0.0 for c in calls)

    def _report(self, progress: Progress) -> None:
        if self.on_progress:
            self.on_progress(progress)


async def run_grid(
    experiment: Experiment | dict | Path | None = None,
    *,
    db: Path | str = "nextstep.db",
    run_id: str | None = None,
    resume: str | None = None,
    concurrency: int | None = None,
    max_tokens: int | None = None,
    max_failures: int | None = None,
    max_cost: float | None = None,
    config: Config | None = None,
    config_file: Path | None = None,
    rubric_file: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    fail_fast: int = FAIL_FAST,
    ray: str | None = None,
    actors: int | None = None,
    **config_flags,
) -> str:
    """Run a grid (an Experiment, a dict of its fields, or an experiment YAML path) and return the run id.

    The same call again resumes the run: succeeded episodes are skipped, failed ones retried;
    `resume=RUN_ID` does the same for a run by id, with the grid and settings stored in it.
    `config_flags` are Config fields (backend, base_url, model, ...), as on the command line; they beat
    a resumed run's stored settings, which beat the environment and `config_file`.
    `on_progress` gets the counters whenever an episode starts or ends, and once at the end. Before any episode, one
    test call per distinct model (a UserError if the endpoint refuses it); `fail_fast` N stops the batch when the
    first N episodes to end all failed with the same error (0: never).
    `ray` runs the episodes on Ray actors (`ray_pool.actors`): the cluster's address, or "" for $NEXTSTEP_RAY_ADDRESS or
    a new local instance; `actors` of them (default: one per CPU), each with `concurrency` requests in flight.
    """
    experiment, stored, (config, send_key), catalog = _prepare(experiment, db, resume, config, config_file, config_flags)
    run_id = resume or run_id
    rubric_file = rubric_file or (Path(stored["rubric_file"]) if stored.get("rubric_file") else None)
    concurrency = concurrency or stored.get("concurrency")
    executor = ray_executor(ray, actors, config) if ray is not None else here
    with Store(Path(db)) as store, endpoint(config, concurrency, send_key=send_key) as ep:
        batch = Batch(experiment, catalog, config, ep, store, run_id, concurrency, max_tokens, max_failures, rubric_file,
                      on_progress, fail_fast, max_cost, executor=executor)  # fmt: skip
        run_id, _ = await batch.run()
    return run_id


def ray_executor(address: str, actors: int | None, config: Config) -> Callable:
    """`ray_pool.actors`, once it is clear that Ray can be used: it is installed, and the endpoint is shared."""
    import importlib.util

    if not config.base_url and config.backend == "local":
        raise UserError("--ray needs an endpoint every machine can reach: give --base-url (a vLLM, Ray Serve or other "
                        "OpenAI-compatible server) or --backend openai; the embedded engine runs on this machine only")
    if importlib.util.find_spec("ray") is None:
        raise UserError("--ray needs Ray: pip install 'nextstep[ray]'")
    from .ray_pool import actors as on_actors

    return on_actors(address or None, actors)


def _prepare(experiment, db, resume: str | None, config: Config | None, config_file: Path | None, flags: dict):
    """(grid resolved against the catalog, a resumed run's stored settings, (config, send the key?), catalog) for a batch."""
    stored = {}
    if resume:
        if experiment is not None:
            raise UserError("--resume takes the grid stored in the run; leave out the grid flags and --experiment")
        experiment, stored = stored_run(db, resume)
    config, send_key = (config, True) if config else run_config(config_file, stored, **flags)
    catalog = load_catalog(config.personas_dir, config.prompts_dir)
    return with_config(as_experiment(experiment), config).resolved(catalog), stored, (config, send_key), catalog


def plan_grid(experiment: Experiment | dict | Path | None = None, *, db: Path | str = "nextstep.db", resume: str | None = None,
              config_file: Path | None = None, rubric_file: Path | None = None, **config_flags) -> tuple[Experiment, list[Cell], dict]:
    """The dry run of `run_grid` with the same arguments: the grid as it would run, its cells, and `estimate`."""
    from evaluations.judge.evaluator import judge_max_calls

    experiment, _, (config, _), catalog = _prepare(experiment, db, resume, None, config_file, config_flags)
    cells = expand(experiment)
    roles = role_models(config)
    models = {roles["practitioner"], roles["persona"], *roles["evaluators"][: experiment.judges]}
    judge_prompt = _judge_prompt(catalog, rubric_file, config.prompts_dir) if experiment.judges else None
    return experiment, cells, estimate(experiment, cells, config.reasks, judge_max_calls, catalog, role_prices(config),
                                       len(models) if cells else 0, judge_prompt)


def _judge_prompt(catalog: Catalog, rubric_file: Path | None, prompts_dir: Path | None) -> Callable[[str, str, int], int]:
    """A judge call's prompt tokens, roughly, by setting, persona and rounds (`judge_prompt_tokens`), each rendered once."""
    from evaluations.judge.evaluator import judge_prompt_tokens
    from evaluations.judge.rubric import load_rubric

    prompts, (rubric, _) = Prompts(catalog.prompt_dirs), load_rubric(rubric_file, prompts_dir)

    @functools.cache
    def tokens(setting: str, persona: str, rounds: int) -> int:
        return judge_prompt_tokens(prompts, rubric, catalog.settings[setting], catalog.personas[persona], rounds, LINE_TOKENS)

    return tokens


def run_grid_sync(*args, **kwargs) -> str:
    """`run_grid` for code without an event loop: `run_id = run_grid_sync({'reps': 2})`."""
    return asyncio.run(run_grid(*args, **kwargs))
