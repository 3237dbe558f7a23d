"""Screenshots of `nextstep view` for docs/view/: a rule-stub batch, each page at 1280 and 390 px wide (compare: a branch run).

    python tests/view_screenshots.py        # needs the test extra and Debian's chromium
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from playwright.sync_api import sync_playwright  # noqa: E402
from rule_stub import rule_server  # noqa: E402
from test_view import Viewer  # noqa: E402

from simulator import api  # noqa: E402
from simulator.runs.batch import run_grid  # noqa: E402
from simulator.storage.store import Store  # noqa: E402
from simulator.view import default_output, labels, new_session  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "view"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    db = Path(tempfile.mkdtemp()) / "nextstep.db"
    grid = {"settings": "supermarket,bar_club", "personas": "all", "strategies": "common_interest,friends_pretext,turn_back",
            "reps": 2}  # fmt: skip
    with rule_server() as url:
        run_id = asyncio.run(run_grid(grid, db=db, base_url=url, concurrency=2))
        base = api.run_batch({"personas": "aloof,unsure", "strategies": "friends_pretext", "reps": 3}, db=db, base_url=url).run_id
        branched, _, _ = api.branch(base, at="2", strategy="common_interest", reps=2, db=db, base_url=url)
    with Store(db) as s:
        episode = next(e.id for e in s.episodes(run_id) if e.persona == "unsure" and e.strategy == "turn_back")
    anchors, flags = api.rubric_anchors()
    here = Path(tempfile.mkdtemp())
    session = new_session(db, run_id, sample=3, seed=0, labeller="ana", output=here / default_output(run_id, "ana"),
                          anchors=anchors, flags=flags)  # fmt: skip
    other = new_session(db, run_id, sample=3, seed=0, labeller="bo", output=here / default_output(run_id, "bo"),
                        anchors=anchors, flags=flags)  # fmt: skip
    typed = {"ana": ["54n321", "43n432", "22n214"], "bo": ["44n331", "43n442", "32n215"]}  # two people, the same sample
    for who in (session, other):
        with Store(db) as s:
            for episode_id, scores in zip(who.ids, typed[who.labeller]):
                form = {c: [k if k in "12345" else "0"] for c, k in zip(anchors, scores)} | {"exchanged": ["number"]}
                labels.save(who, labels.gold_line(s.episode(episode_id), who, form))
    with Viewer(db, label=session, rubric=(anchors, flags), agree=api.labellers_agreement, labels_dir=here) as site, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        for width in (1280, 390):
            page = browser.new_page(viewport={"width": width, "height": 900})
            for name, path in (("runs", "/"), ("run", f"/run/{run_id}"), ("episode", f"/episode/{episode}"),
                               ("compare", f"/compare?a={branched}"), ("label", "/label/0"), ("agreement", "/label/done")):
                page.goto(site + path)
                if name == "episode":
                    page.locator("tr.grade", has_text="agenda_clarity").first.click()
                    page.evaluate("window.scrollTo(0, 0)")
                if name == "label":
                    for key in "54":
                        page.keyboard.press(key)
                page.screenshot(path=OUT / f"{name}-{width}.png", full_page=True)
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
