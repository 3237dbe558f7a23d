"""`nextstep compare`, `plan`, `personas` and `report`: persona reactions, variance, power, the persona audit, HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from evaluations.judge.rubric import CONDITIONS
import simulator.api as api
from simulator.core.errors import UserError

from .options import Db, Format, IncludeUnfaithful, PersonasDir
from .show import console

FORMATS = ("text", "json")
app = typer.Typer()


def _flags(stats: dict) -> str:
    """Flags raised at all, by rate: 'rude 11%, creepy 11%' (or '-')."""
    raised = [(f, r["rate"]) for f, r in stats["flags"].items() if r["rate"]]
    return ", ".join(f"{f} {x:.0%}" for f, x in sorted(raised, key=lambda fr: -fr[1])) or "-"


def _n(row: dict) -> str:
    return f"{row['n']}*" if row["small"] else str(row["n"])


def whole_headers(t: Table) -> Table:
    """Each column at least as wide as its header's longest word: a header wraps between words, never cut in one."""
    for column in t.columns:
        column.min_width = max(map(len, str(column.header).split() or [""]))
    return t


def print_rows(console, title: str, head_rows: tuple[list[str], list[list[str]]]) -> None:
    """A (head, rows) pair from `evaluations.tables` as a rich table, every cell escaped."""
    head, rows = head_rows
    t = Table(*map(escape, head), title=escape(title), title_justify="left", box=box.SIMPLE_HEAD)  # no rules: 80 columns
    t.columns[0].no_wrap = True  # the row's name whole
    whole_headers(t)
    for row in rows:
        t.add_row(*map(escape, row))
    console.print(t)


def print_variance(r: dict, console) -> None:
    """Where the variance comes from, the judges' agreement, and contact@k."""
    from evaluations.analysis.tables import agreement_rows, repeats_rows, variance_note, variance_rows

    print_rows(console, "where the variance comes from (share of each measure's variance; * fewer than 5 cells)",
               variance_rows(r["variance"]))
    console.print(f"[dim]{escape(variance_note(r['variance']))}[/]")
    if r["variance"]["agreement"]["judges"] > 1:
        print_rows(console, "agreement between judges (effective judges = k / (1 + (k - 1) mean r))",
                   agreement_rows(r["variance"]["agreement"]))
    print_rows(console, "repeat reliability: contact@k over cells (* fewer than 5 cells)", repeats_rows(r["repeats"]))


def print_audit(run_id: str, a: dict, console) -> None:
    """The persona fidelity audit: per type, curves, pairwise separation, then the warnings with their episodes."""
    from evaluations.analysis.tables import curve_rows, episode_list, pair_rows, persona_rows

    console.print(f"[bold]persona audit of {escape(run_id)}[/]: {a['n']} succeeded episodes of {a['episodes']} "
                  f"(* fewer than {a['small_below']})")
    print_rows(console, "persona types against their files", persona_rows(a))
    print_rows(console, "private state by persona turn", curve_rows(a))
    print_rows(console, "are the types told apart? (95% intervals; effect of the second against the first)", pair_rows(a))
    for w in a["warnings"]:
        console.print(f"[bold yellow]warning[/] {escape(w['message'])}")
        if w["episodes"]:
            console.print(f"  [dim]episodes: {escape(episode_list(w['episodes']))}[/]")
    if not a["warnings"]:
        console.print("no warnings: every type behaves within its file and the types are told apart")


