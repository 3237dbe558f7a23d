"""`nextstep view`: pages over a store made by a batch against the rule stub, in plain HTTP and in Debian's Chromium."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar

import pytest
from rule_stub import rule_server

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from simulator.core.records import RunSpec  # noqa: E402
from simulator.runs.batch import run_grid  # noqa: E402
from simulator.storage.store import Store  # noqa: E402
from simulator.view import create_app  # noqa: E402

XSS = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> right."
STRATEGIES = "common_interest,friends_pretext"
KEY = "sk-view-test-0123456789abcdef"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Viewer:
    """The viewer app served by uvicorn in a thread: `with Viewer(db) as url: ...`."""

    def __init__(self, db, token: str | None = None, label=None, **options):
        self.port = _port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(db, token=token, label=label, **options), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)


def get(url, opener=None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A rule-stub batch (3 personas x 2 strategies x 1 rep) and run 'xss': one of its episodes whose persona says XSS,
    cited by every judge's grade of agenda_clarity. (db, batch run id, xss episode id)."""
    import os

    db = tmp_path_factory.mktemp("view") / "n.db"
    stub, os.environ["NEXTSTEP_VIEW_TEST_KEY"] = rule_server(), KEY
    try:
        with stub as url:
            run_id = asyncio.run(run_grid({"personas": "all", "strategies": STRATEGIES, "reps": 1}, db=db, base_url=url,
                                          concurrency=2, api_key_env="NEXTSTEP_VIEW_TEST_KEY"))  # fmt: skip
    finally:
        del os.environ["NEXTSTEP_VIEW_TEST_KEY"]
    assert f"Bearer {KEY}" in stub.authorizations  # the batch used the key the pages must never show
    with Store(db) as s:
        e = next(x for x in sorted(s.episodes(run_id), key=lambda x: x.strategy)  # the same one whichever finished first
                 if x.persona == "aloof" and x.verdicts and x.verdicts[0].transitions)  # fmt: skip
        turn = next(t for t in e.turns if t.speaker == "persona")
        turns = [t.model_copy(update={"text": XSS}) if t.index == turn.index else t for t in e.turns]
        verdicts = []
        for v in e.verdicts:
            tr = v.transitions[0]
            grade = tr.conditions["agenda_clarity"].model_copy(update={"turn": turn.index, "quote": XSS, "status": "scored", "score": 2})
            tr = tr.model_copy(update={"conditions": tr.conditions | {"agenda_clarity": grade}})
            verdicts.append(v.model_copy(update={"transitions": [tr, *v.transitions[1:]]}))
        s.create_run("xss", RunSpec(play={}))
        s.add_episode("xss", "c0", e.model_copy(update={"id": "xss-episode", "turns": turns, "verdicts": verdicts}))
    return db, run_id, "xss-episode"


@pytest.fixture(scope="module")
def site(store):
    with Viewer(store[0]) as url:
        yield url


def test_pages_render_and_unknown_ones_are_404(store, site):
    db, run_id, _ = store
    status, runs = get(site + "/")
    assert status == 200 and run_id in runs and "xss" in runs
    status, run = get(f"{site}/run/{run_id}")
    assert status == 200 and "done <b id=\"done\">6</b>" in run  # 3 personas x 2 strategies x 1 rep, all succeeded
    assert "persona × setting" in run and "strategy × persona" in run
    # friendly shares with both asks, aloof only with the plain one (common_interest) and never the pretext: by hand.
    assert "contact 100% [21, 100]" in run  # Wilson 95% for 1/1: [0.2065, 1]
    with Store(db) as s:
        some = s.episodes(run_id)[0].id
    status, page = get(f"{site}/episode/{some}")
    assert status == 200 and "Transcript" in page and "judge 0" in page
    for path in ("/run/no-such-run", "/episode/no-such-episode"):
        status, page = get(site + path)
        assert status == 404 and "Not found" in page and "Traceback" not in page
    assert "no run &#39;no-such-run&#39;" in get(site + "/run/no-such-run")[1]
    for page in (runs, run, page, get(f"{site}/episode/{some}")[1], get(f"{site}/compare?a={run_id}&b={run_id}")[1]):
        assert KEY not in page and KEY[:12] not in page


def test_model_strings_are_escaped(store, site):
    status, page = get(f"{site}/episode/{store[2]}")
    assert status == 200
    assert "<script>window.pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;img src=x onerror=" in page


