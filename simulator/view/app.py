"""`nextstep view`: a Starlette app over one store, server-rendered (Jinja, autoescaped), polled for live parts."""

from __future__ import annotations

import hmac
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from simulator.core.errors import UserError

from . import pages

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("simulator.view", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined)  # fmt: skip
COOKIE = "nextstep_token"


def render(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def create_app(db: Path, *, token: str | None = None) -> Starlette:
    """The viewer over `db`; with `token`, every request must carry it (?token=, then a cookie), as Jupyter's does."""
    db = Path(db)

    def _filters(request: Request) -> dict[str, str]:
        return {k: request.query_params.get(k, "") for k in pages.FILTERS}

    async def runs(request: Request):
        return render("runs.html", db=str(db), runs=pages.runs_page(db))

    async def runs_live(request: Request):
        return render("runs_table.html", runs=pages.runs_page(db))

    async def run(request: Request):
        live = _found(pages.live_run, db, request.path_params["run_id"], _filters(request))
        return render("run.html", db=str(db), live=live, tables=pages.contact_tables(live["frame"]))

    async def run_live(request: Request):  # the counts or the episode list
        if request.path_params["part"] not in ("counts", "list"):
            raise HTTPException(404, f"no part {request.path_params['part']!r} of a run page")
        live = _found(pages.live_run, db, request.path_params["run_id"], _filters(request))
        return render(f"run_{request.path_params['part']}.html", live=live)

    async def episode(request: Request):
        return render("episode.html", **_found(pages.episode_page, db, request.path_params["episode_id"]))

    async def compare(request: Request):
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a:
            raise HTTPException(404, "choose a run to compare (?a=RUN&b=RUN, or ?a=BRANCH_RUN)")
        return render("compare.html", **_found(pages.compare_page, db, a, b or None))

    async def not_found(request: Request, exc: HTTPException):
        if exc.status_code == 403:
            return PlainTextResponse("403: this viewer needs its token in the URL (?token=...), as printed when it started", 403)
        return render("404.html", status=exc.status_code, detail=exc.detail)

    app = Starlette(routes=[
        Route("/", runs), Route("/live/runs", runs_live), Route("/run/{run_id}", run), Route("/live/run/{run_id}/{part:str}", run_live),
        Route("/episode/{episode_id}", episode), Route("/compare", compare),
    ], exception_handlers={HTTPException: not_found})  # fmt: skip

    if token is None:
        return app

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


def _found(page, db: Path, key: str, *args):
    """The page, or a 404 naming what is not in the store (an unknown run or episode, a broken record)."""
    try:
        return page(db, key, *args)
    except UserError as e:
        raise HTTPException(404, str(e)) from None
