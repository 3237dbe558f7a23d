"""The `nextstep` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from evaluations.analysis.agreement import calibration, judge_alpha
from evaluations.judge.evaluator import Judge, grade as grade_episode, make_evaluator
from evaluations.judge.gold import load_gold
from evaluations.judge.rubric import CONDITIONS, load_rubric
from simulator.conversation.catalog import Catalog, Gender, Profile, load_catalog
from simulator.conversation.graph import Context, Scenario
from simulator.conversation.prompts import Prompts
from simulator.conversation.runner import run_episode
from simulator.core.errors import UserError
from simulator.core.files import validate
from simulator.core.records import Episode, Verdict
from simulator.models.backends import endpoint
from simulator.models.config import Config, load_config
from simulator.models.local import DEFAULT_SLOTS, serve as serve_local
from simulator.runs.batch import Experiment

from .branch import register as register_branch
from .compare import register as register_compare
from .play import register as register_play
from .show import console, print_caution, print_result, print_turn, print_verdict

app = typer.Typer(help="Simulate the step from a pleasant chat to swapping contact details, and grade it.",
                  add_completion=False, pretty_exceptions_enable=False)

# Options shared by the commands that talk to a model.
Backend = Annotated[Optional[str], typer.Option(help="local (embedded model, default) or openai.", show_default=False)]
BaseUrl = Annotated[Optional[str], typer.Option(help="Any OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")]
ApiKeyEnv = Annotated[Optional[str], typer.Option(help="Environment variable holding the API key \\[default: OPENAI_API_KEY].")]
OutputModeOpt = Annotated[Optional[str], typer.Option("--output-mode", help="json_schema (OpenAI, vLLM, Ollama), json_object (llama.cpp) or llguidance (llama.cpp built with it; the local default).")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model for every role.")]
RoleModel = Annotated[Optional[str], typer.Option(help="Model for this role (overrides --model).")]
RUN_MAX_TURNS = 8  # one episode watched turn by turn; the default batch is a quick demo of 3 (Experiment.max_turns)
Temperature = Annotated[Optional[float], typer.Option(
    help=f"Sampling temperature of the dialogue \\[default: {Config.model_fields['temperature'].default}].")]
_MAX_TURNS = "Most rounds (practitioner + persona) per episode \\[default: {}; or NEXTSTEP_MAX_TURNS, or max_turns in the config file]."
MaxTurns = Annotated[Optional[int], typer.Option(help=_MAX_TURNS.format(RUN_MAX_TURNS))]
BatchMaxTurns = Annotated[Optional[int], typer.Option(help=_MAX_TURNS.format(Experiment.model_fields["max_turns"].default))]
PersonasDir = Annotated[Optional[Path], typer.Option("--personas", "--personas-dir", help="Directory of persona YAML files overriding the shipped ones, or a shipped set: ablation.")]
PromptsDir = Annotated[Optional[Path], typer.Option("--prompts", help="Directory of prompt files overriding the shipped ones.")]
EvaluatorModel = Annotated[Optional[str], typer.Option(help="Evaluator model(s), comma-separated; judges take them in turn.")]
Judges = Annotated[int, typer.Option(min=0, help="Independent judges per episode (0: no grading).")]
RubricFile = Annotated[Optional[Path], typer.Option("--rubric", help="Rubric YAML overriding the shipped one.")]
FidelityJudge = Annotated[bool, typer.Option(help="Also ask the judge whether the persona stayed in character.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="TOML config file \\[default: ./nextstep.toml if present].")]


def _catalog(config) -> Catalog:
    return load_catalog(config.personas_dir, config.prompts_dir)


@app.command()
def catalog(personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None) -> None:
    """List the settings, personas, strategies and profile factors."""
    cat = _catalog(load_config(config_file, personas_dir=personas_dir, prompts_dir=prompts_dir))
    for kind, entries in (("settings", cat.settings), ("personas", cat.personas), ("strategies", cat.strategies)):
        table = Table(title=kind, title_justify="left", show_header=False, box=None)
        for name, entry in entries.items():
            baseline = " [dim](baseline)[/]" if getattr(entry, "baseline", False) is True else ""
            caution = f"\n[yellow]{escape(entry.caution)}[/]" if getattr(entry, "caution", None) else ""
            table.add_row(f"[bold]{name}[/]", escape(entry.summary) + baseline + caution)
        console.print(table, "")
    genders = ", ".join(Gender.__args__)
    console.print(f"[bold]profile[/]: --practitioner-gender and --persona-gender, each one of {genders}")


def _judges(models: list, cat: Catalog, config: Config, k: int, rubric_file: Path | None, seed: int,
            fidelity_judge: bool = False) -> list[Judge]:
    """k judges over the evaluator models in turn, each with its own seed."""
    rubric, rubric_hash = load_rubric(rubric_file, config.prompts_dir)
    prompts = Prompts(cat.prompt_dirs)
    return [Judge(models[i % len(models)], prompts, rubric, rubric_hash, seed=seed + i, index=i, reasks=config.reasks,
                  fidelity_judge=fidelity_judge) for i in range(k)]  # fmt: skip


@app.command()
def run(
    setting: Annotated[str, typer.Option(help="Where they meet (see `nextstep catalog`).")] = "supermarket",
    persona: Annotated[str, typer.Option(help="Who the other person is.")] = "unsure",
    strategy: Annotated[str, typer.Option(help="How the practitioner makes the transition.")] = "common_interest",
    practitioner_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "man",
    persona_gender: Annotated[str, typer.Option(help="man, woman or nonbinary.")] = "woman",
    seed: Annotated[int, typer.Option(help="Seed for every request; same seed, same conversation (local backend).")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the episode JSON.")] = Path("episodes"),
    backend: Backend = None, base_url: BaseUrl = None, api_key_env: ApiKeyEnv = None, output_mode: OutputModeOpt = None,
    model: ModelOpt = None, practitioner_model: RoleModel = None, persona_model: RoleModel = None,
    evaluator_model: EvaluatorModel = None, judges: Judges = 1, rubric_file: RubricFile = None,
    fidelity_judge: FidelityJudge = False, temperature: Temperature = None, max_turns: MaxTurns = None,
    personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None,
) -> None:
    """Simulate one episode, print it turn by turn, and grade it."""
    config = load_config(
        config_file, backend=backend, base_url=base_url, api_key_env=api_key_env, output_mode=output_mode, model=model,
        practitioner_model=practitioner_model, persona_model=persona_model, evaluator_model=evaluator_model,
        temperature=temperature, max_turns=max_turns, personas_dir=personas_dir, prompts_dir=prompts_dir,
    )  # fmt: skip
    cat = _catalog(config)
    for kind, name in (("settings", setting), ("personas", persona), ("strategies", strategy)):
        cat.pick(kind, name)
    profile = _profile(practitioner_gender, persona_gender)
    scenario = Scenario(setting, persona, strategy, profile)
    with endpoint(config, concurrency=1) as ep:  # one episode: one slot
        console.print(f"[dim]{scenario.setting} · {scenario.persona} · {scenario.strategy} · {profile.id} · seed {seed} · {ep.backend}[/]")
        print_caution(cat.strategies[strategy].caution)

        async def go():
            async with ep.models(config) as models:
                evaluate = make_evaluator(_judges(models["evaluators"], cat, config, judges, rubric_file, seed, fidelity_judge), cat) if judges else None
                ctx = Context(models["practitioner"], models["persona"], cat, Prompts(cat.prompt_dirs), scenario, seed,
                              temperature=config.temperature, max_turns=config.max_turns or RUN_MAX_TURNS, reasks=config.reasks,
                              evaluate=evaluate)  # fmt: skip
                return await run_episode(ctx, backend=ep.backend, on_turn=print_turn)

        record = asyncio.run(go())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record.id}.json"
    path.write_text(record.model_dump_json(indent=2))
    print_result(record, path)
    if record.status != "succeeded":
        raise typer.Exit(1)


def _profile(practitioner_gender: str, persona_gender: str) -> Profile:
    for flag, value in (("--practitioner-gender", practitioner_gender), ("--persona-gender", persona_gender)):
        if value not in Gender.__args__:
            raise UserError(f"{flag} {value!r}: choose from {', '.join(Gender.__args__)}")
    return Profile(practitioner_gender=practitioner_gender, persona_gender=persona_gender)


def _grading_targets(names: list[str], db: Path) -> list[tuple[str, Episode, object]]:
    """(label, record, save) for each episode file, directory of them, run id or episode id in --db."""
    from simulator.storage.store import Store

    targets = []
    for name in names:
        path = Path(name)
        if path.exists():
            files = sorted(path.glob("*.json")) if path.is_dir() else [path]
            for f in files:
                targets.append((str(f), _read_episode(f), lambda record, f=f: f.write_text(record.model_dump_json(indent=2))))
            continue
        if not db.is_file():
            raise UserError(f"{name}: no such episode file or directory, and no database {db} to look it up in")
        with Store(db) as store:
            is_run = any(r["id"] == name for r in store.runs())
            records = [r for r in store.episodes(name) if r.status != "failed"] if is_run else [store.episode(name)]

        def save(record, db=db):
            with Store(db) as store:
                store.replace_verdicts(record.id, record.verdicts)

        targets += [(f"{r.id} ({r.cell or r.setting})", r, save) for r in records]
    if not targets:
        raise UserError(f"nothing to grade in {', '.join(names)}")
    return targets


def _read_episode(path: Path) -> Episode:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not an episode JSON file ({e})") from None
    if not isinstance(record, dict) or not {"turns", "setting", "persona"} <= record.keys():
        raise UserError(f"{path}: not an episode record (needs turns, setting, persona)")
    return validate(Episode, record, str(path))


def _print_alpha(verdicts_per_episode: list[list[Verdict]]) -> None:
    alpha = judge_alpha(verdicts_per_episode)
    console.print("[bold]agreement between judges[/] (Krippendorff's alpha, ordinal): "
                  + ", ".join(f"{c} {'n/a' if a is None else f'{a:.2f}'}" for c, a in alpha.items()))


PanelSize = Annotated[int, typer.Option("--judges", min=1, help="Independent judges per episode.")]


def _grade_all(config: Config, cat: Catalog, episodes: list[tuple[str, dict]], judges: int, rubric_file: Path | None,
               seed: int, fidelity_judge: bool = False, on_graded=None) -> list[list[dict]]:
    """Every judge's verdict on each (label, episode), in order; `on_graded(n, label, verdicts)` after each."""
    with endpoint(config, concurrency=1) as ep:  # graded one at a time

        async def go():
            async with ep.models(config) as models:
                panel = _judges(models["evaluators"], cat, config, judges, rubric_file, seed, fidelity_judge)
                results = []
                for n, (label, episode) in enumerate(episodes, start=1):
                    results.append([await grade_episode(episode, judge, cat) for judge in panel])
                    if on_graded:
                        on_graded(n, label, results[-1])
                return results

        return asyncio.run(go())