def print_reactions(run_id: str, r: dict, console) -> None:
    """Persona reactions as rich tables; '*' marks groups smaller than the small-cell threshold."""
    from evaluations.analysis.compare import SHORT, fmt, fmt_ci, fmt_p, which_test

    ex = r["excluded"]
    why = f"excluded {ex['failed']} failed, {ex['ungraded']} ungraded, {ex['unfaithful']} fidelity-flagged" + (
        "" if r["include_unfaithful"] else " (keep those with --include-unfaithful)") + (
        f", {ex['abandoned']} abandoned by a person" if ex.get("abandoned") else "")
    console.print(f"[bold]run {escape(run_id)}[/]: {r['episodes']} episodes, {r['n']} used; {why}")
    if not r["n"]:
        return
    t = Table("persona", "n", "contact [95% CI]", "next meeting [95% CI]", "social handle", "interest 0-10", "comfort 0-10",
              "flags", title="persona reactions (contact: number or email)", title_justify="left")  # fmt: skip
    for row in r["personas"]:
        t.add_row(escape(str(row["persona"])), _n(row), fmt_ci(row["contact"], percent=True), fmt_ci(row["next_meeting"], percent=True),
                  fmt_ci(row["social_handle"], percent=True), fmt_ci(row["mean_interest"]), fmt_ci(row["mean_comfort"]), _flags(row))
    console.print(t)
    t = Table("condition", *[escape(str(row["persona"])) for row in r["personas"]],
              title=escape("condition scores 1-5 by persona: mean [bootstrap 95% CI]"), title_justify="left")
    for c in CONDITIONS:
        t.add_row(c, *[fmt_ci(row[c]) for row in r["personas"]])
    console.print(t)
    for by in ("setting", "strategy"):  # two narrow tables rather than one too wide to read
        rates = Table("persona", by, "n", "contact [95% CI]", "interest", "comfort",
                      title=f"persona x {by} (* fewer than {r['small_below']} episodes)", title_justify="left")
        scores = Table("persona", by, *[SHORT[c] for c in CONDITIONS], title=f"mean score 1-5, persona x {by}",
                       title_justify="left", box=box.SIMPLE_HEAD)  # no rules: names whole within 80 columns
        for row in r[f"persona_{by}"]:
            key = (escape(str(row["persona"])), escape(str(row[by])))
            rates.add_row(*key, _n(row), fmt_ci(row["contact"], percent=True), fmt(row["mean_interest"]["mean"]),
                          fmt(row["mean_comfort"]["mean"]))
            scores.add_row(*key, *[fmt(row[c]["mean"]) for c in CONDITIONS])
        for t in (rates, scores):
            whole_headers(t)
            for column in t.columns[:2]:
                column.no_wrap = True
        console.print(rates, scores)
    print_group_tests("differences between personas", r["tests"], console)
    print_strategies(r, console)


def print_group_tests(title: str, tests: dict, console) -> None:
    """Omnibus then pairwise (Holm) tests across groups, stacked so that the table fits 80 columns: per measure a
    row for all groups (the test), then a row per pair."""
    from evaluations.analysis.compare import SHORT, fmt, fmt_p, which_test

    t = Table("measure", "groups", "test", "p", "effect", title=f"{title} (pairs: p Holm-adjusted per measure)",
              title_justify="left")  # fmt: skip
    for measure, test in tests.items():
        o, pairs = test["omnibus"], test["pairwise"]
        kind = {"Cra": "V", "eps": "ε²", "Coh": "h"}.get(o["effect_name"][:3], "r")
        pair_kind = "h" if measure == "contact" else "r"
        t.add_row(SHORT.get(measure, measure), f"all {len(o['compared'])}", escape(which_test(o)), fmt_p(o["p"]),
                  f"{kind} {fmt(o['effect'])}", end_section=not pairs)
        for k, p in enumerate(pairs):
            t.add_row("", escape(f"{p['a']}-{p['b']}"), "", fmt_p(p["p_holm"]), f"{pair_kind} {fmt(p['effect'])}",
                      end_section=k == len(pairs) - 1)
    console.print(t)
    console.print("[dim]contact: chi-squared (Fisher exact for two groups), V Cramér's V, pairs Fisher with h Cohen's h; "
                  "scores: Kruskal-Wallis, ε² epsilon-squared, pairs Mann-Whitney with r rank-biserial (second > first "
                  "positive).[/]")


