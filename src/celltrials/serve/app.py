"""The ASGI application of ``celltrials serve`` (Starlette + Jinja2).

Routes (stable; links and scripts rely on them)::

    /                      overview: the report's headline and charts for the filters
    /trials                faceted list (?cell_type=car_t&country=China&start_year=2020-2024&q=…)
    /trials/{id}           one trial (any registry id of it, any case)
    /products              the approved-product catalog with linked-trial counts
    /products/{name}       one product (name, INN or code name)
    /changes?since=DATE    what changed since DATE (scoped by the same filters)
    /export?format=csv     the current selection (csv, xlsx, parquet)
    /api/...               the same paths return what the page shows, as JSON
    /api/status            the snapshot being served and whether a writer holds the store

Safety: every request reads a private snapshot of the store (never the store
file itself; :mod:`celltrials.serve.snapshot`), SQL values are parameters,
templates are autoescaped, errors show a message without a traceback, pages
are capped at 200 rows, and the Host header must name the address served
(no DNS rebinding). Beyond loopback a token is required.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import duckdb
import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from celltrials import __version__
from celltrials.analysis import landscape as ls
from celltrials.changes import KINDS
from celltrials.errors import CelltrialsError, ConfigError
from celltrials.serve import queries as Q
from celltrials.serve.snapshot import Snapshot, SnapshotManager

log = logging.getLogger("celltrials.serve")
STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "celltrials_token"


class ServeConfig:
    def __init__(
        self,
        db: str,
        *,
        token: str | None = None,
        allowed_hosts: tuple[str, ...] = (),
        snapshot_dir: str | None = None,
        check_every: float = 2.0,
    ) -> None:
        self.db = db
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.snapshot_dir = snapshot_dir
        self.check_every = check_every


def _json_default(v: Any) -> Any:
    if isinstance(v, date | datetime):
        return v.isoformat()
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    return str(v)


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


def _script_json(obj: Any) -> str:
    """JSON safe inside <script type="application/json"> (no "</script", no "<!--")."""
    return (
        orjson.dumps(obj, default=_json_default)
        .decode()
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("celltrials.serve", "templates"),
        autoescape=select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["label"] = ls.label
    env.filters["num"] = lambda v: "—" if v is None else f"{int(v):,}"
    env.filters["script_json"] = _script_json
    env.globals["version"] = __version__
    env.globals["facet_titles"] = Q.FACET_TITLES
    env.globals["sort_labels"] = Q.SORT_LABELS
    env.globals["qs"] = _qs
    return env


def _qs(pairs: list[tuple[str, str]] | None, **extra: Any) -> str:
    items = list(pairs or [])
    for k, v in extra.items():
        items = [(a, b) for a, b in items if a != k]
        if v is not None:
            items.append((k, str(v)))
    return ("?" + urlencode(items)) if items else ""


def create_app(config: ServeConfig, manager: SnapshotManager | None = None) -> Starlette:  # noqa: C901 - the route handlers are closures over one snapshot manager
    """The dashboard over ``config.db`` (a snapshot is taken on startup)."""
    env = _env()
    own_manager = manager is None
    mgr = manager or SnapshotManager(
        config.db, Q.prepare, snapshot_dir=config.snapshot_dir, check_every=config.check_every
    )
    limiter = anyio.CapacityLimiter(8)

    def warm(snap: Snapshot) -> None:
        """Answer the landing pages (no filters) once, right after a snapshot loads."""
        if not snap.acquire():
            return
        try:
            cur = snap.cursor()
            try:
                q = Q.parse_query([])
                key = urlencode(q.params())
                index = snap.info.get("index")
                snap.cache_put("overview?" + key, Q.overview(cur, q, index=index))
                snap.cache_put("facets?" + key, Q.facets(cur, q, index=index))
                Q.trial_page(cur, q, index=index)  # first use of each code path
                Q.changes_page(cur, q, None, None, 500, index=index)
                some = cur.execute(
                    f"(SELECT trial_id FROM {Q.ST} LIMIT 1) UNION ALL "
                    f"(SELECT trial_id FROM {Q.ST} WHERE has_results LIMIT 1)"
                ).fetchall()
                texts = snap.cursor("texts")
                try:  # loads the taxonomy the evidence context needs, once
                    for (tid,) in some:
                        Q.trial_detail(cur, str(tid), texts, index=index)
                finally:
                    snap.give_back(texts, "texts")
            finally:
                snap.give_back(cur)
        except Exception:  # a warm cache is an optimisation only
            log.exception("warming the snapshot cache")
        finally:
            snap.release()

    mgr.on_swap = warm

    async def run(
        fn: Callable[..., Any],
        *args: Any,
        cache: str | None = None,
        pass_snapshot: bool = False,
        indexed: bool = False,
    ) -> Any:
        """``fn(cursor, *args)`` (or ``fn(snapshot, cursor, *args)``) on the
        current snapshot in a worker thread; ``indexed`` passes the snapshot's
        :class:`~celltrials.serve.index.FacetIndex` as ``index=``; with
        ``cache``, the result is kept per snapshot under that key (a snapshot
        never changes, so neither does the answer)."""

        def work() -> Any:
            with mgr.use() as (snap, cur):
                if cache is not None:
                    hit = snap.cache_get(cache)
                    if hit is not None:
                        return hit
                kw = {"index": snap.info.get("index")} if indexed else {}
                out = fn(snap, cur, *args, **kw) if pass_snapshot else fn(cur, *args, **kw)
                if cache is not None:
                    snap.cache_put(cache, out)
                return out

        return await anyio.to_thread.run_sync(work, limiter=limiter)

    def page(
        request: Request, template: str, ctx: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        st = mgr.status
        base = {
            "request": request,
            "status": st,
            "path": request.url.path,
            "nav": _nav(request.url.path),
        }
        html = env.get_template(template).render(**base, **ctx)
        return HTMLResponse(html, status_code=status)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    # ------------------------------------------------------------ handlers
    async def overview(request: Request) -> Response:
        query = Q.parse_query(request.query_params)

        data = await run(
            Q.overview, query, cache="overview?" + urlencode(query.params()), indexed=True
        )
        if wants_json(request):
            return JSON(data)
        return page(
            request,
            "overview.html.j2",
            {"data": data, "query": query, "params": query.params(), "title": "Overview"},
        )

    async def trials(request: Request) -> Response:
        query = Q.parse_query(request.query_params)

        data = await run(Q.trial_page, query, indexed=True)
        if not wants_json(request) or request.query_params.get("facets") in ("1", "true"):
            data = {
                **data,
                "facets": await run(
                    Q.facets, query, cache="facets?" + urlencode(query.params()), indexed=True
                ),
            }
        if wants_json(request):
            return JSON(data)
        return page(
            request,
            "trials.html.j2",
            {
                "data": data,
                "query": query,
                "params": query.params(),
                "paged": query.params(paging=True),
                "title": "Trials",
            },
        )

    async def trial(request: Request) -> Response:
        any_id = request.path_params["trial_id"]
        if len(any_id) > 200:
            raise HTTPException(404, "no such trial")

        def detail(snap: Snapshot, cur: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
            texts = snap.cursor("texts")
            try:
                return Q.trial_detail(cur, any_id, texts, index=snap.info.get("index"))
            finally:
                snap.give_back(texts, "texts")

        data = await run(detail, pass_snapshot=True)
        if data is None:
            raise HTTPException(404, f"No trial with id {any_id!r} in the store.")
        if wants_json(request):
            return JSON(data)
        return page(request, "trial.html.j2", {"d": data, "title": data["trial_id"]})

    async def products(request: Request) -> Response:
        data = await run(Q.products_list)
        if wants_json(request):
            return JSON({"count": len(data), "products": data})
        return page(request, "products.html.j2", {"products": data, "title": "Products"})

    async def product(request: Request) -> Response:
        data = await run(Q.product_page, request.path_params["name"][:200])
        if wants_json(request):
            return JSON(data)
        return page(request, "product.html.j2", {"d": data, "title": data["product"]})

    async def changes(request: Request) -> Response:
        since_txt = request.query_params.get("since")
        until_txt = request.query_params.get("until")
        query = Q.parse_query(request.query_params)
        limit = min(Q._int(request.query_params.get("limit"), "limit", 500), 5000)

        data = await run(Q.changes_page, query, since_txt, until_txt, limit, indexed=True)
        data["filters"] = query.describe()
        if wants_json(request):
            return JSON(data)
        return page(
            request,
            "changes.html.j2",
            {
                "data": data,
                "query": query,
                "params": query.params(),
                "kinds": KINDS,
                "title": "Changes",
            },
        )

    async def export(request: Request) -> Response:
        fmt = request.query_params.get("format", "csv")
        if fmt not in Q.EXPORT_FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}", hint="Use csv, xlsx or parquet.")
        query = Q.parse_query(request.query_params)
        df = await run(Q.export_frame, query)
        body = await anyio.to_thread.run_sync(Q.export_bytes, df, fmt, limiter=limiter)
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        return Response(
            body,
            media_type=Q.EXPORT_FORMATS[fmt],
            headers={"Content-Disposition": f'attachment; filename="celltrials-{stamp}.{fmt}"'},
        )

    async def status(request: Request) -> Response:
        with contextlib.suppress(CelltrialsError):
            mgr.current()  # also checks whether the store changed
        info = {k: v for k, v in mgr.status.info.items() if k not in ("shadows", "index")}
        return JSON({**mgr.status.to_dict(), "snapshot": info, "version": __version__})

    # ------------------------------------------------------------- errors
    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            code, msg, hint = exc.status_code, str(exc.detail), ""
        elif isinstance(exc, CelltrialsError):
            code = 400 if isinstance(exc, ConfigError) else 503
            msg, hint = exc.message, exc.hint
        else:
            log.exception("error serving %s", request.url.path)
            code, msg, hint = (
                500,
                "Internal error: the dashboard could not answer this request.",
                "The server log has the details.",
            )
        if wants_json(request):
            return JSON({"error": msg, "hint": hint, "status": code}, status_code=code)
        return page(
            request,
            "error.html.j2",
            {"code": code, "message": msg, "hint": hint, "title": "Error"},
            status=code,
        )

    routes = [
        Route("/", overview),
        Route("/api/", overview),
        Route("/api/overview", overview),
        Route("/trials", trials),
        Route("/api/trials", trials),
        Route("/trials/{trial_id:path}", trial),
        Route("/api/trials/{trial_id:path}", trial),
        Route("/products", products),
        Route("/api/products", products),
        Route("/products/{name:path}", product),
        Route("/api/products/{name:path}", product),
        Route("/changes", changes),
        Route("/api/changes", changes),
        Route("/export", export),
        Route("/api/export", export),
        Route("/api/status", status),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [
        Middleware(
            _Guard, token=config.token, allowed_hosts=config.allowed_hosts, on_error=on_error
        )
    ]

    async def plotly(request: Request) -> Response:
        from plotly.offline import get_plotlyjs  # noqa: PLC0415 - heavy optional dependency, imported on first use

        return Response(
            get_plotlyjs(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes.insert(0, Route("/static/plotly.min.js", plotly))
    routes.insert(0, Route("/favicon.ico", favicon))

    def startup() -> None:
        for name in env.list_templates():  # compiled once, before the first request
            env.get_template(name)
        if mgr._current is None:
            mgr.start()
            mgr.wait_warm()  # ready means the landing pages are answered too

    def shutdown() -> None:
        if own_manager:
            mgr.close()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await anyio.to_thread.run_sync(startup)
        try:
            yield
        finally:
            shutdown()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={CelltrialsError: on_error, HTTPException: on_error},
    )
    app.state.manager = mgr
    return app


def _nav(path: str) -> str:
    for prefix, name in (("/trials", "trials"), ("/products", "products"), ("/changes", "changes")):
        if path.startswith(prefix):
            return name
    return "overview"


class _Guard(BaseHTTPMiddleware):
    """Host check (DNS rebinding), optional token, security headers."""

    def __init__(
        self,
        app: Any,
        token: str | None,
        allowed_hosts: tuple[str, ...],
        on_error: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        super().__init__(app)
        self.on_error = on_error
        self.token = token
        self.allowed = {h.lower() for h in allowed_hosts}

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = (request.headers.get("host") or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.allowed and hostname not in self.allowed and "*" not in self.allowed:
            return Response("Host not allowed", status_code=400, media_type="text/plain")
        if self.token:
            given = (
                request.query_params.get("token")
                or request.cookies.get(TOKEN_COOKIE)
                or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            )
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return Response(
                    "An access token is required (?token=… once, or Authorization: Bearer …).",
                    status_code=401,
                    media_type="text/plain",
                )
            if request.query_params.get("token"):
                # move the token into a cookie and drop it from the URL
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                resp: Response = RedirectResponse(
                    request.url.path + (("?" + urlencode(rest)) if rest else ""), status_code=303
                )
                resp.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return resp
        try:
            response = await call_next(request)
        except Exception as exc:  # never a traceback to the client
            response = await self.on_error(request, exc)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response


def new_token() -> str:
    return secrets.token_urlsafe(24)


def trial_href(trial_id: str) -> str:
    return "/trials/" + quote(trial_id, safe="")


__all__ = ["ServeConfig", "create_app", "new_token"]