@app.command()
def grade(
    episodes: Annotated[list[str], typer.Argument(help="Episode JSON files or directories, run ids or episode ids.", show_default=False)],
    db: Db = Path("nextstep.db"), judges: PanelSize = 1, seed: Annotated[int, typer.Option(help="Seed of the first judge.")] = 0,
    rubric_file: RubricFile = None, fidelity_judge: FidelityJudge = False,
    backend: Backend = None, base_url: BaseUrl = None, api_key_env: ApiKeyEnv = None, output_mode: OutputModeOpt = None,
    model: ModelOpt = None, evaluator_model: EvaluatorModel = None,
    personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None,
) -> None:
    """Re-grade stored episodes without re-simulating; earlier verdicts are kept as history."""
    config = load_config(config_file, backend=backend, base_url=base_url, api_key_env=api_key_env, output_mode=output_mode,
                     model=model, evaluator_model=evaluator_model, personas_dir=personas_dir, prompts_dir=prompts_dir)
    cat = _catalog(config)
    targets = _grading_targets(episodes, db)

    def graded(n: int, label: str, verdicts: list[Verdict]) -> None:
        console.print(f"[dim]graded {label}[/]")
        for verdict in verdicts:
            print_verdict(verdict)
        _, record, save = targets[n - 1]
        record.verdict_history, record.verdicts = record.verdict_history + record.verdicts, verdicts
        save(record)

    results = _grade_all(config, cat, [(label, record.transcript()) for label, record, _ in targets], judges, rubric_file, seed,
                         fidelity_judge, graded)  # fmt: skip
    if judges > 1:
        _print_alpha(results)
    console.print(f"[bold]saved[/]: new verdicts for {len(targets)} episode(s); earlier ones kept as history")