def print_strategies(r: dict, console) -> None:
    """Contact and private state per strategy, then the tests between strategies (when there are two or more)."""
    from evaluations.analysis.compare import fmt, fmt_ci

    if len(r["strategies"]) < 2:
        names = ", ".join(str(row["strategy"]) for row in r["strategies"])
        console.print(f"one strategy ({escape(names)}): nothing to compare between strategies")
        return
    t = Table("strategy", "n", "contact [95% CI]", "next meeting", "interest", "comfort",
              title=f"contact by strategy (* fewer than {r['small_below']} episodes; interest and comfort: means 0-10)",
              title_justify="left")  # fmt: skip
    for row in r["strategies"]:
        t.add_row(escape(str(row["strategy"])), _n(row), fmt_ci(row["contact"], percent=True),
                  fmt_ci(row["next_meeting"], percent=True), fmt(row["mean_interest"]["mean"]), fmt(row["mean_comfort"]["mean"]))
    for column in t.columns[:4]:
        column.no_wrap = True  # names and intervals whole
    console.print(t)
    print_group_tests("differences between strategies", r["strategy_tests"], console)


def print_paired_tests(tests: dict, title: str, console, a: str = "A", b: str = "B") -> None:
    """The paired tests of `compare_runs` or `compare_branches`, one measure a row."""
    from evaluations.analysis.compare import SHORT, fmt, fmt_p

    t = Table("measure", "pairs", a, b, "delta [95% CI]", "test", "p", "p Holm", "effect", title=escape(title),
              title_justify="left")
    for m, r in tests.items():
        effect = f"b01 {r['b01']}, b10 {r['b10']}" if m == "contact" else fmt(r["effect"])
        t.add_row(SHORT.get(m, m), str(r["n"]), fmt(r["a"]), fmt(r["b"]), f"{fmt(r['delta'])} [{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]",
                  r["test"], fmt_p(r["p"]), fmt_p(r["p_holm"]), effect)
    console.print(t)


def print_branches(c: dict, console) -> None:
    """A branch run: treatment against control from identical prefixes, overall, per persona and per prefix."""
    from evaluations.analysis.compare import fmt

    b, p = c["branch"], c["pairing"]
    change = ", ".join(f"{k}={v}" for k, v in b["treatment"].items() if v is not None)
    console.print(f"[bold]branch run {escape(c['run'])}[/]: {escape(change)} (treatment) vs nothing changed (control), "
                  f"forked --at {escape(str(b['at']))} from {len(b['parents'])} episode(s); deltas are treatment - control")
    if p["reason"]:
        console.print(f"[bold red]{escape(p['reason'])}[/]")
        return
    console.print(f"paired {p['paired']} continuations by prefix and rep ({p['excluded']} matched but failed or "
                  f"fidelity-flagged on a side; {p['only_a']} control only, {p['only_b']} treatment only)")
    print_paired_tests(c["tests"], "paired tests, all prefixes", console, "control", "treatment")
    for row in c["personas"]:
        small = " (fewer than 5 pairs: read with care)" if row["small"] else ""
        print_paired_tests(row["tests"], f"persona {row['persona']}: {row['n']} pairs{small}", console, "control", "treatment")
    t = Table("prefix", "pairs", "contact control->treatment", "interest control->treatment",
              title="per prefix (* fewer than 5 pairs)", title_justify="left")
    for row in c["prefixes"]:
        t.add_row(escape(row["cell"]), _n(row), f"{fmt(row['contact_a'])} -> {fmt(row['contact_b'])}",
                  f"{fmt(row['interest_a'])} -> {fmt(row['interest_b'])}")
    console.print(t)


