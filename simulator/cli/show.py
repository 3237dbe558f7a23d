"""Rendering episodes and verdicts for the terminal (rich); no logic beyond layout."""

from __future__ import annotations

from rich.console import Console
import unicodedata

from rich.markup import escape
from rich.table import Table

from simulator.core.records import Episode, Grade, Turn, Verdict
from simulator.models.prices import money

console = Console(highlight=False)
# Characters that reorder the text around them (Trojan Source): shown escaped like control characters.
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    r"""`text` with control and bidi characters escaped, so model output cannot drive the terminal (set its title,
    clear it, reorder a line): `printable('hi\x1b[2J')` -> 'hi\\x1b[2J'."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" or c in BIDI else c for c in text)


def shown(text: str) -> str:
    """Stored or model-written text for a rich markup string: printable, and its brackets escaped."""
    return escape(printable(text))


def turn_line(turn: Turn) -> str:
    """One turn, with the practitioner's intent or the persona's private state beside it."""
    if turn.speaker == "practitioner":
        parting = " (parting)" if turn.phase == "parting" else ""
        side = f"[cyan]practitioner[/] [dim]{turn.intent:>10}{parting}[/]"
    else:  # records from before persona intents have only shares_contact
        said = turn.intent or ("give_contact" if turn.shares_contact else "")
        side = f"[magenta]persona[/]      [dim]i{turn.interest:>2} c{turn.comfort:>2} {said}[/]"
    return f"{turn.index:>3} {side}  {shown(turn.text)}"


def print_turn(turn: Turn) -> None:
    console.print(turn_line(turn), soft_wrap=True)


def _score(grade: Grade) -> str:
    if grade.status == "scored":
        return str(grade.score)
    return "n/a" if grade.status == "not_applicable" else "[red]unscored[/]"


def print_verdict(verdict: Verdict) -> None:
    """Each transition's condition scores with evidence and reason, then flags, outcome, timing."""
    console.print(f"\n[bold]verdict[/] (judge {verdict.judge}, {verdict.model}, seed {verdict.seed})")
    if not verdict.graded:
        console.print(f"[red]ungraded[/]: the endpoint failed ({shown(verdict.error or '')}); `nextstep batch --resume` grades it again")
        return
    for t in verdict.transitions:
        where = f"turns {', '.join(map(str, t.turns))} ({t.source})" if t.turns else "whole conversation (no transition found)"
        table = Table(title=f"transition at {where}", title_justify="left", expand=True)
        for column, style in (("condition", "bold"), ("score", None), ("turn", None), ("evidence", "italic"), ("reason", None)):
            table.add_column(column, style=style, overflow="fold")
        for c, g in t.conditions.items():
            quote = f'"{shown(g.quote)}"' if g.quote else ""
            turn = "" if g.status == "unscored" or g.turn is None else str(g.turn)
            table.add_row(c, _score(g), turn, quote, shown(g.reason or ""))
        console.print(table)
        if timing := t.timing_objective:
            console.print(
                f"  objective timing: ask at turn {timing.ask_turn}, interest peak before it {timing.peak_interest} at turn "
                f"{timing.peak_turn} ({timing.turns_from_peak:+d} turns); interest at the ask {timing.interest_at_ask}"
            )
    if verdict.judge_added:
        console.print(f"  the judge also named turns {', '.join(map(str, verdict.judge_added))} as moves: no declared intent "
                      "says so, so they were not graded")
    flags = verdict.flags
    raised = ", ".join(f"{f.flag} (turn {f.turn}: \"{shown(f.quote or '')}\")" for f in (flags.raised if flags else []))
    unscored = f" [red]unscored: {shown(flags.reason or '')}[/]" if flags and flags.status == "unscored" else ""
    console.print(f"[bold]flags[/]: {raised or 'none'}{unscored}")
    o = verdict.outcome
    if o and o.status == "scored":
        given = f" (sentence {o.sentence}: \"{shown(o.quote or '')}\")" if o.sentence else ""
        console.print(f"[bold]judged outcome[/]: exchanged {o.exchanged}{given}; concrete next meeting: "
                      f"{'yes' if o.next_meeting else 'no'} — {shown(o.reason or '')}")
    else:
        console.print(f"[bold]judged outcome[/]: [red]unscored[/] {shown((o and o.reason) or '')}")
    if verdict.unscored:
        console.print(f"[dim]{len(verdict.unscored)} part(s) unscored; see the episode record for reasons[/]")


def print_caution(caution: str | None) -> None:
    """A negative baseline's warning, so its transcript is never read as advice."""
    if caution:
        console.print(f"[bold yellow]caution[/]: {shown(caution)}")


def _count(tokens: int | None) -> str:
    """`_count(None)` -> 'unknown' (the endpoint reported no usage)."""
    return "unknown" if tokens is None else str(tokens)


def print_result(record: Episode, path) -> None:
    o, u = record.outcome, record.usage
    if record.status != "succeeded":
        console.print(f"[red]{record.status}[/]: {shown(record.error or '')}")
    if o:
        console.print(f"\n[bold]outcome[/]: exchanged {o.exchanged}; ended by {o.ended_by} ({o.end_reason}); "
                      f"final interest {o.final_interest}, comfort {o.final_comfort}")
    if record.in_character is False:
        why = (record.fidelity.problems if record.fidelity else []) + [
            f"judge {v.judge}: {v.fidelity.reason}" for v in record.verdicts if v.fidelity and v.fidelity.in_character is False]
        console.print(f"[yellow]out of character[/]: {escape('; '.join(why))} (excluded from aggregates by default)")
    elif record.abandoned:
        console.print("[yellow]abandoned[/]: a person ended it before an ask was answered (excluded from aggregates)")
    for verdict in record.verdicts:
        print_verdict(verdict)
    if u:
        console.print(f"\n[bold]tokens[/]: {_count(u.prompt_tokens)} prompt + {_count(u.completion_tokens)} completion in "
                      f"{u.calls} calls; [bold]cost[/]: {money(u.cost_usd)}; [bold]time[/]: {record.duration_s or 0:.1f}s")
    if path:
        console.print(f"[bold]saved[/]: {path}")