def _fmt(x, ci=None) -> str:
    if x is None:
        return "n/a"
    text = f"{x:.2f}"
    if ci and None not in ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def print_calibration(report: dict) -> None:
    console.print(f"\n[bold]calibration[/] on {report['items']} gold transcripts, {report['judges']} judge(s)")
    applies = Table("condition", "n", "agree", "both scored", "both n/a", "gold n/a, judge scored", "gold scored, judge n/a",
                    "unscored", title="does the condition apply? (gold null = not applicable)", title_justify="left")
    table = Table("condition", "n", "exact", "within 1", "weighted κ [95% CI]", "α [95% CI]",
                  title="scores, where both gold and judge scored", title_justify="left")
    for c, r in report["conditions"].items():
        a = r["applicability"]
        applies.add_row(c, str(a["n"]), _fmt(a["agreement"]), str(a["both_scored"]), str(a["both_na"]),
                        str(a["gold_na_judge_scored"]), str(a["gold_scored_judge_na"]), str(a["unscored"]))
        table.add_row(c, str(r["n"]), _fmt(r["exact"]), _fmt(r["within_1"]), _fmt(r["kappa"], r["kappa_ci"]),
                      _fmt(r["alpha"], r["alpha_ci"]))
    console.print(applies, table)
    flags = Table("flag", "tp", "fp", "fn", "precision", "recall", title_justify="left")
    for f, r in report["flags"].items():
        flags.add_row(f, str(r["tp"]), str(r["fp"]), str(r["fn"]), _fmt(r["precision"]), _fmt(r["recall"]))
    console.print(flags)
    o = report["outcome"]
    console.print(f"[bold]outcome[/] (what was exchanged): accuracy {_fmt(o['accuracy'])} over {o['n']} ({o['unscored']} unscored)")
    if report["judges"] > 1:
        console.print("[bold]agreement between judges[/] (α): " + ", ".join(f"{c} {_fmt(a)}" for c, a in report["judge_alpha"].items()))