def print_people(c: dict, console) -> None:
    """Personas played by people beside the simulated ones: each side's reactions, then the unpaired tests."""
    from evaluations.analysis.compare import REACTIONS, SHORT, fmt_ci, fmt_p, which_test

    ex = c["excluded"]
    console.print(f"[bold]people[/] {escape(c['people'])}  vs  [bold]models[/] {escape(c['models'])}: personas played by a "
                  f"person beside the simulated ones (excluded: {ex['people']['failed']} + {ex['models']['failed']} failed, "
                  f"{ex['people']['abandoned']} abandoned)")
    t = Table("persona", "measure", "people", "models", "test", "p (Holm)",
              title="persona reactions, people vs models (unpaired: different conversations)", title_justify="left")
    for row in c["personas"]:
        for m in REACTIONS:
            test = row["tests"][m]
            cells = [fmt_ci(row[side][m], percent=m == "contact") + f" n={row[side][m]['n']}" for side in ("people", "models")]
            t.add_row(escape(row["persona"]) if m == "contact" else "", SHORT.get(m, m.replace("_", " ")), *cells,
                      escape(which_test(test)), fmt_p(test["p_holm"]), end_section=m == REACTIONS[-1])
    console.print(t)


def print_comparison(c: dict, console) -> None:
    """What differs between two runs, then the paired tests and per-cell deltas."""
    from evaluations.analysis.compare import SHORT, fmt

    console.print(f"[bold]A[/] {escape(c['a'])}  vs  [bold]B[/] {escape(c['b'])}  (deltas are B - A)")
    if c["differences"]:
        t = Table("differs", "A", "B", title="what differs", title_justify="left")
        for d in c["differences"]:
            mixed = {side: " (mixed)" if side in d.get("mixed", []) else "" for side in ("A", "B")}
            t.add_row(escape(d["field"]), escape(json.dumps(d["a"]) + mixed["A"]), escape(json.dumps(d["b"]) + mixed["B"]))
        console.print(t)
    else:
        console.print("the runs were made the same way (same prompts, rubric, models and grid)")
    for d in c["differences"]:
        if d.get("diff"):
            for line in d["diff"].splitlines():
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@") else ""
                console.print(Text(line, style=style))
    print_ranking(c["ranking"], console)
    p = c["pairing"]
    if p["reason"]:
        console.print(f"[bold red]{escape(p['reason'])}[/]")
        return
    console.print(f"paired {p['paired']} episodes by cell, rep and seed ({p['excluded']} matched but failed or "
                  f"fidelity-flagged on a side; {p['only_a']} only in A, {p['only_b']} only in B)")
    print_paired_tests(c["tests"], "paired tests", console)
    t = Table("cell", "pairs", "contact A->B", "interest A->B", *[f"d {SHORT[c]}" for c in CONDITIONS],
              title="per cell (* fewer than 5 pairs)", title_justify="left")
    for row in c["cells"]:
        t.add_row(escape(row["cell"]), _n(row), f"{fmt(row['contact_a'])} -> {fmt(row['contact_b'])}",
                  f"{fmt(row['interest_a'])} -> {fmt(row['interest_b'])}", *[fmt(row[x]) for x in CONDITIONS])
    console.print(t)
    if c.get("detectable"):
        from evaluations.analysis.tables import detectable_rows

        print_rows(console, "what these pairs could detect", detectable_rows(c["detectable"]))


def print_ranking(r: dict, console) -> None:
    """The strategies' order in A and in B, per measure, with Kendall's tau between the orders."""
    from evaluations.analysis.compare import SHORT, fmt

    if r.get("reason"):
        console.print(f"[dim]strategy ranking: {escape(r['reason'])}[/]")
        return
    for m in ("contact", "mean_interest"):
        x = r[m]
        t = Table("strategy", "A", "rank A", "B", "rank B", title=f"strategies ranked by {SHORT.get(m, m)} (A n={x['n_a']}, "
                  f"B n={x['n_b']}): Kendall tau-b {fmt(x['tau'])}", title_justify="left")  # fmt: skip
        for row in x["rows"]:
            t.add_row(escape(row["strategy"]), fmt(row["a"]), fmt(row["rank_a"], 0), fmt(row["b"]), fmt(row["rank_b"], 0))
        console.print(t)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")


