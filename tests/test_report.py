"""The HTML report: self-contained, model text escaped, plots inline; looked at in headless Chromium when present."""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from graded_stub import graded
from rich.console import Console
from conftest import lenient_personas
from stub_server import StubServer
from typer.testing import CliRunner

from evaluations.analysis.report import highlight, render_report
import simulator.cli.compare as compare_cli
from simulator.core.errors import UserError
from simulator.core.files import data_dir
from simulator.runs.batch import run_grid
from simulator.storage.store import Store

HOSTILE = "Hi <script>alert(1)</script> and **bold**, that sounds lovely"
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two graded stub runs (the second with an edited practitioner prompt); one turn of the first is hostile."""
    tmp = tmp_path_factory.mktemp("report")
    edited = tmp / "prompts"
    edited.mkdir()
    (edited / "practitioner.j2").write_text((data_dir("prompts") / "practitioner.j2").read_text().replace("Be genuine", "Be bold"))
    grid = {"personas": "all", "strategies": "turn_back,no_ask", "reps": 3, "max_turns": 2, "judges": 3}
    db, personas = tmp / "n.db", lenient_personas(tmp / "personas")

    async def both():
        with StubServer(fault=graded) as url:
            return (await run_grid(grid, db=db, base_url=url, personas_dir=personas),
                    await run_grid(grid, db=db, base_url=url, prompts_dir=edited, personas_dir=personas))

    a, b = asyncio.run(both())
    with Store(db) as store:
        record = store.episodes(a)[0]
        record.turns[0].text = HOSTILE
        store.save_episode(a, record.cell, record.rep, record)
    return db, a, b


def test_highlight_escapes_around_marks():
    out = highlight("say <b>hi</b> now", [("<b>hi", "ev", 'timing 5/5: "good"')])
    assert out == 'say <mark class="ev" title="timing 5/5: &quot;good&quot;">&lt;b&gt;hi</mark>&lt;/b&gt; now'
    assert highlight("no quote here", [("absent", "ev", "x")]) == "no quote here"


def test_report_is_self_contained_and_escaped(runs):
    db, a, b = runs
    page = render_report(a, db)
    assert "<script" not in page  # the hostile turn is text, not an element, and we ship no scripts
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "**bold**" in page
    assert page.count("<svg") == 5  # heatmap, interest curves, condition bars, strategy chart, strategy x persona
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\((?!#)", page) and "@import" not in page  # only in-page references: no web fonts
    for text in ("aloof", "friendly", "unsure", "contact rate", "kruskal-wallis", "<details id=\"ep-", "Provenance", a):
        assert text in page


def test_report_shows_variance_repeats_and_the_persona_audit(runs):
    from evaluations.analysis.compare import run_analysis
    from evaluations.analysis.fidelity import audit
    from evaluations.analysis.frame import load_judges, load_run
    from evaluations.analysis.report import table
    from evaluations.analysis.tables import agreement_rows, pair_rows, persona_rows, repeats_rows, variance_rows
    from simulator.conversation.catalog import load_catalog

    db, a, b = runs
    plain = lambda html: re.sub(r"<td[^>]*>", "<td>", html)  # noqa: E731  (alignment classes aside)
    page = plain(render_report(a, db))
    r = run_analysis(load_run(a, db), load_judges(a, db))
    assert r["variance"]["judges"] == 3
    for rows in (variance_rows(r["variance"]), agreement_rows(r["variance"]["agreement"]), repeats_rows(r["repeats"])):
        assert plain(table(*rows)).split("<tr>", 2)[2] in page  # the same body rows
    with Store(db) as store:
        fidelity = audit(store.episodes(a), load_catalog().personas, run_catalog=store.run(a)["spec"].catalog)
    for rows in (persona_rows(fidelity), pair_rows(fidelity)):
        assert plain(table(*rows)).split("<tr>", 2)[2] in page
    for text in ("Where the variance comes from", "Repeat reliability", "Persona fidelity audit", "effective judges"):
        assert text in page
    # The fixture has warnings to show: it ran on lenient persona files and is audited against the shipped ones,
    # so every persona's file changed, and first turns fall outside the shipped ranges (counted here from the turns).
    shipped = load_catalog().personas
    with Store(db) as store:
        firsts = [(r.persona, r.id, next(t for t in r.turns if t.speaker == "persona")) for r in store.episodes(a)]
    expected = {("file_changed", p): [] for p in ("aloof", "friendly", "unsure")}
    for persona, key in ((p, k) for p in shipped for k in ("interest", "comfort")):
        low, high = getattr(shipped[persona].expected_first_turn, key)
        for side, out in (("above", lambda x: x > high), ("below", lambda x: x < low)):
            ids = [i for p, i, t in firsts if p == persona and out(getattr(t, key))]
            if ids:
                expected[(f"first_turn_{side}", persona, key)] = ids
    found = {(w["kind"], *w["personas"], *([w["message"].split(" than her file")[0].rsplit(" ", 1)[1]]
                                            if w["kind"].startswith("first_turn") else [])): w["episodes"]
             for w in fidelity["warnings"] if w["kind"] in ("file_changed", "first_turn_above", "first_turn_below")}
    assert len(expected) > 3 and found == expected
    assert all(w["message"].replace("'", "&#x27;") in page for w in fidelity["warnings"])


def test_audit_section_escapes_warnings():
    from evaluations.analysis.report import audit_section

    hostile = {"kind": "x", "personas": ["<b>"], "episodes": ["<i>e1</i>"], "message": "<script>x</script>"}
    html = "".join(audit_section({"types": {}, "pairs": [], "warnings": [hostile]}))
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;i&gt;e1&lt;/i&gt;" in html


def test_report_with_vs_shows_the_paired_comparison(runs):
    db, a, b = runs
    page = render_report(b, db, vs=a)
    assert "What changed" in page and "prompts.practitioner" in page
    assert re.search(r'<span class="add">\+.*Be bold', page) and "exact mcnemar" in page
    assert "What these pairs could detect" in page and "minimum detectable change" in page
    assert f"A = {a} (baseline)" in page


def test_report_command_writes_the_file(runs, tmp_path, monkeypatch):
    db, a, b = runs
    monkeypatch.setattr(compare_cli, "console", Console(file=io.StringIO()))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(compare_cli.app, ["report", b, "--vs", a, "-o", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>")


def test_report_names_its_file_after_the_run_and_replaces_one_only_with_force(runs, tmp_path, monkeypatch):
    db, a, _ = runs
    monkeypatch.setattr(compare_cli, "console", Console(file=io.StringIO()))
    monkeypatch.chdir(tmp_path)
    report = lambda *flags: CliRunner().invoke(compare_cli.app, ["report", a[:6], "--db", str(db), *flags])  # noqa: E731
    assert report().exit_code == 0
    written = tmp_path / f"{a}.html"  # the whole id, from a prefix
    written.write_text("kept")
    result = report()
    assert isinstance(result.exception, UserError) and "the file exists; pass --force" in str(result.exception)  # exit 2 in main
    assert written.read_text() == "kept"
    assert report("--force").exit_code == 0 and written.read_text().startswith("<!doctype html>")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    from PIL import Image

    db, a, b = runs
    page = tmp_path / "report.html"
    page.write_text(render_report(b, db, vs=a), encoding="utf-8")
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    for name in ("aloof", "friendly", "unsure", "What changed", "Transcripts"):
        assert name in text
    assert dom.count("<svg") == 6 and "<script" not in dom  # and the paired differences
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    assert len(image.getcolors(maxcolors=1 << 20)) > 50  # plots and tables, not a blank page


def test_report_shows_the_strategies(runs):
    """Per-strategy contact with intervals, a strategy chart, the strategy x persona heatmap and the tests."""
    db, a, b = runs
    page = render_report(a, db)
    strategies = page[page.index("<h2>Strategies</h2>"):page.index("<h2>Persona fidelity audit</h2>")]
    assert "contact rate by strategy, Wilson 95% CI" in strategies and "contact rate, strategy × persona" in strategies
    assert strategies.count("<svg") == 2 and "Do the strategies differ?" in strategies and "fisher exact" in strategies


def test_report_vs_ranks_the_strategies_with_kendall_tau(runs):
    """As `compare A B` prints: the strategies' order on each side and Kendall's tau-b between them."""
    from evaluations.analysis.compare import compare_runs, load_pair

    db, a, b = runs
    page = render_report(b, db, vs=a)
    ranking = compare_runs(*load_pair(a, b, db))["ranking"]
    assert "Strategies ranked in A and in B" in page
    tau = ranking["contact"]["tau"]
    assert f"Kendall's τ-b {'n/a' if tau is None else f'{tau:.2f}'}" in page
    assert all(row["strategy"] in page for row in ranking["contact"]["rows"])


def test_report_takes_include_unfaithful(runs, tmp_path):
    db, a, b = runs
    out = tmp_path / "r.html"
    result = CliRunner().invoke(compare_cli.app, ["report", a, "--include-unfaithful", "-o", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "out-of-character episodes kept: --include-unfaithful" in out.read_text()


def test_report_layout_for_readers(runs, monkeypatch):
    """A --vs report opens with the comparison and its paired-difference plot; transcripts say how many of how many
    and can all be shown; each label names the profile; fidelity warnings link to their episodes."""
    import evaluations.analysis.report as report

    db, a, b = runs
    page = render_report(b, db, vs=a)
    assert page.index("<h2>What changed</h2>") < page.index("<h2>Persona reactions</h2>")
    assert "paired differences" in page[page.index("<h2>What changed</h2>"):page.index("<h2>Persona reactions</h2>")]
    with Store(db) as store:
        n = len(store.episodes(b))  # 3 personas x 2 strategies x 3 reps
    assert n == 18 and f"<h2>Transcripts: {n} of {n}</h2>" in page
    assert "man-woman · rep 0" in page  # the profile in each label
    monkeypatch.setattr(report, "MAX_EPISODES", 5)
    assert "<h2>Transcripts: 5 of 18</h2>" in render_report(b, db) and "--all-transcripts" in render_report(b, db)
    assert "<h2>Transcripts: 18 of 18</h2>" in render_report(b, db, all_transcripts=True)
    links = re.findall(r'<a href="#ep-(\w+)">', page)
    assert all(f'id="ep-{i}"' in page for i in links)  # each link finds its transcript
