"""Rendering episodes and verdicts for the terminal (rich); no logic beyond layout."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)


def turn_line(turn: dict) -> str:
    """One turn, with the practitioner's intent or the persona's private state beside it."""
    if turn["speaker"] == "practitioner":
        parting = " (parting)" if turn.get("phase") == "parting" else ""
        side = f"[cyan]practitioner[/] [dim]{turn['intent']:>10}{parting}[/]"
    else:  # records from before persona intents have only shares_contact
        said = turn.get("intent") or ("give_contact" if turn.get("shares_contact") else "")
        side = f"[magenta]persona[/]      [dim]i{turn['interest']:>2} c{turn['comfort']:>2} {said}[/]"
    return f"{turn['index']:>3} {side}  {escape(turn['text'])}"


def print_turn(turn: dict) -> None:
    console.print(turn_line(turn), soft_wrap=True)


def _score(grade: dict) -> str:
    if grade["status"] == "scored":
        return str(grade["score"])
    return "n/a" if grade["status"] == "not_applicable" else "[red]unscored[/]"


def print_verdict(verdict: dict) -> None:
    """Each transition's condition scores with evidence and reason, then flags, outcome, timing."""
    console.print(f"\n[bold]verdict[/] (judge {verdict['judge']}, {verdict['model']}, seed {verdict['seed']})")
    if verdict.get("status") == "ungraded":
        console.print(f"[red]ungraded[/]: the endpoint failed ({escape(verdict['error'])}); `nextstep batch --resume` grades it again")
        return
    for t in verdict.get("transitions", []):
        where = f"turns {', '.join(map(str, t['turns']))} ({t['source']})" if t["turns"] else "whole conversation (no transition found)"
        table = Table(title=f"transition at {where}", title_justify="left", expand=True)
        for column, style in (("condition", "bold"), ("score", None), ("turn", None), ("evidence", "italic"), ("reason", None)):
            table.add_column(column, style=style, overflow="fold")
        for c, g in t["conditions"].items():
            quote = f'"{escape(g["quote"])}"' if g.get("quote") else ""
            table.add_row(c, _score(g), str(g.get("turn", "")) if g["status"] != "unscored" else "", quote, escape(g["reason"] or ""))
        console.print(table)
        timing = t.get("timing_objective")
        if timing:
            console.print(
                f"  objective timing: ask at turn {timing['ask_turn']}, interest peak {timing['peak_interest']} at turn "
                f"{timing['peak_turn']} ({timing['turns_from_peak']:+d} turns); interest at the ask {timing['interest_at_ask']}"
            )
    flags = verdict.get("flags") or {}
    raised = ", ".join(f"{f['flag']} (turn {f['turn']}: \"{escape(f['quote'])}\")" for f in flags.get("raised", []))
    console.print(f"[bold]flags[/]: {raised or 'none'}" + (f" [red]unscored: {escape(flags['reason'])}[/]" if flags.get("status") == "unscored" else ""))
    o = verdict.get("outcome") or {}
    if o.get("status") == "scored":
        given = f" (sentence {o['sentence']}: \"{escape(o['quote'])}\")" if o.get("sentence") else ""
        console.print(f"[bold]judged outcome[/]: exchanged {o['exchanged']}{given}; concrete next meeting: "
                      f"{'yes' if o['next_meeting'] else 'no'} — {escape(o['reason'])}")
    else:
        console.print(f"[bold]judged outcome[/]: [red]unscored[/] {escape(o.get('reason', ''))}")
    if verdict.get("unscored"):
        console.print(f"[dim]{len(verdict['unscored'])} part(s) unscored; see the episode record for reasons[/]")


def print_caution(record: dict) -> None:
    """A negative baseline's warning, so its transcript is never read as advice."""
    if record.get("caution"):
        console.print(f"[bold yellow]caution[/]: {escape(record['caution'])}")


def _count(tokens: int | None) -> str:
    """`_count(None)` -> 'unknown' (the endpoint reported no usage)."""
    return "unknown" if tokens is None else str(tokens)


def print_result(record: dict, path) -> None:
    o, u = record.get("outcome") or {}, record["usage"]
    if record["status"] != "succeeded":
        console.print(f"[red]{record['status']}[/]: {escape(record['error'])}")
    console.print(
        f"\n[bold]outcome[/]: exchanged {o.get('exchanged')}; ended by {o.get('ended_by')} ({o.get('end_reason')}); "
        f"final interest {o.get('final_interest')}, comfort {o.get('final_comfort')}"
    )
    fidelity = record.get("fidelity") or {}
    if fidelity and not fidelity.get("ok"):
        console.print(f"[yellow]persona fidelity[/]: {'; '.join(fidelity['problems'])} (excluded from aggregates by default)")
    for verdict in record.get("verdicts", []):
        print_verdict(verdict)
    console.print(
        f"\n[bold]tokens[/]: {_count(u['prompt_tokens'])} prompt + {_count(u['completion_tokens'])} completion in {u['calls']} calls; "
        f"[bold]time[/]: {record['duration_s']:.1f}s"
    )
    if path:
        console.print(f"[bold]saved[/]: {path}")
