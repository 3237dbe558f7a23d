"""One self-contained HTML report of a run: statistics, inline SVG plots, transcripts; viewable offline.

Every string that comes from a record (model text, quotes, reasons, names) goes through `html.escape`;
only our own markup (the `Html` type) is inserted as is.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path


from .compare import (SHORT, Judging, compare_branches, compare_runs, fmt, fmt_ci, fmt_p, load_pair, run_analysis,
                      run_prompts, which_test)
from evaluations.judge.rubric import CONDITIONS
from simulator.core.records import Episode, Turn
from simulator.models.prices import money

from .fidelity import Reading, audit
from .frame import scan_run, spend, usable
from .plots import condition_bars, heatmap, interest_curves, paired_differences, strategy_bars
from .tables import (agreement_rows, curve_rows, detectable_rows, pair_rows, persona_rows, repeats_rows,
                     variance_note, variance_rows)

MAX_EPISODES = 300  # transcripts shown; beyond this the file gets heavy and the statistics say more
CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1180px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;border-bottom:2px solid #ddd;margin-top:32px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th{background:#f4f4f4} svg{max-width:100%;height:auto}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777}
table.tight td,table.tight th{white-space:nowrap}
.side{display:flex;gap:8px;overflow-x:auto} .side>div{flex:1 0 260px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start} .plots svg{max-width:100%;height:auto}
details{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:4px 8px} summary{cursor:pointer}
.turn{margin:4px 0;padding:4px 8px;border-left:4px solid #ccc;background:#fafafa}
.turn.persona{border-color:#9bc;margin-left:28px} .turn.moving{border-color:#e69500;background:#fff7e6}
.who{font-size:12px;color:#666} mark.ev{background:#ffe58a} mark.flag{background:#ffb3b3}
.badge{display:inline-block;border-radius:3px;padding:0 5px;font-size:12px;margin-left:4px;background:#eee}
.caution{background:#fff3c4;padding:2px 6px;margin:4px 0}
.badge.flag{background:#ffb3b3} .badge.contact{background:#b7e4b7} .badge.bad{background:#f3c6a5}
pre.diff{background:#f7f7f7;padding:8px;white-space:pre-wrap} .add{color:#161} .del{color:#a11} .hunk{color:#16a}
.badge.pass{background:#b7e4b7} .badge.warn{background:#ffe58a} .badge.fail{background:#ffb3b3}
.check{margin:6px 0 10px;overflow-wrap:anywhere} .id{white-space:nowrap} .check ul{margin:2px 0;padding-left:20px}
"""


class Html(str):
    """Markup we wrote ourselves; anything else is escaped before it reaches the page."""


def cell(x) -> str:
    """A table cell's content: `cell('<b>')` -> '&lt;b&gt;'; `cell(Html('<b>'))` -> '<b>'."""
    return x if isinstance(x, Html) else escape(str(x))


def table(head: list, rows: list[list], numeric: set[int] = frozenset(), cls: str = "") -> Html:
    """An HTML table; columns in `numeric` are right-aligned; class 'tight' keeps cells on one line."""
    th = "".join(f"<th>{cell(h)}</th>" for h in head)
    td = lambda i, x: f"<td{' class=num' if i in numeric else ''}>{cell(x)}</td>"  # noqa: E731
    body = "".join("<tr>" + "".join(td(i, x) for i, x in enumerate(r)) + "</tr>" for r in rows)
    return Html(f'<table class="{cls}"><tr>{th}</tr>{body}</table>')


def evidence(record: Episode) -> dict[int, list[tuple[str, str, str]]]:
    """Quotes the judges cited, by turn: {turn: [(quote, css class, tooltip)]}."""
    found: dict[int, list] = {}
    for v in record.verdicts:
        for t in v.transitions:
            for c, g in t.conditions.items():
                if g.status == "scored" and g.quote:
                    found.setdefault(g.turn, []).append((g.quote, "ev", f"{c} {g.score}/5: {g.reason}"))
        for f in v.flags.raised if v.flags else []:
            found.setdefault(f.turn, []).append((f.quote or "", "flag", f"{f.flag}: {f.reason}"))
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
        out += [escape(text[pos:start]), f'<mark class="{cls}" title="{escape(title)}">{escape(text[start:end])}</mark>']
        pos = end
    return Html("".join(out) + escape(text[pos:]))


