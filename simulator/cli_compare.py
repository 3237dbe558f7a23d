"""`nextstep compare` and `nextstep report`: persona reactions, two runs side by side, the HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from evaluations.rubric import CONDITIONS

from .errors import UserError

FORMATS = ("text", "json")
Db = Annotated[Path, typer.Option(help="SQLite database of runs.")]


def _flags(stats: dict) -> str:
    """Flags raised at all, by rate: 'rude 11%, creepy 11%' (or '-')."""
    raised = [(f, r["rate"]) for f, r in stats["flags"].items() if r["rate"]]
    return ", ".join(f"{f} {x:.0%}" for f, x in sorted(raised, key=lambda fr: -fr[1])) or "-"


def _n(row: dict) -> str:
    return f"{row['n']}*" if row["small"] else str(row["n"])


def print_reactions(run_id: str, r: dict, console) -> None:
    """Persona reactions as rich tables; '*' marks groups smaller than the small-cell threshold."""
    from evaluations.compare import SHORT, fmt, fmt_ci, fmt_p, which_test

    ex = r["excluded"]
    why = f"excluded {ex['failed']} failed, {ex['ungraded']} ungraded, {ex['unfaithful']} fidelity-flagged" + (
        "" if r["include_unfaithful"] else " (keep those with --include-unfaithful)")
    console.print(f"[bold]run {escape(run_id)}[/]: {r['episodes']} episodes, {r['n']} used; {why}")
    if not r["n"]:
        return
    t = Table("persona", "n", "contact [95% CI]", "interest 0-10", "comfort 0-10", "flags",
              title="persona reactions", title_justify="left")
    for row in r["personas"]:
        t.add_row(escape(str(row["persona"])), _n(row), fmt_ci(row["contact"], percent=True), fmt_ci(row["mean_interest"]),
                  fmt_ci(row["mean_comfort"]), _flags(row))
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
                       title_justify="left")
        for row in r[f"persona_{by}"]:
            key = (escape(str(row["persona"])), escape(str(row[by])))
            rates.add_row(*key, _n(row), fmt_ci(row["contact"], percent=True), fmt(row["mean_interest"]["mean"]),
                          fmt(row["mean_comfort"]["mean"]))
            scores.add_row(*key, *[fmt(row[c]["mean"]) for c in CONDITIONS])
        console.print(rates, scores)
    t = Table("measure", "test", "statistic", "p", "effect", "pairwise: p (Holm), effect",
              title="differences between personas", title_justify="left")
    for measure, test in r["tests"].items():
        o = test["omnibus"]
        pairs = "\n".join(f"{p['a']}-{p['b']}: {fmt_p(p['p_holm'])}, {fmt(p['effect'])}" for p in test["pairwise"])
        t.add_row(SHORT.get(measure, measure), escape(which_test(o)), fmt(o["statistic"]), fmt_p(o["p"]),
                  f"{fmt(o['effect'])} {o['effect_name']}", escape(pairs))
    console.print(t)
    console.print("[dim]contact: chi-squared (Fisher exact for two groups), effect Cramér's V (pairs: Cohen's h); "
                  "scores: Kruskal-Wallis, effect epsilon-squared (pairs: Mann-Whitney, rank-biserial).[/]")


def print_comparison(c: dict, console) -> None:
    """What differs between two runs, then the paired tests and per-cell deltas."""
    from evaluations.compare import SHORT, fmt, fmt_p

    console.print(f"[bold]A[/] {escape(c['a'])}  vs  [bold]B[/] {escape(c['b'])}  (deltas are B - A)")
    if c["differences"]:
        t = Table("differs", "A", "B", title="what differs", title_justify="left")
        for d in c["differences"]:
            t.add_row(escape(d["field"]), escape(json.dumps(d["a"])), escape(json.dumps(d["b"])))
        console.print(t)
    else:
        console.print("the runs were made the same way (same prompts, rubric, models and grid)")
    for d in c["differences"]:
        if d.get("diff"):
            for line in d["diff"].splitlines():
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@") else ""
                console.print(Text(line, style=style))
    p = c["pairing"]
    if p["reason"]:
        console.print(f"[bold red]{escape(p['reason'])}[/]")
        return
    console.print(f"paired {p['paired']} episodes by cell, rep and seed ({p['excluded']} matched but failed or "
                  f"fidelity-flagged on a side; {p['only_a']} only in A, {p['only_b']} only in B)")
    t = Table("measure", "pairs", "A", "B", "delta [95% CI]", "test", "p", "p Holm", "effect",
              title="paired tests", title_justify="left")
    for m, r in c["tests"].items():
        effect = f"b01 {r['b01']}, b10 {r['b10']}" if m == "contact" else fmt(r["effect"])
        t.add_row(SHORT.get(m, m), str(r["n"]), fmt(r["a"]), fmt(r["b"]), f"{fmt(r['delta'])} [{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]",
                  r["test"], fmt_p(r["p"]), fmt_p(r["p_holm"]), effect)
    console.print(t)
    t = Table("cell", "pairs", "contact A->B", "interest A->B", *[f"d {SHORT[c]}" for c in CONDITIONS],
              title="per cell (* fewer than 5 pairs)", title_justify="left")
    for row in c["cells"]:
        t.add_row(escape(row["cell"]), _n(row), f"{fmt(row['contact_a'])} -> {fmt(row['contact_b'])}",
                  f"{fmt(row['interest_a'])} -> {fmt(row['interest_b'])}", *[fmt(row[x]) for x in CONDITIONS])
    console.print(t)


def register(app: typer.Typer, console) -> None:
    """Add `compare` and `report` to the nextstep app."""
    def existing(db: Path) -> None:
        if not db.is_file():
            raise UserError(f"{db}: no such database (run a batch first, or pass --db)")

    @app.command()
    def compare(
        run_a: Annotated[str, typer.Argument(help="A run id: persona reactions within it, or the baseline A.")],
        run_b: Annotated[Optional[str], typer.Argument(help="A second run: what changed from A to B, paired.")] = None,
        db: Db = Path("nextstep.db"),
        fmt: Annotated[str, typer.Option("--format", help="text (tables) or json (for scripts).")] = "text",
        include_unfaithful: Annotated[bool, typer.Option(help="Keep fidelity-flagged episodes in the statistics.")] = False,
    ) -> None:
        """Compare personas within a run, or two runs (e.g. before and after a prompt edit)."""
        from evaluations.compare import compare_runs, load_pair, persona_reactions
        from evaluations.frame import load_run

        if fmt not in FORMATS:
            raise UserError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
        existing(db)
        if run_b is None:
            result = persona_reactions(load_run(run_a, db), include_unfaithful=include_unfaithful)
        else:
            result = compare_runs(*load_pair(run_a, run_b, db), include_unfaithful=include_unfaithful)
        if fmt == "json":
            typer.echo(json.dumps(result, indent=1, ensure_ascii=False, allow_nan=False))
        elif run_b is None:
            print_reactions(run_a, result, console)
        else:
            print_comparison(result, console)

    @app.command()
    def report(
        run_id: Annotated[str, typer.Argument(help="The run to report on.")],
        vs: Annotated[Optional[str], typer.Option(help="A baseline run: adds the paired comparison (deltas: RUN_ID - VS).")] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")] = Path("report.html"),
        db: Db = Path("nextstep.db"),
    ) -> None:
        """Write one self-contained HTML report (plots, tests, transcripts), viewable offline."""
        from evaluations.report import render_report

        existing(db)
        output.write_text(render_report(run_id, db, vs=vs), encoding="utf-8")
        console.print(f"wrote {output}")
