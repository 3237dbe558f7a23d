"""Printing a run's summary (`batch`, `show RUN`) and the judges' agreement (`grade` too)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.markup import escape
from rich.table import Table

from evaluations.judge.rubric import CONDITIONS
from simulator.api import Progress
from simulator.models.prices import money

from .show import console


def print_alpha(alpha: dict) -> None:
    console.print("[bold]agreement between judges[/] (Krippendorff's alpha, ordinal): "
                  + ", ".join(f"{c} {'n/a' if a is None else f'{a:.2f}'}" for c, a in alpha.items()))


def _percent(x) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def print_headline(s: dict, db: Path) -> None:
    """In words, before any table: what happened to the episodes, what that means, and the command to run next."""
    rows = s["rows"]
    total, usable = sum(r["episodes"] for r in rows), sum(r["n"] for r in rows)
    failed, ungraded, unfaithful = (sum(r[k] for r in rows) for k in ("failed", "ungraded", "unfaithful"))
    run = s["run"]
    if total and unfaithful and not usable:
        every = "all " if unfaithful == total else ""
        console.print(f"[bold]what happened[/]: {every}{unfaithful} episodes are out of character (the persona left the "
                      f"type its file sets){f', {failed} failed' if failed else ''}; no episode is usable, so the figures "
                      "below, marked †, show the pipeline working, not findings.")  # fmt: skip
    elif total and failed == total:
        console.print(f"[bold]what happened[/]: all {total} episodes failed (see the errors: nextstep show EPISODE_ID); "
                      "there is nothing to count yet.")  # fmt: skip
    else:
        console.print(f"[bold]what happened[/]: {usable} of {total} episodes are usable; {failed} failed, {ungraded} "
                      f"ungraded and {unfaithful} out of character are left out of rates and means.")  # fmt: skip
    if s["backend"] == "local":
        console.print("[bold]what it means[/]: the embedded model (SmolLM2-135M) proves the pipeline runs end to end; it "
                      "is too small to play a persona. Findings need a stronger model: add --base-url URL "
                      "--model NAME (README: Backends).")  # fmt: skip
    if unfaithful:
        console.print(f"[bold]next[/]: nextstep personas {run} --db {db}   (why they are out of character)")
    elif failed or ungraded:
        console.print(f"[bold]next[/]: nextstep batch --resume {run} --db {db}   (retry and grade again)")
    else:
        console.print(f"[bold]next[/]: nextstep compare {run} --db {db}   (the personas, with intervals and tests)")


def print_summary(s: dict, db: Path, progress: Progress | None = None) -> None:
    """What happened in words; per persona x setting: episodes, exclusions and rates; mean score per condition; what
    next. A row without a usable episode shows its out-of-character ones instead, marked †."""
    from evaluations.analysis.compare import SHORT, fmt  # with the statistics stack: loaded once a summary is printed

    from evaluations.analysis.summary import completion_note

    run_id = s["run"]
    console.print(completion_note(run_id, s["completion"]))
    print_headline(s, db)
    # No column rules: with them, the widest cells ('friendly', 'supermarket') cut a header at 80 columns.
    plain = {"title_justify": "left", "box": box.SIMPLE_HEAD, "pad_edge": False, "show_edge": False}
    counts = Table("persona", "setting", "eps", "fail", "ungr", "ooc", "contact", "meeting", "handle", title=f"run {run_id}", **plain)
    scores = Table("persona", "setting", *(SHORT[c] for c in CONDITIONS), title="mean score 1-5 per condition", **plain)
    marked = False
    for r, everyone in zip(s["rows"], s["rows_with_unfaithful"]):
        shown, mark = (everyone, "†") if r["n"] == 0 and r["unfaithful"] else (r, "")
        marked |= bool(mark)
        counts.add_row(r["persona"], r["setting"], str(r["episodes"]), str(r["failed"]), str(r["ungraded"]), str(r["unfaithful"]),
                       *(_percent(shown[k]) + mark for k in ("contact_rate", "next_meeting_rate", "social_handle_rate")))
        scores.add_row(r["persona"], r["setting"], *[fmt(shown[c], 1) + (mark if shown[c] is not None else "") for c in CONDITIONS])
    for t in (counts, scores):
        for column in t.columns[:2]:
            column.no_wrap = True  # names whole; 80 columns hold them
    console.print(counts)
    console.print("[dim]eps episodes · fail failed · ungr ungraded (a judge's endpoint failed; --resume grades them) · "
                  "ooc out of character · contact: number or email exchanged · meeting: a concrete next meeting · "
                  "handle: a social handle only. Rates and means are over usable episodes (none of those three).[/]")
    console.print(scores)
    console.print("[dim]" + " · ".join(f"{SHORT[c]} {c}" for c in CONDITIONS) + "; n/a: nothing scored there (no "
                  "usable episode, or the judges' evidence was rejected: see `nextstep show EPISODE`)[/]")
    if marked:
        console.print("[yellow]†[/] over out-of-character episodes (the row has no usable one): the pipeline at work, not "
                      "a finding")
    for strategy, caution in s["cautions"].items():
        console.print(f"[bold yellow]caution[/] ({escape(strategy)}): {escape(caution)}")
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
    if s["cost_usd"] is None:
        console.print("cost of the run: unknown (a model has no known price: see --prices)")
    else:
        per = f", {money(s['cost_per_episode'])} per succeeded episode" if s["cost_per_episode"] is not None else ""
        console.print(f"cost of the run: {money(s['cost_usd'])}{per}")
    if s["tokens_saved"]:
        spent = "unknown" if s["tokens_spent"] is None else f"{s['tokens_spent']:,}"
        console.print(f"run tokens: {spent} spent at the endpoint, {s['tokens_saved']:,} saved by the response cache")
    if progress is not None:
        print_session(run_id, db, progress)
    console.print(f"see more: nextstep show {run_id} --db {db}\n          nextstep compare {run_id} --db {db}\n"
                  f"          nextstep report {run_id} --db {db} -o {run_id}.html\n"
                  f"          nextstep export {run_id} --db {db} -o {run_id}.csv")


def print_session(run_id: str, db: Path, progress: Progress) -> None:
    """What this batch session did, and how to continue it."""
    unknown = (f" + {progress.unknown_usage_calls:,} calls whose endpoint reported no usage (not counted, so not "
               "held to --max-tokens)") if progress.unknown_usage_calls else ""  # fmt: skip
    tested = f" (with {progress.test_calls} test call(s) before the episodes)" if progress.test_calls else ""
    saved = f"; {progress.saved_tokens:,} tokens saved by {progress.cache_hits:,} cached calls" if progress.cache_hits else ""
    console.print(f"this session: {progress.done} succeeded, {progress.ungraded} ungraded, {progress.failed} failed, "
                  f"{progress.skipped} already done; "
                  f"{progress.tokens:,} tokens spent{tested}{unknown}{saved}; cost {money(progress.cost)}")
    resume = f"nextstep batch --resume {run_id} --db {db}"
    if progress.stopped:
        console.print(f"[yellow]stopped scheduling[/]: {progress.stopped}; continue with: {resume}")
    elif progress.failed or progress.ungraded:
        console.print(f"retry the failed episodes and grade the ungraded ones with: {resume}")