def _badges(record: Episode, flags: list[str]) -> str:
    exchanged = record.outcome and record.outcome.exchanged
    out = "".join(f'<span class="badge flag">{escape(f)}</span>' for f in flags)
    if exchanged not in (None, "none"):
        out += f'<span class="badge contact">{escape(exchanged)}</span>'
    if record.status != "succeeded":
        return out + f'<span class="badge bad">{escape(record.status)}</span>'
    return out + ('<span class="badge bad">out of character</span>' if record.in_character is False else "")


def _turn(t: Turn, moving: set[int], quotes: list) -> str:
    """One turn: who, intent or private state, and the text with evidence marked."""
    who = f"[{t.index}] {t.speaker}" + (f" · intent {t.intent}" if t.intent else "")
    who += " · at the parting" if t.phase == "parting" else ""
    if t.speaker == "persona":
        who += f" · interest {t.interest} · comfort {t.comfort}"
    cls = f"turn {escape(t.speaker)}" + (" moving" if t.index in moving else "")
    return f'<div class="{cls}"><div class="who">{escape(who)}</div>{highlight(t.text, quotes)}</div>'


def episode(record: Episode) -> Html:
    """One episode as a collapsible block: turns with private state, transitions, evidence and flags."""
    o, verdicts = record.outcome, record.verdicts
    raised = [(v.judge, f) for v in verdicts for f in (v.flags.raised if v.flags else [])]
    moving = {i for v in verdicts for t in v.transitions for i in t.turns}
    quotes = evidence(record)
    profile = record.profile.id if record.profile else None
    head = " · ".join(escape(str(x)) for x in (record.persona, record.setting, record.strategy, profile, f"rep {record.rep}")
                      if x is not None)
    parts = [f'<details id="ep-{escape(record.id)}"><summary>{head}{_badges(record, sorted({f.flag for _, f in raised}))}'
             "</summary>"]
    if record.caution:
        parts.append(f'<div class="caution">{escape(record.caution)}</div>')
    parts += [_turn(t, moving, quotes.get(t.index, [])) for t in record.turns]
    grades = [[v.judge, ", ".join(map(str, t.turns)) or "(none)", c, g.status, g.score or "",
               "" if g.turn is None else g.turn, g.quote or "", g.reason or ""]
              for v in verdicts for t in v.transitions for c, g in t.conditions.items()]
    if grades:
        parts.append(table(["judge", "transition turns", "condition", "status", "score", "turn", "quote", "reason"], grades))
    if raised:
        rows = [[j, f.flag, f.turn, f.quote or "", f.reason or ""] for j, f in raised]
        parts.append(table(["judge", "flag", "turn", "quote", "reason"], rows))
    said = (f"exchanged {o.exchanged} · next meeting {o.next_meeting or '-'} · first ask at turn "
            f"{o.first_ask_turn} · ended by {o.ended_by} ({o.end_reason}) · final interest "
            f"{o.final_interest}, comfort {o.final_comfort}") if o else ""
    info = {"outcome": said, "fidelity": "; ".join(record.fidelity.problems if record.fidelity else []),
            "error": record.error, "episode": f"{record.id} · seed {record.seed}"}
    parts += [f'<div class="muted">{escape(k)}: {escape(str(v))}</div>' for k, v in info.items() if v]
    return Html("\n".join(parts) + "</details>")


def diff_block(text: str) -> Html:
    """A unified diff, lines coloured by kind."""
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    lines = (f'<span class="{kinds.get(x[:1], "")}">{escape(x)}</span>' for x in text.splitlines())
    return Html('<pre class="diff">' + "\n".join(lines) + "</pre>")


def _n(row: dict) -> str:
    return f"{row['n']}*" if row["small"] else str(row["n"])


