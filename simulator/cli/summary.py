"""Printing a run's summary (`batch`, `show RUN`) and the judges' agreement (`grade` too)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from evaluations.judge.rubric import CONDITIONS
from simulator.api import Progress

from .show import console


def print_alpha(alpha: dict) -> None:
    console.print("[bold]agreement between judges[/] (Krippendorff's alpha, ordinal): "
                  + ", ".join(f"{c} {'n/a' if a is None else f'{a:.2f}'}" for c, a in alpha.items()))


def print_summary(s: dict, db: Path, progress: Progress | None = None) -> None:
    """Per persona x setting: episodes, exclusions and contact rate; then mean score per condition; then what next."""
    from evaluations.analysis.compare import fmt  # with the statistics stack: loaded once a summary is printed

    from evaluations.analysis.summary import completion_note

    run_id = s["run"]
    console.print(completion_note(run_id, s["completion"]))
    counts = Table("persona", "setting", "episodes", "failed", "ungraded", "out of character", "contact (number/email)",
                   "next meeting", "social handle only", title=f"run {run_id}", title_justify="left")  # fmt: skip
    scores = Table("persona", "setting", *(c.replace("_", " ") for c in CONDITIONS),
                   title="mean score (1-5) per condition, usable episodes", title_justify="left")  # fmt: skip
    for r in s["rows"]:
        counts.add_row(r["persona"], r["setting"], str(r["episodes"]), str(r["failed"]), str(r["ungraded"]), str(r["unfaithful"]),
                       fmt(r["contact_rate"]), fmt(r["next_meeting_rate"]), fmt(r["social_handle_rate"]))
        scores.add_row(r["persona"], r["setting"], *[fmt(r[c]) for c in CONDITIONS])
    console.print(counts, scores)
    for strategy, caution in s["cautions"].items():
        console.print(f"[bold yellow]caution[/] ({escape(strategy)}): {escape(caution)}")
    console.print("[dim]failed, ungraded (a judge's endpoint failed; --resume grades them again) and out-of-character "
                  "episodes are kept but left out of rates and means; n/a: nothing scored there (no usable episode, or the "
                  "judges' evidence was rejected: see `nextstep show EPISODE`)[/]")
    if len(s["rubrics"]) > 1:
        mix = ", ".join(f"{(h or 'none')[:12]}: {n} episode(s)" for h, n in s["rubrics"].items())
        console.print(f"[bold yellow]caution[/]: graded under {len(s['rubrics'])} rubrics ({mix}), a re-grade left part way; "
                      f"finish it with the same `nextstep grade {run_id} --db {db} ...`, which grades only the rest")  # fmt: skip
    if s["judge_alpha"] is not None:
        print_alpha(s["judge_alpha"])
    if s["tokens_per_episode"] is not None:
        ok, known = s["succeeded"], s["usage_known"]
        unknown = f" (over {known} of {ok}: the endpoint reported no usage for the others)" if known < ok else ""
        console.print(f"tokens per succeeded episode: {s['tokens_per_episode']:,.0f}{unknown}")
    elif s["succeeded"]:
        console.print("tokens per succeeded episode: unknown (the endpoint reported no usage)")
    if s["tokens_saved"]:
        spent = "unknown" if s["tokens_spent"] is None else f"{s['tokens_spent']:,}"
        console.print(f"run tokens: {spent} spent at the endpoint, {s['tokens_saved']:,} saved by the response cache")
    if progress is not None:
        print_session(run_id, db, progress)
    console.print(f"see more: nextstep show {run_id} --db {db}\n          nextstep compare {run_id} --db {db}\n"
                  f"          nextstep report {run_id} --db {db} -o {run_id}.html\n"
                  f"          nextstep export {run_id} --format csv -o {run_id}.csv --db {db}")


def print_session(run_id: str, db: Path, progress: Progress) -> None:
    """What this batch session did, and how to continue it."""
    unknown = (f" + {progress.unknown_usage_calls:,} calls whose endpoint reported no usage (not counted, so not "
               "held to --max-tokens)") if progress.unknown_usage_calls else ""  # fmt: skip
    tested = f" (with {progress.test_calls} test call(s) before the episodes)" if progress.test_calls else ""
    saved = f"; {progress.saved_tokens:,} tokens saved by {progress.cache_hits:,} cached calls" if progress.cache_hits else ""
    console.print(f"this session: {progress.done} succeeded, {progress.ungraded} ungraded, {progress.failed} failed, "
                  f"{progress.skipped} already done; "
                  f"{progress.tokens:,} tokens spent{tested}{unknown}{saved}")
    resume = f"nextstep batch --resume {run_id} --db {db}"
    if progress.stopped:
        console.print(f"[yellow]stopped scheduling[/]: {progress.stopped}; continue with: {resume}")
    elif progress.failed or progress.ungraded:
        console.print(f"retry the failed episodes and grade the ungraded ones with: {resume}")