def test_a_host_other_than_loopback_needs_the_token(store):
    with Viewer(store[0], token="s3cret-token") as url:
        assert get(url + "/")[0] == 403
        assert get(url + "/?token=wrong")[0] == 403
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        status, page = get(url + "/?token=s3cret-token", opener)  # then kept in a cookie, out of the address bar
        assert status == 200 and store[1] in page
        assert get(url + f"/run/{store[1]}", opener)[0] == 200


def test_loopback_answers_its_own_name_only_and_labels_only_from_its_own_page(store, site, tmp_path):
    """DNS rebinding (another name pointing at 127.0.0.1) and another site's form posting a label are refused."""
    rebound = urllib.request.Request(site + "/", headers={"Host": "evil.example:80"})
    assert get(rebound)[0] == 403
    assert get(urllib.request.Request(site + "/", headers={"Host": "localhost"}))[0] == 200
    from simulator.view import LabelSession

    session = LabelSession(store[1], [store[2]], tmp_path / "l.jsonl", "ana", {"timing": {1: "a", 3: "b", 5: "c"}})
    with Viewer(store[0], label=session) as url:
        post = lambda origin: urllib.request.Request(url + "/label/0", data=b"timing=4&exchanged=none",  # noqa: E731
                                                     headers={"Origin": origin}, method="POST")  # fmt: skip
        assert get(post("http://evil.example"))[0] == 403 and not session.output.exists()
        assert get(post(url))[0] == 200 and '"timing": 4' in session.output.read_text()  # then redirected to /label/done