def _pairs(test: dict) -> Html:
    lines = (f"{p['a']}–{p['b']}: p {fmt_p(p['p'])}, Holm {fmt_p(p['p_holm'])}, effect {fmt(p['effect'])}"
             for p in test["pairwise"])
    return Html("<br>".join(map(escape, lines)))


def reactions_section(r: dict, records: list[Reading]) -> list[str]:
    """Plots and tables for the persona reactions."""
    if not r["n"]:
        return ["<p>No usable episodes: nothing to compare.</p>"]
    rows, colors = r["personas"], {row["persona"]: f"C{i}" for i, row in enumerate(r["personas"])}
    flags = lambda row: ", ".join(f"{f} {x['rate']:.0%}" for f, x in row["flags"].items() if x["rate"]) or "-"  # noqa: E731
    people = [[row["persona"], _n(row), fmt_ci(row["contact"], percent=True), fmt_ci(row["next_meeting"], percent=True),
               fmt_ci(row["social_handle"], percent=True), fmt_ci(row["mean_interest"]), fmt_ci(row["mean_comfort"]), flags(row)]
              for row in rows]  # fmt: skip
    scores = [[c, *[fmt_ci(row[c]) for row in rows]] for c in CONDITIONS]
    tests = [[m, which_test(t["omnibus"]), fmt(t["omnibus"]["statistic"]), fmt_p(t["omnibus"]["p"]),
              f"{fmt(t['omnibus']['effect'])} {t['omnibus']['effect_name']}", _pairs(t)] for m, t in r["tests"].items()]
    by_strategy = [[row["persona"], row["strategy"], _n(row), fmt_ci(row["contact"], percent=True),
                    fmt(row["mean_interest"]["mean"]), *[fmt(row[c]["mean"]) for c in CONDITIONS]]
                   for row in r["persona_strategy"]]
    return [
        f'<div class="plots">{heatmap(r["persona_setting"])}{interest_curves(records, colors)}</div>',
        table(["persona", "n", "contact (number/email) [95% CI]", "next meeting [95% CI]", "social handle", "interest 0-10",
               "comfort 0-10", "flags"], people, {1}),
        f'<div class="plots">{condition_bars(rows, colors)}'
        f'{table(["condition (mean, 95% CI)", *[row["persona"] for row in rows]], scores)}</div>',
        "<h3>Do the personas differ?</h3>", table(["measure", "test", "statistic", "p", "effect", "pairs"], tests),
        '<p class="muted">Contact: χ² (Fisher exact for two groups), effect Cramér\'s V, pairs Cohen\'s h. Scores: '
        "Kruskal–Wallis, effect ε², pairs Mann–Whitney with rank-biserial r. Pairwise p Holm-adjusted per measure.</p>",
        "<h3>Persona × strategy</h3>",
        table(["persona", "strategy", "n", "contact [95% CI]", "interest", *CONDITIONS], by_strategy, set(range(2, 11))),
    ]


def strategies_section(r: dict) -> list[str]:
    """Contact per strategy with its interval, strategy x persona, and the tests between strategies."""
    rows = r["strategies"]
    if len(rows) < 2:
        return [f"<p>One strategy ({escape(', '.join(str(x['strategy']) for x in rows))}): nothing to compare.</p>"]
    table_rows = [[x["strategy"], _n(x), fmt_ci(x["contact"], percent=True), fmt_ci(x["next_meeting"], percent=True),
                   fmt_ci(x["mean_interest"]), fmt_ci(x["mean_comfort"])] for x in rows]  # fmt: skip
    tests = [[m, which_test(t["omnibus"]), fmt(t["omnibus"]["statistic"]), fmt_p(t["omnibus"]["p"]),
              f"{fmt(t['omnibus']['effect'])} {t['omnibus']['effect_name']}", _pairs(t)] for m, t in r["strategy_tests"].items()]
    return [
        f'<div class="plots">{strategy_bars(rows)}{heatmap(r["persona_strategy"], "strategy", "persona")}</div>',
        table(["strategy", "n", "contact (number/email) [95% CI]", "next meeting [95% CI]", "interest 0-10", "comfort 0-10"],
              table_rows, {1}),
        "<h3>Do the strategies differ?</h3>", table(["measure", "test", "statistic", "p", "effect", "pairs"], tests),
        '<p class="muted">The same tests as between personas, across strategies.</p>',
    ]


