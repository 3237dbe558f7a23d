"""The report's plots, drawn with matplotlib on an Agg canvas and returned as inline SVG markup."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from evaluations.judge.rubric import CONDITIONS

if TYPE_CHECKING:
    from .fidelity import Reading


def svg(fig: Figure) -> str:
    """The figure as inline SVG markup, without the XML prolog and metadata (which names external URIs)."""
    FigureCanvasAgg(fig)  # Agg canvas: no display, no global pyplot state
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nextstep"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


def heatmap(rows: list[dict], y: str = "persona", x: str = "setting") -> str:
    """Contact rate per `y` x `x` (persona x setting, strategy x persona); each cell says its n, '*' when small."""
    ys, xs = sorted({str(r[y]) for r in rows}), sorted({str(r[x]) for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    fig = Figure(figsize=(2.2 + 1.4 * len(xs), 1.2 + 0.6 * len(ys)))
    ax = fig.add_subplot()
    for r in rows:
        i, j = ys.index(str(r[y])), xs.index(str(r[x]))
        rate = r["contact"]["rate"]
        grid[i, j] = np.nan if rate is None else rate
        label = ("–" if rate is None else f"{rate:.0%}") + f"\nn={r['n']}" + ("*" if r["small"] else "")
        ax.text(j, i, label, ha="center", va="center", fontsize=9, color="white" if rate and rate > 0.6 else "black")
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_title(f"contact rate, {y} × {x}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05, format=lambda v, _: f"{v:.0%}")
    return svg(fig)


def strategy_bars(rows: list[dict]) -> str:
    """Contact rate per strategy with its Wilson 95% interval and n, highest first."""
    rows = sorted(rows, key=lambda r: -1 if r["contact"]["rate"] is None else r["contact"]["rate"], reverse=True)
    fig = Figure(figsize=(6, 0.9 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        c = r["contact"]
        if c["rate"] is None:
            ax.text(0.01, i, "no usable episode", va="center", fontsize=8, color="#777")
            continue
        ax.barh(i, c["rate"], color="C0", height=0.6)
        ax.errorbar(c["rate"], i, xerr=[[c["rate"] - c["ci"][0]], [c["ci"][1] - c["rate"]]], color="black", capsize=3)
        ax.text(1.02, i, f"{c['rate']:.0%}  n={r['n']}" + ("*" if r["small"] else ""), va="center", fontsize=8,
                transform=ax.get_yaxis_transform())
    ax.set_yticks(range(len(rows)), [str(r["strategy"]) for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("contact rate by strategy, Wilson 95% CI", fontsize=10)
    return svg(fig)


def condition_bars(rows: list[dict], colors: dict) -> str:
    """Mean score per condition, one bar per persona, with bootstrap 95% CIs."""
    fig = Figure(figsize=(6.2, 3.2))
    ax = fig.add_subplot()
    x, width = np.arange(len(CONDITIONS)), 0.8 / max(len(rows), 1)
    for k, r in enumerate(rows):
        mean = np.array([np.nan if r[c]["mean"] is None else r[c]["mean"] for c in CONDITIONS])
        ci = np.array([[np.nan if v is None else v for v in r[c]["ci"]] for c in CONDITIONS])
        err = np.nan_to_num(np.abs(ci.T - mean))  # no interval (n < 2): no whisker
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, mean, width, yerr=err, capsize=2, color=colors[r["persona"]],
               label=f"{r['persona']} (n={r['n']})")
    ax.set_xticks(x, [c.replace("_", "\n") for c in CONDITIONS], fontsize=8)
    ax.set_ylim(0, 5.4)
    ax.set_yticks(range(1, 6))
    ax.set_ylabel("mean score (1-5)")
    ax.set_title("condition scores by persona, 95% CI", fontsize=10)
    ax.legend(fontsize=8, ncols=len(rows), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return svg(fig)


def interest_curves(records: list[Reading], colors: dict) -> str:
    """Mean private interest per persona by turn; ▼ and a dotted line mark the median turn of the first ask."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    for k, persona in enumerate(colors):
        mine = [r for r in records if r.persona == persona]
        by_turn: dict[int, list[int]] = {}
        for r in mine:
            for index, interest, _ in r.states:
                by_turn.setdefault(index, []).append(interest)
        if not by_turn:
            continue
        xs = sorted(by_turn)
        ys = [float(np.mean(by_turn[i])) for i in xs]
        ax.plot(xs, ys, marker="o", color=colors[persona], label=f"{persona} (n={len(mine)})")
        asks = [r.first_ask_turn for r in mine if r.first_ask_turn is not None]
        if asks:
            # A dotted line, not a point on the curve: the ask may come before any reading. Nudged apart so ties show.
            at = float(np.median(asks)) + (k - (len(colors) - 1) / 2) * 0.1
            ax.axvline(at, color=colors[persona], linestyle=":", linewidth=1.5)
            # Above the axes (x in data, y in axes units), so the marker never sits on a curve.
            ax.plot(at, 1.04, marker="v", markersize=9, color=colors[persona], markeredgecolor="black",
                    transform=ax.get_xaxis_transform(), clip_on=False)
    handles, _ = ax.get_legend_handles_labels()
    ask = Line2D([], [], marker="v", color="grey", markeredgecolor="black", linestyle=":", label="median first ask")
    ax.legend(handles=[*handles, ask], fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncols=2)  # below the axes: it covers no data
    ax.set_ylim(0, 10)
    ax.set_xlabel("turn")
    ax.set_ylabel("mean private interest (0-10)")
    ax.set_title("persona's interest over the conversation", fontsize=10, pad=14)
    return svg(fig)


def paired_differences(tests: dict, short: dict) -> str:
    """Each measure's paired difference (B - A) with its 95% interval, in the measure's own units (contact: a share;
    interest and comfort: 0-10; conditions: 1-5), and a line at 0: what changed, at a glance."""
    rows = [(m, r) for m, r in tests.items() if r.get("delta") is not None]
    fig = Figure(figsize=(6, 0.9 + 0.32 * max(len(rows), 1)))
    ax = fig.add_subplot()
    for i, (m, r) in enumerate(rows):
        lo, hi = r["ci"]
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [i, i], color="C0", linewidth=2)
        ax.plot(r["delta"], i, marker="o", color="C3" if r.get("p_holm") is not None and r["p_holm"] < 0.05 else "C0")
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(rows)), [short.get(m, m) for m, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("B − A (paired), 95% CI; red: Holm p < 0.05", fontsize=8)
    ax.set_title("paired differences", fontsize=10)
    return svg(fig)