def test_the_viewer_reads_without_writing_or_blocking_a_writer(store):
    db = store[0]
    reader = Store.reader(db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("INSERT INTO meta VALUES ('x', 'y')")
    rows = reader.conn.execute("SELECT id FROM episodes")  # a read left open, as a page render in progress
    rows.fetchone()
    writer = Store(db)
    writer.conn.execute("PRAGMA busy_timeout = 0")  # a lock held by the reader would fail at once
    start = time.monotonic()
    writer.create_run("written-while-read", RunSpec(play={}))
    assert time.monotonic() - start < 1
    writer.close()
    reader.close()


def test_the_live_run_part_is_304_until_the_store_changes(store, tmp_path):
    """An open run page asks every second; while nothing is written the answer is an empty 304, not the run read again."""
    db = tmp_path / "copy.db"
    with sqlite3.connect(store[0]) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with Viewer(db) as site:
        live = lambda tag=None: urllib.request.Request(f"{site}/live/run/{store[1]}", headers={"If-None-Match": tag} if tag else {})  # noqa: E731
        with urllib.request.urlopen(live(), timeout=10) as r:
            tag, first = r.headers["ETag"], r.read().decode()
        assert tag and 'id="count">6<' in first
        status, body = get(live(tag))
        assert (status, body) == (304, "")
        assert get(urllib.request.Request(f"{site}/live/run/{store[1]}?persona=aloof", headers={"If-None-Match": tag}))[0] == 200
        with Store(db) as s:
            e = s.episodes(store[1])[0]
            s.add_episode(store[1], "extra", e.model_copy(update={"id": "one-more"}))
        with urllib.request.urlopen(live(tag), timeout=10) as r:
            assert r.status == 200 and r.headers["ETag"] != tag and 'id="count">7<' in r.read().decode()


def test_a_run_whose_plan_is_done_is_complete_even_just_after_its_last_save():
    from simulator.view.pages import run_status

    assert run_status(6, 6, 2.0) == "complete"  # 6 of 6 planned, saved 2 s ago: nothing left to run
    assert [run_status(3, 6, 2.0), run_status(3, 6, 400.0), run_status(3, None, 400.0), run_status(3, None, 2.0)] == [
        "running", "incomplete", "stored", "running"]


def test_an_incomplete_branch_run_page_gives_the_command_that_continues_it(tmp_path):
    """As `show` does: a branch run is continued by its own `branch` command, not `batch --resume` (which it has no
    grid for). Written out by hand from the run's spec."""
    db = tmp_path / "b.db"
    branch = {"source": "r1", "at": 2, "treatment": {"strategy": "common_interest"}, "reps": 2, "judges": 1}
    with Store(db) as s:
        s.create_run("br", RunSpec(branch=branch, planned=4))
    with Viewer(db) as site:
        status, page = get(f"{site}/run/br")
    assert status == 200 and "incomplete" in page
    assert f"nextstep branch r1 --at 2 --strategy common_interest --reps 2 --judges 1 --run-id br --db {db}" in page


# --- in a real browser ----------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    sync = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def test_xss_renders_as_text_in_the_browser(store, site, browser):
    page = browser.new_page()
    page.goto(f"{site}/episode/{store[2]}")
    assert page.evaluate("window.pwned") is None
    # The sentence agenda_clarity cites (the page's first citation may be another grade's, in an earlier turn).
    gid = page.locator("tr.grade", has_text="agenda_clarity").first.get_attribute("data-grade")
    assert XSS in page.inner_text("#" + page.eval_on_selector(f"[data-cites~='{gid}']", "e => e.closest('.turn').id"))
    assert page.locator("img").count() == 0


def test_clicking_a_grade_highlights_its_sentence(store, site, browser):
    page = browser.new_page()
    page.goto(f"{site}/episode/{store[2]}")
    row = page.locator("tr.grade", has_text="agenda_clarity").first
    gid = row.get_attribute("data-grade")
    cited = page.locator(f"[data-cites~='{gid}']")
    assert cited.inner_text() == XSS and "on" not in cited.get_attribute("class")
    row.click()
    assert "on" in cited.get_attribute("class").split()
    other = page.locator("tr.grade", has_text="genuine_interest").first
    other.click()  # another grade: the first sentence goes dark
    assert "on" not in cited.get_attribute("class").split()


def test_filtering_the_episode_list(store, site, browser):
    page = browser.new_page()
    page.goto(f"{site}/run/{store[1]}")
    assert page.locator("#episodes tr").count() == 1 + 6
    page.select_option("select[name=persona]", "aloof")
    page.wait_for_url("**persona=aloof**")
    personas = page.locator("#episodes tr td:nth-child(2)").all_inner_texts()
    assert personas == ["aloof", "aloof"]  # one per strategy, 1 rep
    page.select_option("select[name=strategy]", "friends_pretext")
    page.wait_for_url("**strategy=friends_pretext**")
    assert page.locator("#episodes tr td:nth-child(4)").all_inner_texts() == ["friends_pretext"]
    assert page.locator("#episodes tr td:nth-child(7)").all_inner_texts() == ["none"]  # aloof refuses the pretext


def test_pages_update_live_while_a_batch_writes(tmp_path, browser):
    """A batch writes while the runs page and the run page are open: the counts, the episode list and the contact tables
    change without a reload, to the figures of the whole run (by hand, below)."""
    db = tmp_path / "live.db"
    Store(db).close()
    with rule_server(latency=0.15) as stub, Viewer(db) as site:
        runs_page = browser.new_page()
        runs_page.goto(site + "/")
        runs_page.evaluate("window.notReloaded = true")
        batch = threading.Thread(target=lambda: asyncio.run(run_grid(
            {"personas": "all", "strategies": STRATEGIES, "reps": 2}, db=db, base_url=stub, run_id="live", concurrency=1)))
        batch.start()
        runs_page.wait_for_selector("tr[data-run=live]", timeout=20_000)
        first = runs_page.inner_text("tr[data-run=live] td.done")
        run_page = browser.new_page()
        run_page.goto(site + "/run/live")
        run_page.evaluate("window.notReloaded = true")
        start = int(run_page.inner_text("#count"))
        tables_at_load = run_page.inner_text("#tables")
        assert start < 12  # the tables at load hold the episodes saved before the page opened (perhaps none)
        run_page.wait_for_function(f"Number(document.querySelector('#count').textContent) > {start}", timeout=30_000)
        batch.join(120)
        run_page.wait_for_function("Number(document.querySelector('#count').textContent) == 12", timeout=10_000)
        run_page.wait_for_function("document.querySelectorAll('#episodes tr').length == 1 + 12", timeout=10_000)  # every new one listed
        runs_page.wait_for_function("document.querySelector('tr[data-run=live] td.done').textContent.startsWith('12 ')",
                                    timeout=10_000)  # fmt: skip
        assert first != runs_page.inner_text("tr[data-run=live] td.done")
        # The tables, by hand: aloof refuses the pretext twice (0/2, Wilson 95% [0, 66]) and shares with the plain ask
        # twice, so over the one setting 2/4 (Wilson [15, 85]).
        pretext = "#tables [data-table=persona_strategy] td[data-row=friends_pretext][data-col=aloof]"
        run_page.wait_for_function(f"document.querySelector('{pretext}')?.textContent.includes('n 2')", timeout=10_000)
        assert run_page.inner_text(pretext).startswith("contact 0% [0, 66]")
        assert run_page.inner_text("#tables [data-table=persona_setting] td[data-row=aloof]").startswith("contact 50% [15, 85]")
        assert run_page.inner_text("#tables") != tables_at_load
        assert run_page.evaluate("window.notReloaded") and runs_page.evaluate("window.notReloaded")

        # One more episode saved now reaches the open page's list and tables (the time it takes: benchmarks/view_live.py).
        with Store(db) as s:
            e = next(x for x in s.episodes("live") if x.persona == "aloof" and x.strategy == "friends_pretext")
            saved = time.monotonic()
            s.add_episode("live", "extra", e.model_copy(update={"id": "late-episode"}))
        run_page.wait_for_selector("text=late-episode", timeout=10_000)
        run_page.wait_for_function(f"document.querySelector('{pretext}')?.textContent.includes('n 3')", timeout=10_000)
        print(f"live-update latency (list and tables): {time.monotonic() - saved:.2f} s")
        assert run_page.inner_text(pretext).startswith("contact 0% [0, 56]")  # Wilson 95% for 0/3: [0, 0.5615]
        assert run_page.evaluate("window.notReloaded")


def test_a_missing_foreign_or_older_database_is_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database")
    old = tmp_path / "old.db"  # made by 0.1.0, without the columns added since: the viewer does not migrate
    old.write_bytes((Path(__file__).parent / "fixtures" / "nextstep-0.1.0.db").read_bytes())
    said_old = "made by an older nextstep (no episodes.usable, "  # the columns added after the fixture was made, usable first
    for db, said in ((tmp_path / "none.db", "no such database"), (foreign, "not a nextstep database"), (old, said_old)):
        done = subprocess.run([sys.executable, "-m", "simulator", "view", "--db", str(db), "--no-browser"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(f"nextstep: error: {db}: {said}") and done.stderr.count("\n") == 1
    assert "calls.from_cache" in done.stderr and done.stderr.endswith(f"(e.g. `nextstep runs --db {old}`) brings it up to date\n")


def test_compare_a_branch_run_and_two_runs(tmp_path):
    """By hand on the rule stub (as tests/test_branch.py): aloof refuses the friends pretext and shares her number with a
    plain ask from the same first two turns, so all 3 x 2 pairs move 0 -> 1: difference +1.00, exact McNemar p 2/2^6.
    Two runs of one grid and seed against the deterministic stub are the same episodes: every difference 0, p 1."""
    from simulator import api

    db = tmp_path / "n.db"
    grid = {"personas": "aloof", "strategies": "friends_pretext", "reps": 3}
    with rule_server() as url:
        base = api.run_batch(grid, db=db, base_url=url).run_id
        again = api.run_batch(grid, db=db, base_url=url, run_id="again").run_id
        branched, _, _ = api.branch(base, at="2", strategy="common_interest", reps=2, db=db, base_url=url)
    with Viewer(db) as site:
        status, page = get(f"{site}/compare?a={branched}")
        assert status == 200 and 'paired <b id="paired">6</b>' in page
        row = page[page.index('data-measure="contact"'):].split("</tr>")[0]
        assert '<td data-label="difference" class="delta">1.00</td>' in row and f'class="p">{2 / 2**6:.3f}<' in row
        status, page = get(f"{site}/compare?a={base}&b={again}")
        assert status == 200 and 'paired <b id="paired">3</b>' in page
        deltas = [part.split("<")[0] for part in page.split('class="delta">')[1:]]
        assert deltas and set(deltas) == {"0.00"}
        assert [part.split("<")[0] for part in page.split('class="p">')[1:]][0] == "1.000"  # McNemar, no discordant pair
        assert get(f"{site}/compare?a={base}")[0] == 404  # not a branch run, and no second run named
        assert get(f"{site}/compare?a=nope&b={base}")[0] == 404


def test_label_three_episodes_then_calibrate_on_the_file(store, tmp_path, browser):
    """Keys typed on the Label page are the labels saved (checked against what was typed), each saved as entered, and
    `calibrate` reads the file as a gold set."""
    import json

    from simulator import api
    from simulator.view import new_session

    db, run_id, _ = store
    out = tmp_path / "ana.jsonl"
    anchors, flags = api.rubric_anchors()
    session = new_session(db, run_id, sample=3, seed=0, labeller="ana", output=out, anchors=anchors, flags=flags)
    with Store(db) as s:
        persona = {e.id: e.persona for e in s.episodes(run_id)}
    assert sorted(persona[i] for i in session.ids) == ["aloof", "friendly", "unsure"]  # one per persona: stratified
    typed = ["54n321", "123450", "333333"]  # six conditions each; n and 0 are "not applicable"
    with Viewer(db, label=session) as site:
        page = browser.new_page()
        page.goto(site + "/label")
        for n, keys in enumerate(typed):
            assert page.locator("h1").inner_text().startswith(f"Label {n + 1} of 3")
            assert "judge" not in page.inner_text("main").lower().replace("blind to the judges", "")  # blind
            for key in keys:
                page.keyboard.press(key)
            if n == 1:
                page.check("input[name=flags][value=nervous]")
                page.select_option("select[name=exchanged]", "email")
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/label/{'done' if n == 2 else n + 1}")
            assert len(out.read_text().splitlines()) == n + 1  # saved as entered
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    scores = lambda keys: [int(k) if k in "12345" else None for k in keys]  # noqa: E731
    assert [list(x["labels"].values()) for x in lines] == [scores(k) for k in typed]
    assert list(lines[0]["labels"]) == list(anchors)
    assert [x["flags"] for x in lines] == [[], ["nervous"], []] and [x["exchanged"] for x in lines] == ["none", "email", "none"]
    assert {(x["labeller"], x["run_id"]) for x in lines} == {("ana", run_id)} and all(x["labelled_at"] for x in lines)
    assert [x["id"] for x in lines] == session.ids
    with rule_server() as url:
        result = api.calibrate(out, base_url=url)
    assert sorted(result["verdicts"]) == sorted(session.ids)


def test_the_sample_button_draws_a_sample_and_opens_the_label_page(store, tmp_path, browser):
    """The run page's button does what `nextstep label RUN --sample 3 --labeller bo` does: 3 of the 6 episodes, one per
    persona (stratified), labelled blind into bo's gold file beside the viewer."""
    import json

    from simulator import api

    db, run_id, _ = store
    with Store(db) as s:
        persona = {e.id: e.persona for e in s.episodes(run_id)}
    with Viewer(db, rubric=api.rubric_anchors(), labels_dir=tmp_path) as site:
        page = browser.new_page()
        page.goto(f"{site}/run/{run_id}")
        page.fill("#sample input[name=labeller]", "bo")
        page.fill("#sample input[name=sample]", "3")
        page.click("#sample button")
        page.wait_for_url("**/label/0")
        assert page.locator("h1").inner_text().startswith("Label 1 of 3")
        assert f"labelling {run_id} as bo" in page.inner_text("header")
        seen = []
        for n in range(3):
            seen.append(page.locator("h1 .id").inner_text())
            for key in "333333":
                page.keyboard.press(key)
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/label/{'done' if n == 2 else n + 1}")
    assert sorted(persona[i] for i in seen) == ["aloof", "friendly", "unsure"]
    lines = [json.loads(x) for x in (tmp_path / f"{run_id}-labels-bo.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == seen and {(x["labeller"], x["run_id"]) for x in lines} == {("bo", run_id)}
    assert all(set(x["labels"].values()) == {3} for x in lines)


def test_the_sample_button_refuses_a_bad_form_or_another_site(store, tmp_path):
    from simulator import api

    with Viewer(store[0], rubric=api.rubric_anchors(), labels_dir=tmp_path) as site:
        post = lambda body, origin=site: urllib.request.Request(f"{site}/run/{store[1]}/label", data=body.encode(),  # noqa: E731
                                                                headers={"Origin": origin}, method="POST")  # fmt: skip
        assert get(post("labeller=bo&sample=3&seed=0", "http://evil.example"))[0] == 403
        status, page = get(post("labeller=../../etc/x&sample=3&seed=0"))
        assert status == 400 and "labeller" in page
        status, page = get(post("labeller=bo&sample=none&seed=0"))
        assert status == 400 and "sample &#39;none&#39; is not a whole number" in page
        assert "seed &#39;&#39; is not a whole number" in get(post("labeller=bo&sample=3&seed="))[1]
        assert "sample 0 (at least 1)" in get(post("labeller=bo&sample=0&seed=0"))[1]
        assert get(urllib.request.Request(f"{site}/run/no-such-run/label", data=b"labeller=bo&sample=3&seed=0",
                                          headers={"Origin": site}, method="POST"))[0] == 404  # fmt: skip
        assert list(tmp_path.iterdir()) == []


def test_the_label_page_shows_agreement_with_another_labeller_of_the_run(store, tmp_path):
    """ana's and bo's files of the same two episodes, by hand: timing (5, 5) and (3, 4): exact 1/2, within one 2/2,
    linear-weighted kappa 1 - (1/8)/(1/4) = 0.5; both raise rude on the first only (kappa 1); exchanged the same on both."""
    import json

    from simulator import api
    from simulator.view import default_output, new_session

    db, run_id, _ = store
    with Store(db) as s:
        two = [e for e in s.episodes(run_id)][:2]

    def line(e, who, timing, flags):
        return {"id": e.id, "setting": e.setting, "persona": e.persona, "strategy": e.strategy,
                "turns": [{"speaker": t.speaker, "text": t.text} for t in e.turns], "labels": {"timing": timing},
                "flags": flags, "exchanged": "none", "labeller": who, "run_id": run_id}  # fmt: skip

    for who, timings in (("ana", (5, 3)), ("bo", (5, 4))):
        lines = [line(e, who, t, ["rude"] if n == 0 else []) for n, (e, t) in enumerate(zip(two, timings))]
        (tmp_path / default_output(run_id, who)).write_text("".join(json.dumps(x) + "\n" for x in lines))
    anchors, flags = api.rubric_anchors()
    session = new_session(db, run_id, sample=6, seed=0, labeller="ana", output=tmp_path / default_output(run_id, "ana"),
                          anchors=anchors, flags=flags)  # fmt: skip
    with Viewer(db, label=session, agree=api.labellers_agreement) as site:
        status, page = get(site + "/label/done")
    assert status == 200 and "with bo: 2 episodes labelled by both" in page
    row = page[page.index('data-condition="timing"'):].split("</tr>")[0]
    cells = [c.split("</td>")[0].split(">")[-1] for c in row.split("<td ")[1:]]  # the condition is the row's <th>
    assert cells == ["2", "1.000", "0.500", "1.000", "0.500"]  # both scored, applies, exact, within 1, kappa
    assert 'data-flag="rude"' in page and "the same on 1.000 of 2" in page
    assert f"nextstep agreement {tmp_path / default_output(run_id, 'ana')} {tmp_path / default_output(run_id, 'bo')}" in page


def test_flags_and_the_outcome_have_keys_too(store, tmp_path, browser):
    """After the six conditions the highlight moves to the flags (1-8 toggle the n-th, in the rubric's order), then j
    to what was exchanged (1-4: none, number, email, social_handle)."""
    import json

    from simulator import api
    from simulator.view import new_session

    anchors, flags = api.rubric_anchors()
    session = new_session(store[0], store[1], sample=1, seed=0, labeller="cy", output=tmp_path / "cy.jsonl", anchors=anchors,
                          flags=flags)  # fmt: skip
    with Viewer(store[0], label=session) as site:
        page = browser.new_page()
        page.goto(site + "/label/0")
        for key in "333333" + "61" + "6" + "j" + "3":  # nervous, rude, nervous again (off), then email
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        page.wait_for_url("**/label/done")
    saved = json.loads((tmp_path / "cy.jsonl").read_text())
    assert flags[:6] == ("rude", "demanding", "crude", "creepy", "over_deferential", "nervous")
    assert (saved["flags"], saved["exchanged"]) == (["rude"], "email")
    assert set(saved["labels"].values()) == {3}


def test_the_live_part_waits_while_its_filter_form_is_in_use(store, tmp_path, browser):
    """A filter's dropdown that is open (focused) is not replaced under the user's hand while a batch writes; the page
    catches up once it is left."""
    db = tmp_path / "copy.db"
    with sqlite3.connect(store[0]) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with Viewer(db) as site:
        page = browser.new_page()
        page.goto(f"{site}/run/{store[1]}")
        page.focus("select[name=persona]")
        page.evaluate("window.held = document.activeElement")
        with Store(db) as s:
            e = s.episodes(store[1])[0]
            s.add_episode(store[1], "extra", e.model_copy(update={"id": "one-more"}))
        page.wait_for_timeout(3000)  # three polls
        assert page.evaluate("window.held.isConnected && document.activeElement === window.held")
        assert page.inner_text("#count") == "6"
        page.evaluate("document.activeElement.blur()")
        page.wait_for_function("document.querySelector('#count').textContent == '7'", timeout=10_000)