def cautions(found: dict[str, str]) -> list[str]:
    """One warning per strategy that carries a caution (a negative baseline), wherever its numbers are shown."""
    return [f'<div class="caution">{escape(s)}: {escape(c)}</div>' for s, c in sorted(found.items())]


def variance_section(r: dict) -> list[str]:
    """Variance components, the judges' agreement and contact@k."""
    v = r["variance"]
    out = [table(*variance_rows(v), set(range(1, 8))),
           f'<p class="muted">{escape(variance_note(v))}.</p>',
           '<p class="muted">Method-of-moments nested random-effects ANOVA: episodes (repetitions, one seed each) '
           "within cells, judges' scores within episodes; negative estimates are set to 0 and said. Contact is read "
           "from the turns (no judge level); judged contact is each judge's reading.</p>"]
    if v["agreement"]["judges"] > 1:
        out += [table(*agreement_rows(v["agreement"]), {1, 2, 3, 4}),
                '<p class="muted">Krippendorff\'s α (ordinal) across judges; effective judges = k / (1 + (k − 1) r̄), '
                "r̄ the mean inter-judge Pearson correlation (Kish's design effect).</p>"]
    return out + ["<h3>Repeat reliability: contact@k</h3>", table(*repeats_rows(r["repeats"]), {1, 2, 3, 4}),
                  '<p class="muted">Per cell, the unbiased estimates from its repetitions of the chance that k repetitions '
                  "all end in an exchange (pass^k) and that at least one does (pass@k), averaged over cells.</p>"]


def _episode_links(ids: list[str], show: int = 8) -> Html:
    """Links to the first few episodes' transcripts, and how many more: not hundreds of ids in a row."""
    links = ", ".join(f'<a href="#ep-{escape(i)}">{escape(i)}</a>' for i in ids[:show])
    more = f" and {len(ids) - show} more (nextstep personas RUN lists them)" if len(ids) > show else ""
    return Html(f"{len(ids)} episode(s): {links}{more}")


def audit_section(a: dict) -> list[str]:
    """The persona fidelity audit: types against their files, curves, separation, and warnings with episodes."""
    warnings = [f"<li><b>{escape(w['message'])}</b>" + (f'<br><span class="muted">{_episode_links(w["episodes"])}</span>'
                if w["episodes"] else "") + "</li>" for w in a["warnings"]]  # fmt: skip
    return [
        table(*persona_rows(a), {1, 2}), table(*curve_rows(a)), table(*pair_rows(a)),
        f"<ul>{''.join(warnings)}</ul>" if warnings else "<p>No warnings: every type behaves within its file and the "
        "types are told apart.</p>",
        '<p class="muted">All succeeded episodes, out-of-character ones included. Shares when asked: episodes with an ask '
        "that ended in an exchange (Wilson CI). Effects: Cohen's h and Hedges' g with normal 95% intervals.</p>",
    ]


def comparison_section(c: dict) -> list[str]:
    """What differs between the baseline and this run, and the paired tests."""
    out = [f"<p>A = {escape(c['a'])} (baseline), B = {escape(c['b'])}; deltas are B − A.</p>"]
    mixed = lambda d, side: " (mixed)" if side in d.get("mixed", []) else ""  # noqa: E731
    diffs = [[d["field"], json.dumps(d["a"]) + mixed(d, "A"), json.dumps(d["b"]) + mixed(d, "B")] for d in c["differences"]]
    out.append(table(["differs", "A", "B"], diffs) if diffs else "<p>The runs were made the same way.</p>")
    out += [diff_block(d["diff"]) for d in c["differences"] if d.get("diff")]
    out += ranking_section(c["ranking"])
    p = c["pairing"]
    if p["reason"]:
        return out + [f"<p><b>{escape(p['reason'])}</b></p>"]
    out.append(f"<p>{p['paired']} episodes paired by cell, rep and seed; {p['excluded']} matched but failed or out of "
               f"character on a side; {p['only_a']} only in A, {p['only_b']} only in B.</p>")
    return out + [paired_differences(c["tests"], SHORT), *tests_section(c["tests"]), cells_table(c["cells"]),
                  "<h3>What these pairs could detect</h3>", table(*detectable_rows(c["detectable"]), {1})]