@app.command()
def calibrate(
    gold: Annotated[Path, typer.Argument(help="Gold set JSONL (see DESIGN: one labelled transcript a line).")],
    judges: PanelSize = 1, seed: Annotated[int, typer.Option(help="Seed of the first judge.")] = 0,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also write the report and every verdict as JSON.")] = None,
    rubric_file: RubricFile = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key_env: ApiKeyEnv = None, output_mode: OutputModeOpt = None,
    model: ModelOpt = None, evaluator_model: EvaluatorModel = None,
    personas_dir: PersonasDir = None, prompts_dir: PromptsDir = None, config_file: ConfigFile = None,
) -> None:
    """Grade a labelled gold set and report how far the judge agrees with it."""
    config = load_config(config_file, backend=backend, base_url=base_url, api_key_env=api_key_env, output_mode=output_mode,
                     model=model, evaluator_model=evaluator_model, personas_dir=personas_dir, prompts_dir=prompts_dir)
    cat = _catalog(config)
    items = load_gold(gold, cat)

    def graded(n: int, label: str, verdicts: list[Verdict]) -> None:
        unscored = sum(len(v.unscored) for v in verdicts)
        console.print(f"[dim]{n}/{len(items)} {label}: graded, {unscored} part(s) unscored[/]")

    verdicts = _grade_all(config, cat, [(item.id, item.episode()) for item in items], judges, rubric_file, seed,
                          on_graded=graded)  # fmt: skip
    report = calibration(items, verdicts, seed=seed)
    print_calibration(report)
    if output:
        judged = {i.id: [v.model_dump(mode="json") for v in vs] for i, vs in zip(items, verdicts)}
        output.write_text(json.dumps({"report": report, "verdicts": judged}, indent=2))
        console.print(f"[bold]saved[/]: {output}")


Db = Annotated[Path, typer.Option(help="SQLite database of runs.")]