def _emit(result: dict) -> None:
    typer.echo(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False))


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="A run id: persona reactions within it (a branch run: treatment vs "
                                              "control), or the baseline A.")],
    run_b: Annotated[Optional[str], typer.Argument(help="A second run: what changed from A to B, paired.")] = None,
    db: Db = Path("nextstep.db"), fmt: Format = "text", include_unfaithful: IncludeUnfaithful = False,
) -> None:
    """Compare personas within a run, or two runs (e.g. before and after a prompt edit)."""
    _check_format(fmt)
    result = api.compare(run_a, run_b, db=db, include_unfaithful=include_unfaithful)
    if fmt == "json":
        return _emit(result)
    from evaluations.analysis.summary import completion_note

    for run, completion in result["completion"].items():  # first: whether the runs are whole
        console.print(completion_note(run, completion))
    if "branch" in result:
        print_branches(result, console)
    elif "people" in result:
        print_people(result, console)
    elif run_b is None:
        print_reactions(run_a, result, console)
        print_variance(result, console)
    else:
        print_comparison(result, console)


@app.command()
def plan(
    run_id: Annotated[str, typer.Argument(help="A run whose variance the plan is built on (a pilot).")],
    contact_change: Annotated[float, typer.Option(help="Change in contact rate to detect, e.g. 0.1 for 10 points.")] = 0.1,
    score_change: Annotated[float, typer.Option(help="Change in a mean score or state to detect.")] = 0.5,
    alpha: Annotated[float, typer.Option(help="Two-sided level; compare adjusts 9 measures with Holm, so 0.05/9 is safe.")] = 0.05,
    power: Annotated[float, typer.Option(help="Chance of detecting the change if it is real.")] = 0.8,
    db: Db = Path("nextstep.db"), fmt: Format = "text", include_unfaithful: IncludeUnfaithful = False,
) -> None:
    """Repetitions per cell a paired `compare A B` needs to detect given changes, from this run's variance."""
    from evaluations.analysis.tables import plan_costs, plan_rows

    _check_format(fmt)
    result = api.plan_reps(run_id, contact_change=contact_change, score_change=score_change, alpha=alpha, power=power, db=db,
                           include_unfaithful=include_unfaithful)  # fmt: skip
    if fmt == "json":
        return _emit(result)
    print_rows(console, f"plan from {run_id} ({result['n']} of {result['episodes']} episodes usable): {power:.0%} power at "
                        f"alpha {alpha}, paired by cell and seed", plan_rows(result))  # fmt: skip
    console.print(f"[dim]pairs: usable pairs needed; kept: the share of pairs compare will keep (both twins usable and "
                  f"with the measure: the pilot's share of such episodes, squared); reps: per cell over {result['cells']} "
                  "cells, enough to keep that many pairs. contact: exact McNemar power, twins independent given their "
                  "cell; scores (spread: sd of a pair's difference): paired t sample size divided by the Wilcoxon "
                  "efficiency 3/pi.[/]")
    for line in plan_costs(result):
        console.print(line)


@app.command()
def personas(
    run_id: Annotated[str, typer.Argument(help="The run whose personas to audit.")],
    personas_dir: PersonasDir = None, db: Db = Path("nextstep.db"), fmt: Format = "text",
) -> None:
    """Audit persona fidelity: does each type behave as its file says, and are the types told apart?"""
    _check_format(fmt)
    result = api.audit_personas(run_id, db=db, personas_dir=personas_dir)
    if fmt == "json":
        return _emit(result)
    print_audit(run_id, result, console)


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="The run to report on.")],
    vs: Annotated[Optional[str], typer.Option(help="A baseline run: adds the paired comparison (deltas: RUN_ID - VS).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", show_default=False,
                                                   help="HTML file to write [default: RUN_ID.html].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
    db: Db = Path("nextstep.db"), personas_dir: PersonasDir = None, include_unfaithful: IncludeUnfaithful = False,
    all_transcripts: Annotated[bool, typer.Option(help="Every transcript, not the first 300.")] = False,
) -> None:
    """Write one self-contained HTML report (plots, tests, transcripts), viewable offline."""
    output = api.write_report(run_id, output, force=force, vs=vs, db=db, personas_dir=personas_dir,
                              include_unfaithful=include_unfaithful, all_transcripts=all_transcripts)
    console.print(f"wrote {output}")