def ranking_section(r: dict) -> list[str]:
    """The strategies' order in A and in B, per measure, with Kendall's tau-b between the two orders."""
    if r.get("reason"):
        return [f'<p class="muted">Strategy ranking: {escape(r["reason"])}</p>']
    out = ["<h3>Strategies ranked in A and in B</h3>"]
    for m in ("contact", "mean_interest"):
        x = r[m]
        rows = [[row["strategy"], fmt(row["a"]), fmt(row["rank_a"], 0), fmt(row["b"]), fmt(row["rank_b"], 0)] for row in x["rows"]]
        out += [f"<p>By {escape(SHORT.get(m, m))} (A n={x['n_a']}, B n={x['n_b']}): Kendall's τ-b {fmt(x['tau'])}</p>",
                table(["strategy", "A", "rank A", "B", "rank B"], rows, {1, 2, 3, 4})]
    return out


def tests_section(tests: dict, a: str = "A", b: str = "B") -> list[str]:
    """The paired tests (McNemar, Wilcoxon with a paired bootstrap interval), one measure a row."""
    effect = lambda m, r: f"b01 {r['b01']}, b10 {r['b10']}" if m == "contact" else fmt(r["effect"])  # noqa: E731
    rows = [[m, r["n"], fmt(r["a"]), fmt(r["b"]), f"{fmt(r['delta'])} [{fmt(r['ci'][0])}, {fmt(r['ci'][1])}]",
             r["test"], fmt_p(r["p"]), fmt_p(r["p_holm"]), effect(m, r)] for m, r in tests.items()]
    return [table(["measure", "pairs", a, b, "delta [95% CI]", "test", "p", "p Holm", "effect"], rows, {1, 2, 3, 6, 7}),
            f'<p class="muted">Effect: matched-pairs rank-biserial r ({escape(b)} &gt; {escape(a)} positive); for contact, '
            f"the discordant pairs (b01: only {escape(b)} made contact, b10: only {escape(a)}).</p>"]


def cells_table(cells: list[dict], key: str = "cell") -> Html:
    """Per cell (or prefix): pairs, contact and interest on each side, and the mean delta of each condition."""
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"  # noqa: E731
    rows = [[r["cell"], _n(r), f"{pct(r['contact_a'])} → {pct(r['contact_b'])}",
             f"{fmt(r['interest_a'])} → {fmt(r['interest_b'])}", *[fmt(r[x]) for x in CONDITIONS]] for r in cells]
    return table([key, "pairs", "contact", "interest", *[f"Δ {SHORT[x]}" for x in CONDITIONS]], rows, set(range(1, 10)), "tight")


def branches_section(c: dict, records: list[Episode]) -> list[str]:
    """A branch run: the paired tests, then each prefix once with its continuations side by side."""
    change = ", ".join(f"{k}={v}" for k, v in c["branch"]["treatment"].items() if v is not None)
    out = [f"<p>Treatment: {escape(change)}; control: nothing changed. Forked --at {escape(str(c['branch']['at']))}; "
           "deltas are treatment − control, paired by prefix and rep (same seed).</p>"]
    p = c["pairing"]
    if p["reason"]:
        out.append(f"<p><b>{escape(p['reason'])}</b></p>")
    else:
        out += [f"<p>{p['paired']} pairs; {p['excluded']} matched but failed or out of character on a side.</p>",
                *tests_section(c["tests"], "control", "treatment")]
        for row in c["personas"]:
            out += [f"<h3>persona {escape(row['persona'])}: {_n(row)} pairs</h3>", *tests_section(row["tests"], "control", "treatment")[:1]]
        out.append(cells_table(c["prefixes"], "prefix"))
    by_prefix: dict[str, list[Episode]] = {}
    for r in sorted(records, key=lambda r: (r.branch.arm, r.rep or 0)):
        by_prefix.setdefault(r.branch.prefix, []).append(r)
    for prefix, group in sorted(by_prefix.items()):
        at = group[0].branch.at
        kept = "".join(_turn(t, set(), []) for t in group[0].turns[:at])
        columns = []
        for r in group:
            said = f"{r.status} · exchanged {r.outcome and r.outcome.exchanged} · {r.outcome and r.outcome.end_reason}"
            new = "".join(_turn(t, set(), []) for t in r.turns[at:])
            columns.append(f"<div><b>{escape(r.branch.arm)} rep {escape(str(r.rep))}</b>"
                           f'<div class="muted">{escape(said)}</div>{new}</div>')
        out.append(Html(f"<details><summary>prefix {escape(prefix)} · {escape(group[0].persona)} · kept turns 0–{at - 1}"
                        f'</summary>{kept}<div class="side">{"".join(columns)}</div></details>'))
    return out


