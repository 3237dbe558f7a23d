"""One self-contained HTML report of a run: statistics, inline SVG plots, transcripts; no network needed to view it.

Every string that comes from a record (model text, quotes, reasons, names) goes through `html.escape`;
only our own markup (the `Html` type) is inserted as is.
"""

from __future__ import annotations

import io
import json
import re
from html import escape
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .compare import SHORT, compare_runs, fmt, fmt_ci, fmt_p, load_pair, persona_reactions, run_prompts
from .frame import episode_row, usable
from .rubric import CONDITIONS

MAX_EPISODES = 300  # transcripts shown; beyond this the file gets heavy and the statistics say more
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1180px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start} .plots svg{max-width:100%;height:auto}
details{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:4px 8px} summary{cursor:pointer}
.turn{margin:4px 0;padding:4px 8px;border-left:4px solid #ccc;background:#fafafa} .turn.persona{border-color:#9bc;margin-left:28px}
.turn.moving{border-color:#e69500;background:#fff7e6} .who{font-size:12px;color:#666}
mark.ev{background:#ffe58a} mark.flag{background:#ffb3b3} .badge{display:inline-block;border-radius:3px;padding:0 5px;font-size:12px;margin-left:4px;background:#eee}
.badge.flag{background:#ffb3b3} .badge.contact{background:#b7e4b7} .badge.bad{background:#f3c6a5}
pre.diff{background:#f7f7f7;padding:8px;white-space:pre-wrap} table.tight td,table.tight th{white-space:nowrap} .add{color:#116611} .del{color:#aa1111} .hunk{color:#1166aa}
"""


class Html(str):
    """Markup we wrote ourselves; anything else is escaped before it reaches the page."""


def cell(x) -> str:
    """A table cell's content: `cell('<b>')` -> '&lt;b&gt;'; `cell(Html('<b>'))` -> '<b>'."""
    return x if isinstance(x, Html) else escape(str(x))


def table(head: list, rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> Html:
    """An HTML table; columns in `numeric` are right-aligned; class 'tight' keeps cells on one line."""
    th = "".join(f"<th>{cell(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{cell(x)}</td>" for i, x in enumerate(r))
                   + "</tr>" for r in rows)  # fmt: skip
    return Html(f'<table class="{cls}"><tr>{th}</tr>{body}</table>')


def svg(fig: Figure) -> Html:
    """The figure as inline SVG markup, without the XML prolog and metadata (which names external URIs)."""
    FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nextstep"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return Html(re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S))


def heatmap(rows: list[dict]) -> Html:
    """Contact rate per persona x setting; each cell says its n, '*' when small."""
    personas, settings = sorted({r["persona"] for r in rows}), sorted({r["setting"] for r in rows})
    grid = np.full((len(personas), len(settings)), np.nan)
    fig = Figure(figsize=(2.2 + 1.4 * len(settings), 1.2 + 0.6 * len(personas)))
    ax = fig.add_subplot()
    for r in rows:
        i, j = personas.index(r["persona"]), settings.index(r["setting"])
        x = r["contact"]["rate"]
        grid[i, j] = np.nan if x is None else x
        label = ("–" if x is None else f"{x:.0%}") + f"\nn={r['n']}" + ("*" if r["small"] else "")
        ax.text(j, i, label, ha="center", va="center", fontsize=9, color="white" if x and x > 0.6 else "black")
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_yticks(range(len(personas)), personas)
    ax.set_title("contact rate, persona × setting", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05, format=lambda v, _: f"{v:.0%}")
    return svg(fig)


def condition_bars(rows: list[dict], colors: dict) -> Html:
    """Mean score per condition, one bar per persona, with bootstrap 95% CIs."""
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    x, width = np.arange(len(CONDITIONS)), 0.8 / max(len(rows), 1)
    for k, r in enumerate(rows):
        mean = np.array([np.nan if r[c]["mean"] is None else r[c]["mean"] for c in CONDITIONS])
        ci = np.array([[np.nan if v is None else v for v in r[c]["ci"]] for c in CONDITIONS])
        err = np.nan_to_num(np.abs(ci.T - mean))  # no interval (n < 2): no whisker
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, mean, width, yerr=err, capsize=2, color=colors[r["persona"]],
               label=f"{r['persona']} (n={r['n']})")
    ax.set_xticks(x, [c.replace("_", " ") for c in CONDITIONS], fontsize=8)
    ax.set_ylim(0, 5.4)
    ax.set_yticks(range(1, 6))
    ax.set_ylabel("mean score (1-5)")
    ax.set_title("condition scores by persona, 95% CI", fontsize=10)
    ax.legend(fontsize=8, ncols=len(rows), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return svg(fig)


def interest_curves(records: list[dict], colors: dict) -> Html:
    """Mean private interest per persona by turn; ▼ and a dotted line mark the median turn of the first ask."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for persona in colors:
        mine = [r for r in records if r["persona"] == persona]
        by_turn: dict[int, list[int]] = {}
        for r in mine:
            for t in r.get("turns") or []:
                if t.get("speaker") == "persona" and t.get("interest") is not None:
                    by_turn.setdefault(t["index"], []).append(t["interest"])
        if not by_turn:
            continue
        xs = sorted(by_turn)
        ys = [float(np.mean(by_turn[i])) for i in xs]
        ax.plot(xs, ys, marker="o", color=colors[persona], label=f"{persona} (n={len(mine)})")
        asks = [a for r in mine if (a := (r.get("outcome") or {}).get("first_ask_turn")) is not None]
        if asks:
            at = float(np.median(asks))  # a dotted line, not a point: the ask may come before any reading
            ax.axvline(at, color=colors[persona], linestyle=":", linewidth=1.5)
            ax.plot(at, 9.6, marker="v", markersize=10, color=colors[persona], markeredgecolor="black")
    handles, _ = ax.get_legend_handles_labels()
    ask = Line2D([], [], marker="v", color="grey", markeredgecolor="black", linestyle=":", label="median first ask")
    ax.legend(handles=[*handles, ask], fontsize=8, frameon=False, loc="lower right")
    ax.set_ylim(0, 10)
    ax.set_xlabel("turn")
    ax.set_ylabel("mean private interest (0-10)")
    ax.set_title("persona's interest over the conversation", fontsize=10)
    return svg(fig)


def evidence(record: dict) -> dict[int, list[tuple[str, str, str]]]:
    """Quotes the judges cited, by turn: {turn: [(quote, css class, tooltip)]}."""
    found: dict[int, list] = {}
    for v in record.get("verdicts") or []:
        for t in v.get("transitions") or []:
            for c, g in (t.get("conditions") or {}).items():
                if g.get("status") == "scored" and g.get("quote"):
                    found.setdefault(g["turn"], []).append((g["quote"], "ev", f"{c} {g['score']}/5: {g.get('reason', '')}"))
        for f in (v.get("flags") or {}).get("raised") or []:
            found.setdefault(f.get("turn"), []).append((f.get("quote") or "", "flag", f"{f['flag']}: {f.get('reason', '')}"))
    return found


def highlight(text: str, quotes: list[tuple[str, str, str]]) -> Html:
    """Escaped text with each quote found in it wrapped in <mark>: highlight('a <b> c', [('<b>', 'ev', 'x')])."""
    spans: dict[tuple[int, int], list] = {}
    for quote, cls, title in quotes:
        start = text.lower().find(quote.lower()) if quote else -1
        if start >= 0:
            spans.setdefault((start, start + len(quote)), []).append((cls, title))
    out, pos = [], 0
    for (start, end), marks in sorted(spans.items()):
        if start < pos:  # overlaps an earlier quote: its tooltip is lost, the text is not
            continue
        cls = "flag" if any(c == "flag" for c, _ in marks) else "ev"
        title = " | ".join(t for _, t in marks)
        out += [escape(text[pos:start]), f'<mark class="{cls}" title="{escape(title)}">', escape(text[start:end]), "</mark>"]
        pos = end
    return Html("".join(out) + escape(text[pos:]))


def episode(record: dict) -> Html:
    """One episode as a collapsible block: turns with private state, transitions, evidence and flags."""
    o, verdicts = record.get("outcome") or {}, record.get("verdicts") or []
    flags = sorted({f["flag"] for v in verdicts for f in (v.get("flags") or {}).get("raised") or []})
    moving = {i for v in verdicts for t in v.get("transitions") or [] for i in t.get("turns") or []}
    quotes = evidence(record)
    badges = "".join(f'<span class="badge flag">{escape(f)}</span>' for f in flags)
    if o.get("exchanged") not in (None, "none"):
        badges += f'<span class="badge contact">{escape(str(o["exchanged"]))}</span>'
    if record.get("status") != "succeeded":
        badges += '<span class="badge bad">failed</span>'
    elif (record.get("fidelity") or {}).get("ok") is False:
        badges += '<span class="badge bad">out of character</span>'
    head = " · ".join(escape(str(record.get(k))) for k in ("persona", "setting", "strategy"))
    parts = [f"<details><summary>{head} · rep {escape(str(record.get('rep')))}{badges}</summary>"]
    for t in record.get("turns") or []:
        who = f"[{t['index']}] {t['speaker']}"
        who += f" · intent {t['intent']}" if t.get("intent") else ""
        if t.get("speaker") == "persona":
            who += f" · interest {t.get('interest')} · comfort {t.get('comfort')} · would share: {'yes' if t.get('shares_contact') else 'no'}"
        cls = f"turn {escape(str(t.get('speaker')))}" + (" moving" if t["index"] in moving else "")
        parts.append(f'<div class="{cls}"><div class="who">{escape(who)}</div>{highlight(t.get("text") or "", quotes.get(t["index"], []))}</div>')
    grades = [[v.get("judge"), ", ".join(map(str, t.get("turns") or [])) or "(none)", c, g.get("status"), g.get("score") or "",
               g.get("turn") if g.get("turn") is not None else "", g.get("quote") or "", g.get("reason") or ""]
              for v in verdicts for t in v.get("transitions") or [] for c, g in (t.get("conditions") or {}).items()]  # fmt: skip
    if grades:
        parts.append(table(["judge", "transition turns", "condition", "status", "score", "turn", "quote", "reason"], grades))
    raised = [[v.get("judge"), f["flag"], f.get("turn"), f.get("quote") or "", f.get("reason") or ""]
              for v in verdicts for f in (v.get("flags") or {}).get("raised") or []]  # fmt: skip
    if raised:
        parts.append(table(["judge", "flag", "turn", "quote", "reason"], raised))
    problems = "; ".join((record.get("fidelity") or {}).get("problems") or [])
    said = (f"exchanged {o.get('exchanged')} · next meeting {o.get('next_meeting') or '-'} · first ask at turn "
            f"{o.get('first_ask_turn')} · ended by {o.get('ended_by')} ({o.get('end_reason')}) · final interest "
            f"{o.get('final_interest')}, comfort {o.get('final_comfort')}") if o else ""  # fmt: skip
    info = {"outcome": said, "fidelity": problems, "error": record.get("error"),
            "episode": f"{record.get('id')} · seed {record.get('seed')}"}  # fmt: skip
    parts += [f'<div class="muted">{escape(k)}: {escape(str(v))}</div>' for k, v in info.items() if v]
    return Html("\n".join(parts) + "</details>")


def diff_block(text: str) -> Html:
    """A unified diff, lines coloured by kind."""
    kind = lambda line: "add" if line.startswith("+") else "del" if line.startswith("-") else "hunk" if line.startswith("@") else ""  # noqa: E731
    return Html('<pre class="diff">' + "\n".join(f'<span class="{kind(x)}">{escape(x)}</span>' for x in text.splitlines()) + "</pre>")


def reactions_section(r: dict, records: list[dict]) -> list[str]:
    """Plots and tables for the persona reactions."""
    if not r["n"]:
        return ["<p>No usable episodes: nothing to compare.</p>"]
    colors = {row["persona"]: f"C{i}" for i, row in enumerate(r["personas"])}
    small = lambda row: f"{row['n']}*" if row["small"] else row["n"]  # noqa: E731
    people = [[row["persona"], small(row), fmt_ci(row["contact"], percent=True), fmt_ci(row["mean_interest"]),
               fmt_ci(row["mean_comfort"]), ", ".join(f"{f} {x['rate']:.0%}" for f, x in row["flags"].items() if x["rate"]) or "-"]
              for row in r["personas"]]  # fmt: skip
    scores = [[c, *[fmt_ci(row[c]) for row in r["personas"]]] for c in CONDITIONS]
    tests = [[m, t["omnibus"]["test"], fmt(t["omnibus"]["statistic"]), fmt_p(t["omnibus"]["p"]),
              f"{fmt(t['omnibus']['effect'])} {t['omnibus']['effect_name']}",
              Html("<br>".join(escape(f"{p['a']}–{p['b']}: p {fmt_p(p['p'])}, Holm {fmt_p(p['p_holm'])}, effect {fmt(p['effect'])}")
                               for p in t["pairwise"]))] for m, t in r["tests"].items()]  # fmt: skip
    by_strategy = [[row["persona"], row["strategy"], small(row), fmt_ci(row["contact"], percent=True), fmt(row["mean_interest"]["mean"]),
                    *[fmt(row[c]["mean"]) for c in CONDITIONS]] for row in r["persona_strategy"]]  # fmt: skip
    return [
        f'<div class="plots">{heatmap(r["persona_setting"])}{interest_curves(records, colors)}</div>',
        table(["persona", "n", "contact [95% CI]", "interest 0-10", "comfort 0-10", "flags"], people, {1}),
        f'<div class="plots">{condition_bars(r["personas"], colors)}</div>',
        table(["condition (mean, 95% CI)", *[row["persona"] for row in r["personas"]]], scores),
        "<h3>Do the personas differ?</h3>", table(["measure", "test", "statistic", "p", "effect", "pairs"], tests),
        '<p class="muted">Contact: χ² (Fisher exact for two groups), effect Cramér\'s V, pairs Cohen\'s h. Scores: Kruskal–Wallis, '
        "effect ε², pairs Mann–Whitney with rank-biserial r. Pairwise p-values Holm-adjusted per measure.</p>",
        "<h3>Persona × strategy</h3>",
        table(["persona", "strategy", "n", "contact [95% CI]", "interest", *CONDITIONS], by_strategy, {2, 4, 5, 6, 7, 8, 9, 10}),
    ]  # fmt: skip


def comparison_section(c: dict) -> list[str]:
    """What differs between the baseline and this run, and the paired tests."""
    out = [f"<p>A = {escape(c['a'])} (baseline), B = {escape(c['b'])}; deltas are B − A.</p>"]
    diffs = [[d["field"], json.dumps(d["a"]), json.dumps(d["b"])] for d in c["differences"]]
    out.append(table(["differs", "A", "B"], diffs) if diffs else "<p>The runs were made the same way.</p>")
    out += [diff_block(d["diff"]) for d in c["differences"] if d.get("diff")]
    p = c["pairing"]
    if p["reason"]:
        return out + [f"<p><b>{escape(p['reason'])}</b></p>"]
    out.append(f"<p>{p['paired']} episodes paired by cell, rep and seed; {p['excluded']} matched but failed or out of "
               f"character on a side; {p['only_a']} only in A, {p['only_b']} only in B.</p>")  # fmt: skip
    tests = [[m, r["n"], fmt(r["a"]), fmt(r["b"]), f"{fmt(r['delta'])} [{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]", r["test"],
              fmt_p(r["p"]), fmt_p(r["p_holm"]), f"b01 {r['b01']}, b10 {r['b10']}" if m == "contact" else fmt(r["effect"])]
             for m, r in c["tests"].items()]  # fmt: skip
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"  # noqa: E731
    cells = [[r["cell"], f"{r['n']}*" if r["small"] else r["n"], f"{pct(r['contact_a'])} → {pct(r['contact_b'])}",
              f"{fmt(r['interest_a'])} → {fmt(r['interest_b'])}", *[fmt(r[x]) for x in CONDITIONS]] for r in c["cells"]]  # fmt: skip
    return out + [table(["measure", "pairs", "A", "B", "delta [95% CI]", "test", "p", "p Holm", "effect"], tests, {1, 2, 3, 6, 7}),
                  '<p class="muted">Effect: matched-pairs rank-biserial r (B &gt; A positive); for contact, the discordant '
                  "pairs (b01: only B made contact, b10: only A).</p>",
                  table(["cell", "pairs", "contact", "interest", *[f"Δ {SHORT[x]}" for x in CONDITIONS]], cells,
                        set(range(1, 10)), "tight")]


def render_report(run_id: str, db: Path | str, *, vs: str | None = None) -> str:
    """The whole report as one HTML string; `vs` names a baseline run to compare this one with, paired."""
    from simulator.store import Store

    with Store(Path(db)) as store:
        run, records = store.run(run_id), store.episodes(run_id)
    frame = pd.DataFrame([episode_row(r) for r in records])
    r = persona_reactions(frame)
    used = set(usable(frame)["episode_id"]) if len(frame) else set()
    ex = r["excluded"]
    spec = run["spec"]
    body = [f"<h1>nextstep report: {escape(run_id)}</h1>",
            f'<p class="muted">{r["episodes"]} episodes, {r["n"]} used in the statistics; excluded {ex["failed"]} failed and '
            f'{ex["unfaithful"]} out of character. * marks groups of fewer than {r["small_below"]}.</p>',
            "<h2>Persona reactions</h2>", *reactions_section(r, [x for x in records if x["id"] in used])]  # fmt: skip
    if vs:
        body += ["<h2>What changed</h2>", *comparison_section(compare_runs(*load_pair(vs, run_id, db)))]
    shown = sorted(records, key=lambda x: (x.get("persona") or "", x.get("setting") or "", x.get("strategy") or "", x.get("rep") or 0))
    body += ["<h2>Transcripts</h2>", '<p class="muted">Orange: turns in a transition. Yellow: evidence a judge quoted (hover for '
             "the condition, score and reason). Red: a flag's evidence.</p>", *map(episode, shown[:MAX_EPISODES])]  # fmt: skip
    if len(shown) > MAX_EPISODES:
        body.append(f"<p>… {len(shown) - MAX_EPISODES} more episodes not shown (nextstep show EPISODE_ID).</p>")
    prov = [["created", run["created_at"]], ["nextstep version", run["version"]], ["backend", spec.get("backend")],
            ["models", json.dumps(spec.get("models"))], ["episodes by status", json.dumps(run["counts"])],
            ["experiment", json.dumps(spec.get("experiment"))],
            *[[f"prompt {k}", v] for k, v in sorted(run_prompts(run, records).items())],
            *[[k, v] for k, v in sorted((spec.get("catalog") or {}).items())]]  # fmt: skip
    body += ["<h2>Provenance</h2>", table(["", ""], prov)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>nextstep report {escape(run_id)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