def _progress_printer():
    """A rich progress bar on a terminal; nothing otherwise (logs and CI stay clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn, TextColumn, TimeRemainingColumn

    if not console.is_terminal:
        return contextlib.nullcontext(lambda progress: None)
    bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
              TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console)  # fmt: skip
    task = bar.add_task("episodes", total=None, status="")

    def update(p) -> None:
        status = (f"done {p.done} · failed {p.failed} · running {p.running} · {p.per_minute:.1f}/min · "
                  f"{p.tokens:,} tokens")  # fmt: skip
        bar.update(task, total=p.total, completed=p.done + p.failed, status=status)

    @contextlib.contextmanager
    def live():
        with bar:
            yield update

    return live()


def _print_summary(run_id: str, db: Path, progress) -> None:
    """Per persona x setting: episodes, exclusions and contact rate; then mean score per condition."""
    from evaluations.analysis.frame import load_run, summary

    frame = load_run(run_id, db)
    rows = summary(frame)
    counts = Table("persona", "setting", "episodes", "failed", "ungraded", "out of character", "contact (number/email)",
                   "next meeting", "social handle only", title=f"run {run_id}", title_justify="left")  # fmt: skip
    scores = Table("persona", "setting", *(c.replace("_", " ") for c in CONDITIONS),
                   title="mean score (1-5) per condition, usable episodes", title_justify="left")  # fmt: skip
    for r in rows:
        counts.add_row(r["persona"], r["setting"], str(r["episodes"]), str(r["failed"]), str(r["ungraded"]), str(r["unfaithful"]),
                       _fmt(r["contact_rate"]), _fmt(r["next_meeting_rate"]), _fmt(r["social_handle_rate"]))
        scores.add_row(r["persona"], r["setting"], *[_fmt(r[c]) for c in CONDITIONS])
    console.print(counts, scores)
    from simulator.storage.store import Store

    with Store(db) as store:
        records = store.episodes(run_id)
    for strategy, caution in sorted({r.strategy: r.caution for r in records if r.caution}.items()):
        console.print(f"[bold yellow]caution[/] ({escape(strategy)}): {escape(caution)}")
    console.print("[dim]failed, ungraded (a judge's endpoint failed; --resume grades them again) and out-of-character "
                  "episodes are kept but left out of rates and means; n/a: nothing scored there (no usable episode, or the "
                  "judges' evidence was rejected: see `nextstep show EPISODE`)[/]")
    ok = frame[frame["status"] == "succeeded"]
    if len(ok) and ok["judges"].max() > 1:
        _print_alpha([r.verdicts for r in records if r.status == "succeeded"])
    known = ok[ok["prompt_tokens"].notna() & ok["completion_tokens"].notna()]
    if len(known):
        per_episode = (known["prompt_tokens"] + known["completion_tokens"]).mean()
        unknown = f" (over {len(known)} of {len(ok)}: the endpoint reported no usage for the others)" if len(known) < len(ok) else ""
        console.print(f"tokens per succeeded episode: {per_episode:,.0f}{unknown}")
    elif len(ok):
        console.print("tokens per succeeded episode: unknown (the endpoint reported no usage)")
    if progress is not None:
        unknown = (f" + {progress.unknown_usage_calls:,} calls whose endpoint reported no usage (not counted, so not "
                   "held to --max-tokens)") if progress.unknown_usage_calls else ""  # fmt: skip
        console.print(f"this session: {progress.done} succeeded, {progress.failed} failed, {progress.skipped} already done; "
                      f"{progress.tokens:,} tokens{unknown}")
        resume = f"nextstep batch --resume {run_id} --db {db}"
        if progress.stopped:
            console.print(f"[yellow]stopped scheduling[/]: {progress.stopped}; continue with: {resume}")
        elif progress.failed:
            console.print(f"retry the failed episodes and grade the ungraded ones with: {resume}")
    console.print(f"see more: nextstep show {run_id} --db {db}\n          nextstep compare {run_id} --db {db}\n"
                  f"          nextstep report {run_id} --db {db} -o {run_id}.html\n"
                  f"          nextstep export {run_id} --format csv -o {run_id}.csv --db {db}")


def _print_plan(grid, cells: list, e: dict) -> None:
    """The dry run: the cells with their seeds, the settings that shape an episode, and the bound on calls."""
    table = Table(title="cells", title_justify="left")
    for column in ("cell", "reps", "seeds"):
        table.add_column(column, overflow="fold")
    for key in dict.fromkeys(c.key for c in cells):
        seeds = [c.seed for c in cells if c.key == key]
        table.add_row(key, str(len(seeds)), ", ".join(map(str, seeds[:5])) + (" …" if len(seeds) > 5 else ""))
    console.print(table)
    console.print(f"max_turns {grid.max_turns} · temperature {grid.temperature} · judges {grid.judges} · reasks {e['reasks']}")
    console.print(f"{e['episodes']} episodes; at most {e['calls_at_most']:,} LLM calls (every possible re-ask counted), "
                  f"roughly {e['tokens_roughly']:,} tokens")


@app.command()
def batch(
    settings: Annotated[Optional[str], typer.Option(help="Comma list or 'all' \\[default: supermarket].")] = None,
    personas: Annotated[Optional[str], typer.Option(help="Comma list or 'all' \\[default: all].")] = None,
    strategies: Annotated[Optional[str], typer.Option(help="Comma list or 'all' \\[default: common_interest].")] = None,
    profiles: Annotated[Optional[str], typer.Option(help="Practitioner-persona gender pairs, e.g. man-woman,woman-man.")] = None,
    reps: Annotated[Optional[int], typer.Option(help="Repetitions per cell \\[default: 1].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run seed; each cell's seed derives from it \\[default: 0].")] = None,
    max_turns: BatchMaxTurns = None, temperature: Temperature = None,
    judges: Annotated[Optional[int], typer.Option(help="Judges per episode, 0 for none \\[default: 1].")] = None,
    experiment: Annotated[Optional[Path], typer.Option(help="Experiment YAML with the same fields; flags override it.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue RUN_ID with its stored grid and settings (flags given override "
                                                       "the settings): skip succeeded episodes, retry failed ones, grade "
                                                       "ungraded ones again.")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Name the run \\[default: a hash of grid, prompts and models].")] = None,
    concurrency: Annotated[Optional[int], typer.Option(min=1, help="Episodes in flight; on the local engine also its parallel "
                                                                   f"slots \\[default: {DEFAULT_SLOTS} local, 8 otherwise].")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(min=1, help="Stop scheduling episodes once this many tokens are spent "
                                                                  "(counting the calls whose endpoint reports usage).")] = None,
    max_failures: Annotated[Optional[int], typer.Option(min=1, help="Stop scheduling episodes after this many failures.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the cells and an upper bound on calls, run nothing.")] = False,
    db: Db = Path("nextstep.db"), rubric_file: RubricFile = None,
    backend: Backend = None, base_url: BaseUrl = None, api_key_env: ApiKeyEnv = None, output_mode: OutputModeOpt = None,
    model: ModelOpt = None, practitioner_model: RoleModel = None, persona_model: RoleModel = None,
    evaluator_model: EvaluatorModel = None,
    personas_dir: Annotated[Optional[Path], typer.Option("--personas-dir", help="Directory of persona YAML files overriding the shipped ones, or a shipped set: ablation.")] = None,
    prompts_dir: PromptsDir = None, config_file: ConfigFile = None,
) -> None:
    """Run a grid of episodes concurrently into the SQLite store (resumable)."""
    from evaluations.judge.evaluator import judge_max_calls

    from simulator.runs.batch import as_experiment, estimate, expand, profiles_from, run_config, run_grid, stored_run, with_config

    config_flags = {"backend": backend, "base_url": base_url, "api_key_env": api_key_env, "output_mode": output_mode,
                    "model": model, "practitioner_model": practitioner_model, "persona_model": persona_model,
                    "evaluator_model": evaluator_model, "personas_dir": personas_dir, "prompts_dir": prompts_dir}  # fmt: skip
    flags = {"settings": settings, "personas": personas, "strategies": strategies, "reps": reps, "seed": seed,
             "max_turns": max_turns, "temperature": temperature, "judges": judges,
             "profiles": profiles_from(profiles) if profiles else None}  # fmt: skip
    flags = {k: v for k, v in flags.items() if v is not None}
    if resume and (flags or experiment):
        raise UserError("--resume takes the grid stored in the run; leave out the grid flags and --experiment")
    # Only the fields the file or the flags give are set: the environment and the config file fill in the rest.
    base = as_experiment(experiment).model_dump(exclude_unset=True) if experiment else {}
    grid = None if resume else validate(Experiment, base | flags, str(experiment or "grid flags"))
    if dry_run:
        stored_grid, stored = stored_run(db, resume) if resume else (grid, {})
        config = run_config(config_file, stored, **config_flags)
        plan = with_config(as_experiment(stored_grid), config).resolved(_catalog(config))
        cells = expand(plan)
        _print_plan(plan, cells, estimate(plan, len(cells), config.reasks, judge_max_calls))
        return
    final = {}

    def remember(p) -> None:
        final["progress"] = p
        show(p)

    with _progress_printer() as show:
        run = asyncio.run(run_grid(grid, db=db, run_id=run_id, resume=resume, concurrency=concurrency, max_tokens=max_tokens,
                                   max_failures=max_failures, config_file=config_file, rubric_file=rubric_file,
                                   on_progress=remember, **config_flags))  # fmt: skip
    _print_summary(run, db, final["progress"])
    if final["progress"].fault:
        raise typer.Exit(1)


@app.command()
def runs(db: Db = Path("nextstep.db")) -> None:
    """List the runs in the database."""
    from simulator.storage.store import Store

    _existing_db(db)
    with Store(db) as store:
        table = Table("run", "created", "episodes", "succeeded", "ungraded", "failed", "tokens", title_justify="left")
        for r in store.runs():
            table.add_row(r["id"], r["created_at"], str(r["episodes"]), str(r["succeeded"]), str(r["ungraded"]), str(r["failed"]),
                          "unknown" if r["tokens"] is None else f"{r['tokens']:,}")  # fmt: skip
    console.print(table)


def _existing_db(db: Path) -> None:
    if not db.is_file():
        raise UserError(f"{db}: no such database (run a batch first, or pass --db)")


@app.command("show")
def show_cmd(
    run_or_episode: Annotated[str, typer.Argument(help="A run id, or an episode id (or a unique prefix).")],
    db: Db = Path("nextstep.db"),
) -> None:
    """A run's summary, or one episode's transcript with its verdicts."""
    from simulator.storage.store import Store

    _existing_db(db)
    with Store(db) as store:
        is_run = any(r["id"] == run_or_episode for r in store.runs())
        record = None if is_run else store.episode(run_or_episode)
        spec = store.run(run_or_episode)["spec"] if is_run else None
    if record is not None:
        console.print(f"[dim]{record.id} · {record.setting} · {record.persona} · {record.strategy} · seed {record.seed} · {record.status}[/]")
        print_caution(record.caution)
        for turn in record.turns:
            print_turn(turn)
        print_result(record, None)
        return
    console.print(f"[bold]run {run_or_episode}[/]: {json.dumps(spec.experiment)}")
    console.print(f"models: {json.dumps(spec.models)} · backend {spec.backend}")
    _print_summary(run_or_episode, db, None)


@app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl (full records), csv or parquet (one row per episode).")] = "jsonl",
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path("episodes.jsonl"),
    db: Db = Path("nextstep.db"),
) -> None:
    """Export a run's episodes."""
    from evaluations.analysis.frame import export

    _existing_db(db)
    n = export(run_id, db, fmt, output)
    console.print(f"wrote {n} episodes to {output}")


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    slots: Annotated[int, typer.Option(min=1, help="Parallel slots (requests answered at once).")] = DEFAULT_SLOTS,
) -> None:
    """Run the embedded model's OpenAI-compatible server in the foreground (127.0.0.1 only)."""
    console.print(f"serving the embedded model at http://127.0.0.1:{port}/v1 (Ctrl-C to stop)")
    raise typer.Exit(serve_local(port, slots))


register_compare(app, console)
register_branch(app, console)
register_play(app, console)


def main() -> None:
    """Entry point: user errors are one line on stderr and exit 2; interruption exits 130."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind (and stop servers) on SIGTERM too
    command = typer.main.get_command(app)
    try:
        code = command.main(sys.argv[1:] or ["--help"], standalone_mode=False, prog_name="nextstep")
    except UserError as e:
        _fail(str(e), 2)
    except typer.Abort:
        _fail("interrupted", 130)
    except typer.TyperException as e:  # usage errors from the command-line parser
        ctx = getattr(e, "ctx", None)
        _fail(f"{ctx.command_path}: {e.format_message()}" if ctx else e.format_message(), getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"nextstep: error: {message}" if code == 2 else f"nextstep: {message}", file=sys.stderr)
    sys.exit(code)