def _badge(status: str) -> Html:
    return Html(f'<span class="badge {escape(status.replace(" ", "-"))}">{escape(status)}</span>')


def fitness_section(verdict: dict) -> list[str]:
    """A stored `nextstep fitness` verdict: per criterion its checks, each with the figure, interval, threshold and why."""
    p, m = verdict["protocol"], verdict["model"]
    reduced = f" Not the shipped protocol's verdict (protocol file {p['file']}, reps {p['reps']})." if p["reduced"] else ""
    judges = ", ".join(m.get("evaluators") or []) or "none"
    runs = "; ".join(f'{escape(k)} <span class="id">{escape(v)}</span>' for k, v in verdict["runs"].items())
    out = [f"<p>{_badge(verdict['overall'])} <b>overall</b> · protocol v{escape(str(p['version']))} (sha256 "
           f"{escape(p['hash'])}).{escape(reduced)}</p>",
           f'<p class="muted">practitioner {escape(str(m.get("practitioner")))}, persona {escape(str(m.get("persona")))}, '
           f"judges {escape(judges)} ({escape(str(m.get('backend')))}); runs {runs}</p>"]  # fmt: skip
    for c in verdict["criteria"]:
        out.append(f"<h3>{_badge(c['status'])} {escape(str(c['criterion']))}. {escape(c['name'])}</h3>")
        if c.get("note"):
            out.append(f"<p>{escape(c['note'])}</p>")
        for k in c["checks"]:
            figure = "" if k["figure"] is None else fmt(k["figure"], 0 if isinstance(k["figure"], int) else 2)
            ci = f" [{fmt(k['ci'][0])}, {fmt(k['ci'][1])}]" if k.get("ci") else ""
            details = "".join(f"<li>{escape(d)}</li>" for d in k.get("details", []))
            out.append(Html(f'<div class="check">{_badge(k["status"])} <b>{escape(k["check"])}</b>: '
                            f"{escape(figure + ci + ('; ' if figure else '') + k['of'])}"
                            + (f"<ul>{details}</ul>" if details else "")
                            + f'<div class="muted">threshold: {escape(k["threshold"])}. {escape(k["why"])}</div></div>'))
    return out


