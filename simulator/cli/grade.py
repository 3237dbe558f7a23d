"""`nextstep grade` and `nextstep calibrate`: grading without simulating, stored episodes or a labelled gold set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Column, Table

import simulator.api as api
from simulator.core.records import Verdict

from .options import ENDPOINT, FILES, Actors, Db, FidelityJudge, Judges, JudgeSeed, Ray, RubricFile, config_options
from .progress import progress_bar
from .show import console, print_verdict
from .summary import print_alpha

app = typer.Typer()
JUDGE = (*ENDPOINT, "evaluator_model", *FILES)


@app.command()
@config_options(*JUDGE)
def grade(
    episodes: Annotated[list[str], typer.Argument(help="Episode JSON files or directories, run ids or episode ids.", show_default=False)],
    db: Db = Path("nextstep.db"), judges: Judges = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the first judge [default: 0].", show_default=False)] = None,
    rubric_file: RubricFile = None, fidelity_judge: FidelityJudge = False,
    replay: Annotated[Optional[Path], typer.Option(help="Answer from this bundle (`export --bundle`) alone, no endpoint, with "
                                                        "the judges and seeds of its verdicts.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every verdict as it comes.")] = False,
    ray: Ray = None, actors: Actors = None, *, config: dict,
) -> None:
    """Re-grade stored episodes without re-simulating, with their run's stored settings unless flags say otherwise;
    earlier verdicts are kept as history. New verdicts replace the old only where every judge answered; run again,
    it grades only what is missing. A progress bar, then a summary table; every verdict with --verbose."""
    tally = {"verdicts": 0, "ungraded": 0}
    with progress_bar(console, "grading") as show:
        def graded(n: int, total: int, label: str, verdicts: list[Verdict]) -> None:
            tally["verdicts"] += len(verdicts)
            tally["ungraded"] += sum(not v.graded for v in verdicts)
            if verbose:
                console.print(f"[dim]graded {escape(label)}[/]")
                for verdict in verdicts:
                    print_verdict(verdict)
            show(n, total, f"{tally['verdicts']} verdicts, {tally['ungraded']} ungraded")

        result = api.grade(episodes, db=db, judges=judges, seed=seed, rubric_file=rubric_file, fidelity_judge=fidelity_judge,
                           on_graded=graded, replay=replay, ray=ray, actors=actors, **config)  # fmt: skip
    print_grading(result["summary"])
    if result["judge_alpha"] is not None:
        print_alpha(result["judge_alpha"])
    if result["skipped"]:
        console.print(f"{result['skipped']} episode(s) already graded with this rubric and panel: kept as they are")
    if result["graded"]:
        console.print(f"[bold]saved[/]: new verdicts for {result['graded']} episode(s); earlier ones kept as history")
    if failed := result["failed"]:
        console.print(f"[bold red]kept the earlier verdicts of {len(failed)} episode(s)[/]: their new grading did not complete "
                      f"({escape(failed[0][1])}); run the same command again to grade only those")  # fmt: skip
        raise typer.Exit(1)
    if replay is not None:
        print_differences(result["differences"], replay)
    _exit_if_all_ungraded(result["verdicts"])


def _exit_if_all_ungraded(verdicts: list[list[Verdict]]) -> None:
    """Exit 1 when no verdict was graded at all: the endpoint failed every time (each is stored as ungraded)."""
    if verdicts and not any(v.graded for vs in verdicts for v in vs):
        console.print("[red]every verdict is ungraded[/]: the endpoint failed each time")
        raise typer.Exit(1)


def print_differences(differences: list[str], bundle: Path) -> None:
    """Whether a replay's records came out equal to the bundle's; exit 1 if not."""
    if not differences:
        return console.print(f"[bold]replayed[/]: every record equals its record in {bundle}")
    console.print(f"[red]replayed, but {len(differences)} record(s) differ from {bundle}[/]:")
    for line in differences:
        console.print(f"  {line}", soft_wrap=True)
    raise typer.Exit(1)


def print_grading(s: dict) -> None:
    """What a grading pass found: verdicts by status, then per condition its grades by status and mean score."""
    from evaluations.analysis.compare import fmt

    ungraded = f", {s['ungraded']} ungraded (the endpoint failed; grade them again)" if s["ungraded"] else ", 0 ungraded"
    console.print(f"{s['episodes']} episodes graded by {s['judges']} judge{'s' * (s['judges'] != 1)}: {s['verdicts']} "
                  f"verdicts{ungraded}; {s['unscored_parts']} part(s) unscored")  # fmt: skip
    t = Table("condition", "scored", "n/a", "unscored", "mean 1-5", title="grades over the new verdicts (n/a: does not "
              "apply)", title_justify="left")  # fmt: skip
    for c, r in s["conditions"].items():
        t.add_row(c, str(r["scored"]), str(r["not_applicable"]), str(r["unscored"]), fmt(r["mean"]))
    console.print(t)
    console.print("flags raised: " + (", ".join(f"{f} {n}" for f, n in s["flags"].items()) or "none"))
    console.print("judged exchanged: " + (", ".join(f"{x} {n}" for x, n in s["exchanged"].items()) or "-"))
    console.print("[dim]every verdict: nextstep show EPISODE, or grade again with --verbose[/]")


def _ci(x, ci) -> str:
    """A statistic with its interval where there is one: `_ci(0.5, [0.1, 0.9])` -> '0.50 [0.10, 0.90]'."""
    from evaluations.analysis.compare import fmt, fmt_ci

    return fmt(x) if x is None else fmt_ci({"mean": x, "ci": ci or [None, None]})


def print_calibration(report: dict) -> None:
    from evaluations.analysis.compare import fmt

    console.print(f"\n[bold]calibration[/] on {report['items']} gold transcripts, {report['judges']} judge(s)")
    applies = Table("condition", "n", "agree", "both scored", "both n/a", "gold n/a, judge scored", "gold scored, judge n/a",
                    "unscored", title="does the condition apply? (gold null = not applicable)", title_justify="left")
    table = Table("condition", "n", "exact", "within 1", "weighted κ [95% CI]", "α [95% CI]",
                  title="scores, where both gold and judge scored", title_justify="left")
    for c, r in report["conditions"].items():
        a = r["applicability"]
        applies.add_row(c, str(a["n"]), fmt(a["agreement"]), str(a["both_scored"]), str(a["both_na"]),
                        str(a["gold_na_judge_scored"]), str(a["gold_scored_judge_na"]), str(a["unscored"]))
        table.add_row(c, str(r["n"]), fmt(r["exact"]), fmt(r["within_1"]), _ci(r["kappa"], r["kappa_ci"]), _ci(r["alpha"], r["alpha_ci"]))
    console.print(applies, table)
    flags = Table("flag", "tp", "fp", "fn", "precision", "recall", title_justify="left")
    for f, r in report["flags"].items():
        flags.add_row(f, str(r["tp"]), str(r["fp"]), str(r["fn"]), fmt(r["precision"]), fmt(r["recall"]))
    console.print(flags)
    o = report["outcome"]
    console.print(f"[bold]outcome[/] (what was exchanged): accuracy {fmt(o['accuracy'])} over {o['n']} ({o['unscored']} unscored)")
    if report["judges"] > 1:
        console.print("[bold]agreement between judges[/] (α): " + ", ".join(f"{c} {fmt(a)}" for c, a in report["judge_alpha"].items()))


@app.command()
@config_options(*JUDGE)
def calibrate(
    gold: Annotated[Path, typer.Argument(help="Gold set JSONL: one labelled transcript a line (README: Grading).")],
    judges: Judges = 1, seed: JudgeSeed = 0,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also write the report and every verdict as JSON, each verdict as it comes; an existing file is resumed.")] = None,
    rubric_file: RubricFile = None, *, config: dict,
) -> None:
    """Grade a labelled gold set and report how far the judge agrees with it."""

    def graded(n: int, total: int, label: str, verdicts: list[Verdict]) -> None:
        unscored = sum(len(v.unscored) for v in verdicts)
        console.print(f"[dim]{n}/{total} {label}: graded, {unscored} part(s) unscored[/]")

    result = api.calibrate(gold, judges=judges, seed=seed, rubric_file=rubric_file, output=output, on_graded=graded, **config)
    print_calibration(result["report"])
    if output:
        console.print(f"[bold]saved[/]: {output}")
    _exit_if_all_ungraded(list(result["verdicts"].values()))


@app.command()
@config_options(*FILES)
def agreement(
    first: Annotated[Path, typer.Argument(help="One labeller's gold file (e.g. RUN-labels-ana.jsonl from `nextstep label`).")],
    second: Annotated[Path, typer.Argument(help="Another labeller's file of the same sample.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    *, config: dict,
) -> None:
    """How far two people who labelled the same episodes agree: the human-human agreement a judge is read against
    (`calibrate`). No model is called."""
    from evaluations.analysis.compare import fmt

    r = api.labellers_agreement(first, second, **config)
    if as_json:
        typer.echo(json.dumps(r, indent=1, ensure_ascii=False, allow_nan=False))
        return
    who = [r["first"] or str(first), r["second"] or str(second)]
    console.print(f"[bold]agreement between {escape(who[0])} and {escape(who[1])}[/]: {r['items']} episodes labelled by both")
    for name, ids in zip(who, (r["only_first"], r["only_second"])):
        if ids:
            console.print(f"only {escape(name)} ({len(ids)}): " + ", ".join(map(escape, ids)))
    table = Table(Column("condition", no_wrap=True), "both scored", "applies", "exact", "within 1", "weighted κ",
                  title="applies: both find it applicable, or both not; the rest where both scored", title_justify="left")
    for c, x in r["conditions"].items():  # 3 digits: the figures come rounded to 3, a second rounding could move them
        table.add_row(c, str(x["n"]), *(fmt(x[k], 3) for k in ("applicable_agree", "exact", "within_1", "kappa")))
    flags = Table(Column("flag", no_wrap=True), escape(who[0]), escape(who[1]), "both", "κ", title_justify="left")
    for f, x in r["flags"].items():
        flags.add_row(f, str(x["first"]), str(x["second"]), str(x["both"]), fmt(x["kappa"], 3))
    console.print(table, flags)
    e = r["exchanged"]
    console.print(f"[bold]what was exchanged[/]: the same on {fmt(e['agree'], 3)} of {e['n']}")
