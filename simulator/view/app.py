"""`nextstep view`: a Starlette app over one store, server-rendered (Jinja, autoescaped), polled for live parts."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from simulator.core.errors import UserError

from evaluations.analysis.compare import fmt

from . import labels, pages

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("simulator.view", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined)  # fmt: skip
COOKIE = "nextstep_token"


def render(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def create_app(db: Path, *, token: str | None = None, label: labels.LabelSession | None = None,
               rubric: tuple[dict[str, dict[int, str]], tuple[str, ...]] | None = None, labels_dir: Path | None = None,
               agree=None) -> Starlette:
    """The viewer over `db`; with `token`, every request must carry it (?token=, then a cookie), as Jupyter's does;
    with `label`, its Label pages save each entry to the session's file; with `rubric` (the anchors and flags a labeller
    sees), a run page's button starts a session of its own, saving into `labels_dir` (default: the working directory);
    with `agree(first, second)` (`api.labellers_agreement`), the Label pages show the agreement with every other
    labeller of the run whose file lies beside the session's."""
    db = Path(db)
    current = {"label": label}  # the labelling session the Label pages serve; the run page's button replaces it

    def _filters(request: Request) -> dict[str, str]:
        return {k: request.query_params.get(k, "") for k in pages.FILTERS}

    async def runs(request: Request):
        return render("runs.html", db=str(db), runs=pages.runs_page(db))

    async def runs_live(request: Request):
        return render("runs_table.html", runs=pages.runs_page(db))

    async def run(request: Request):
        live = _found(pages.live_run, db, request.path_params["run_id"], _filters(request))
        return render("run.html", db=str(db), live=live, can_label=rubric is not None)

    async def run_live(request: Request):
        """All that changes while a batch writes, in one read of the store; 304 while nothing did (an idle open page
        costs a few small queries a second, not the run's records and tables)."""
        run_id = request.path_params["run_id"]
        tag = '"%s"' % hashlib.sha256((_found(pages.run_stamp, db, run_id) + request.url.query).encode()).hexdigest()[:20]
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        reply = render("run_live.html", live=_found(pages.live_run, db, run_id, _filters(request)))
        reply.headers["ETag"] = tag
        return reply

    async def episode(request: Request):
        return render("episode.html", **_found(pages.episode_page, db, request.path_params["episode_id"]))

    async def compare(request: Request):
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a:
            raise HTTPException(404, "choose a run to compare (?a=RUN&b=RUN, or ?a=BRANCH_RUN)")
        return render("compare.html", **_found(pages.compare_page, db, a, b or None))

    async def sample(request: Request):
        """The run page's button: draw a stratified sample as `nextstep label RUN` does, then open the Label page."""
        _same_origin(request)
        if rubric is None:
            raise HTTPException(404, "this viewer has no rubric to label with: start it with `nextstep view`")
        run_id = request.path_params["run_id"]
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            labeller = labels.labeller_name(form.get("labeller", ""))
            size, seed = _whole(form, "sample"), _whole(form, "seed")
        except ValueError as e:
            raise HTTPException(400, f"cannot draw a sample: {e}") from None
        if size < 1:
            raise HTTPException(400, f"cannot draw a sample: sample {size} (at least 1)")
        output = Path(labels_dir or Path.cwd()) / labels.default_output(run_id, labeller)
        session = _found(labels.new_session, db, run_id, sample=size, seed=seed, labeller=labeller, output=output,
                         anchors=rubric[0], flags=rubric[1])  # fmt: skip
        if not session.ids:
            raise HTTPException(404, f"run {run_id!r} has no succeeded episode to label")
        current["label"] = session
        return RedirectResponse("/label", 303)

    async def label_start(request: Request):
        label = current["label"]
        if label is None:
            raise HTTPException(404, "no labelling session: start one with `nextstep label RUN --sample N` or a run page's button")
        todo = next((n for n, i in enumerate(label.ids) if i not in label.saved), None)
        return RedirectResponse(f"/label/{0 if todo is None else todo}", 303)

    async def label_page(request: Request):
        n, label = request.path_params["n"], current["label"]
        if label is None or not 0 <= n < len(label.ids):
            raise HTTPException(404, f"no item {n} in this labelling session")
        e = _found(pages.blind_episode, db, label.ids[n])
        if request.method == "POST":
            _same_origin(request)
            labels.save(label, labels.gold_line(e, label, parse_qs((await request.body()).decode())))
            return RedirectResponse(f"/label/{n + 1}" if n + 1 < len(label.ids) else "/label/done", 303)
        return render("label.html", e=e, n=n, session=label, entry=label.saved.get(e.id))

    async def label_done(request: Request):
        session = current["label"]
        if session is None:
            raise HTTPException(404, "no labelling session")
        others = []
        for other in labels.other_labellers(session) if agree is not None and session.output.is_file() else []:
            try:
                others.append({"file": other, "result": agree(session.output, other), "error": None})
            except UserError as e:  # a broken or unrelated file beside it: said, not a failed page
                others.append({"file": other, "result": None, "error": str(e)})
        return render("label_done.html", session=session, others=others, fmt=fmt)

    async def not_found(request: Request, exc: HTTPException):
        if exc.status_code == 403:
            return PlainTextResponse(f"403: {exc.detail}", 403)
        return render("404.html", status=exc.status_code, detail=exc.detail, heading="Not found" if exc.status_code == 404 else "Cannot do that")

    app = Starlette(routes=[
        Route("/", runs), Route("/live/runs", runs_live), Route("/run/{run_id}", run), Route("/run/{run_id}/label", sample, methods=["POST"]), Route("/live/run/{run_id}", run_live),
        Route("/episode/{episode_id}", episode), Route("/compare", compare),
        Route("/label", label_start), Route("/label/done", label_done),
        Route("/label/{n:int}", label_page, methods=["GET", "POST"]),
    ], exception_handlers={HTTPException: not_found})  # fmt: skip

    if token is None:
        return loopback_only(app)

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            request = Request(scope)
            given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return await PlainTextResponse("403: this viewer needs its token in the URL (?token=...)", 403)(scope, receive, send)
            if "token" in request.query_params:  # keep it in a cookie, and out of the address bar
                reply = RedirectResponse(str(request.url.remove_query_params("token")), 303)
                reply.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return await reply(scope, receive, send)
        await app(scope, receive, send)

    return guarded


def _found(page, db: Path, key: str, *args, **kwargs):
    """The page, or a 404 naming what is not in the store (an unknown run or episode, a broken record)."""
    try:
        return page(db, key, *args, **kwargs)
    except UserError as e:
        raise HTTPException(404, str(e)) from None


def _whole(form: dict[str, str], key: str) -> int:
    """A form field's whole number, or a ValueError naming the field: `_whole({'seed': '3'}, 'seed')` -> 3."""
    value = form.get(key, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key} {value!r} is not a whole number") from None


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site's page (a browser names the page's origin; a script without one is let
    through, as it could not have been sent by a page the labeller visits)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
        raise HTTPException(403, f"this may only be sent from this viewer's own page, not from {origin}")


def loopback_only(app):
    """Answer only requests addressed to the loopback name (a page elsewhere that rebinds its own name to 127.0.0.1 is
    refused), as Jupyter does without a token."""

    async def checked(scope, receive, send):
        if scope["type"] == "http":
            host = Request(scope).headers.get("host", "").rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "[::1]"):
                return await PlainTextResponse(f"403: this viewer answers only at 127.0.0.1, not {host}", 403)(scope, receive, send)
        await app(scope, receive, send)

    return checked