def render_report(run_id: str, db: Path | str, *, vs: str | None = None, personas_dir: Path | None = None,
                  include_unfaithful: bool = False, all_transcripts: bool = False) -> str:
    """The whole report as one HTML string; `vs` names a baseline run to compare this one with, paired;
    `include_unfaithful` keeps out-of-character episodes in the statistics."""
    from simulator.conversation.catalog import load_catalog
    from simulator.storage.store import Store

    from .summary import completion_note

    readings, branched, judging = [], [], Judging()

    def keep(record: Episode) -> None:  # what the sections need of each record; the record itself is let go
        readings.append(Reading.of(record))
        judging.add(record)
        if record.branch:
            branched.append(record)

    scan = scan_run(run_id, db, each=keep)
    frame = scan.frame
    with Store(Path(db)) as store:
        run = store.run(run_id)
        notes = [completion_note(r, store.completion(r)) for r in (run_id, vs) if r]
        verdict = store.fitness(run_id)
    r, spec = run_analysis(frame, scan.judges, include_unfaithful=include_unfaithful), run["spec"]
    fidelity = audit(readings, load_catalog(personas_dir).personas, run_catalog=spec.catalog)
    used = set(usable(frame, include_unfaithful=include_unfaithful)["episode_id"]) if len(frame) else set()
    spent = spend(frame)
    abandoned = f', {r["excluded"]["abandoned"]} abandoned by a person' if r["excluded"]["abandoned"] else ""
    kept = " (out-of-character episodes kept: --include-unfaithful)" if include_unfaithful else ""
    body = [f"<h1>nextstep report: {escape(run_id)}</h1>", f"<p><b>{'<br>'.join(map(escape, notes))}</b></p>",
            f'<p class="muted">{r["episodes"]} episodes, {r["n"]} used in the statistics; excluded '
            f'{r["excluded"]["failed"]} failed, {r["excluded"]["ungraded"]} ungraded and {r["excluded"]["unfaithful"]} '
            f'out of character{abandoned}{kept}. '
            f'* marks groups of fewer than {r["small_below"]}.</p>',
            *(["<h2>Is this model fit to run the study? (nextstep fitness)</h2>", *fitness_section(verdict)]
              if verdict else []),
            *(["<h2>What changed</h2>",
               *comparison_section(compare_runs(*load_pair(vs, run_id, db), include_unfaithful=include_unfaithful))]
              if vs else []),  # a --vs report is read for the comparison: it comes first
            "<h2>Persona reactions</h2>", *reactions_section(r, [x for x in readings if x.id in used]), *cautions(scan.cautions),
            "<h2>Strategies</h2>", *strategies_section(r),
            "<h2>Persona fidelity audit</h2>", *audit_section(fidelity),
            "<h2>Where the variance comes from</h2>", *variance_section(r)]
    if spec.branch is not None:
        body += ["<h2>Branches: treatment and control from identical prefixes</h2>",
                 *branches_section(compare_branches(run, frame, include_unfaithful=include_unfaithful),
                                   branched)]
    rows = frame.to_dict("records") if len(frame) else []
    shown = [x["episode_id"] for x in sorted(rows, key=lambda x: (x["persona"], x["setting"], x["strategy"], x["rep"] or 0))]
    limit = len(shown) if all_transcripts else MAX_EPISODES
    every = "" if len(shown) <= limit else (f" (the first {limit} in persona, setting, strategy order; all of them: "
                                             f"nextstep report {escape(run_id)} --all-transcripts)")  # fmt: skip
    with Store(Path(db)) as store:  # read one at a time, as they are drawn
        transcripts = [episode(store.episode(i)) for i in shown[:limit]]
    body += [f"<h2>Transcripts: {min(limit, len(shown))} of {len(shown)}</h2>",
             f'<p class="muted">Showing {min(limit, len(shown))} of {len(shown)} episodes{every}. Orange: turns in a '
             "transition. Yellow: evidence a judge quoted (hover for the condition, score and reason). Red: a flag's "
             "evidence.</p>", *transcripts]
    prov = [["created", run["created_at"]], ["nextstep version", run["version"]], ["backend", spec.backend],
            ["models", json.dumps(spec.models)], ["episodes by status", json.dumps(run["counts"])],
            ["tokens", "unknown" if spent["tokens"] is None else f"{spent['tokens']:,.0f}"],
            ["cost", money(spent["cost_usd"]) + (f" ({money(spent['cost_per_episode'])} per succeeded episode)"
                                                 if spent["cost_per_episode"] is not None else "")],
            ["experiment", json.dumps(spec.experiment)],
            *[[f"prompt {k}", ", ".join(v) + " (mixed)" if isinstance(v, tuple) else v]
              for k, v in sorted(run_prompts(run, judging.result()).items())],
            *[[k, v] for k, v in sorted((spec.catalog or {}).items())]]
    body += ["<h2>Provenance</h2>", table(["", ""], prov)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>nextstep report {escape(run_id)}'
            f"</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
