"""The read-only web viewer over an atlas: FastAPI routes, Jinja2 pages and a JSON API.

Pages: ``/`` (model and layers) -> ``/layer/{layer}`` (thumbnail grid, paginated, lazy-loaded) ->
``/layer/{layer}/unit/{unit}`` (every artifact, previous/next), ``/search?q=``, ``/explain`` (upload an image,
see an attribution panel computed on the fly; nothing is written). ``/api/...`` returns the same views as
JSON. Artifacts are served by numeric id from the database only; no URL ever names a file, and only as images
or JSON, sandboxed. Requests must name the server (``Host``: the bound address or a configured name) and POSTs
must come from the viewer's own pages (docs/ARCHITECTURE.md, the web viewer).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..atlas.records import AtlasError, NotInAtlas
from ..atlas.store import SERVED_MIME, AtlasStore
from . import views
from .explain import MAX_QUEUE, Explainer, UploadError
from .labels import LabelError, LabelFileError

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
_MIME = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}
# referrer policy same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the explain form's
# POST, which the cross-origin check must refuse
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                         b"script-src 'self'; form-action 'self'; frame-ancestors 'none'")]
#: the policy of artifact bytes opened on their own: nothing runs, nothing loads (``sandbox``)
ARTIFACT_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_DIGITS = re.compile(r"[0-9]{1,9}")


def _host_name(value: str) -> str:
    """The name part of a ``Host`` or origin authority, lower case: ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Guard:
    """Pure ASGI middleware: refuses requests whose ``Host`` is not the address the connection reached or a
    configured name (DNS rebinding), refuses cross-origin POSTs, and adds security headers to every response."""

    def __init__(self, app, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = _host_name(host)
        bound = _host_name(str((scope.get("server") or ("",))[0] or ""))
        allowed = self.allowed_hosts | {bound} | (_LOOPBACK if bound in _LOOPBACK else set())
        if not name or name not in allowed:
            return 400, (f"this server does not answer to the host name {host[:80]!r}; start it with --allow-host "
                         "NAME to use that name")
        if scope.get("method") == "POST":
            origin = headers.get("origin")
            if headers.get("sec-fetch-site") == "cross-site" or (origin is not None and origin.split("://", 1)[-1]
                                                                  .lower() != host.lower()):
                return 403, "cross-origin POST refused: send forms from this viewer's own pages"
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused:
            body = refused[1].encode()
            await send({"type": "http.response.start", "status": refused[0],
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())] + _HEADERS})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                own = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in _HEADERS if h[0] not in own]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _parse_int(text: str, what: str) -> int:
    """An id or page number from a URL: ASCII digits only (``²``, ``٣`` and ``３`` are not numbers here)."""
    if not _DIGITS.fullmatch(text):
        raise NotInAtlas(f"{what} must be a number (digits 0-9), got {text[:40]!r}")
    return int(text)


def _non_ascii_digits(text: str) -> bool:
    return any(c.isdigit() and not c.isascii() for c in text)


def create_app(atlas: str | Path | AtlasStore, *, model=None, explain: bool = True,
               max_upload_bytes: int = 8 * 1024 * 1024, max_pixels: int = 40_000_000,
               page_size: int = views.PAGE_SIZE, allowed_hosts: tuple[str, ...] = (),
               explain_queue: int = MAX_QUEUE, annotate: str | Path | None = None) -> FastAPI:
    """The viewer application for the atlas at ``atlas`` (opened read-only).

    Args:
        atlas: an atlas folder or an open :class:`~cnnscope.atlas.AtlasStore`.
        model: the model of the explain page, a ``LoadedModel`` or ``nn.Module`` (default: reloaded from the
            atlas's model name and weights on first use, and only if its fingerprint matches the atlas).
        explain: offer the "explain an image" page.
        max_upload_bytes: larger uploads get HTTP 413.
        max_pixels: images with more pixels get HTTP 413.
        page_size: units per layer page.
        explain_queue: explanations running or waiting at once; more requests get HTTP 429 with ``Retry-After``.
        allowed_hosts: host names the server answers to besides the address a request reached (and, on a
            loopback address, ``localhost``); requests naming any other ``Host`` get HTTP 400.
        annotate: a labels file (SQLite, outside the atlas folder, created when missing): unit pages then offer a
            label and note form, search finds labels, the layer page filters labelled units
            (:mod:`cnnscope.web.labels`). Without it nothing can be written.

    Raises:
        AtlasError: no atlas at ``atlas`` or another schema version.
    """
    store = atlas if isinstance(atlas, AtlasStore) else AtlasStore(atlas, writable=False)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    static = {p.name: (p.read_bytes(), _MIME.get(p.suffix, "application/octet-stream"))
              for p in STATIC.iterdir() if p.is_file() and not p.name.startswith(".")}
    explainer = Explainer(store, model=model, enabled=explain, max_bytes=max_upload_bytes, max_pixels=max_pixels,
                          max_queue=explain_queue)
    app = FastAPI(title="cnnscope atlas", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    labels = None
    if annotate is not None:
        from .label_routes import label_router
        from .labels import LabelStore

        labels = LabelStore(annotate, atlas_root=store.root, fingerprint=store.get_meta("fingerprint"))
    app.state.store = store
    app.state.explainer = explainer
    app.state.labels = labels
    def render(name: str, status: int = 200, **ctx) -> HTMLResponse:
        model_desc = store.get_meta("model", {}) or {}
        html = env.get_template(name).render(model_name=model_desc.get("name", "model"), nav_layers=store.layer_names(),
                                             explain_enabled=explain, annotate=labels is not None, **ctx)
        return HTMLResponse(html, status_code=status)

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error(request: Request, status: int, message: str, matches: list | None = None) -> Response:
        if is_api(request):
            return JSONResponse({"detail": message, "matches": matches or []}, status_code=status)
        return render("error.html", status=status, status_code=status, message=message, matches=matches or [])

    @app.exception_handler(NotInAtlas)
    async def not_in_atlas(request: Request, exc: NotInAtlas) -> Response:
        return error(request, 404, str(exc), _suggest(store, str(exc)))

    @app.exception_handler(views.BadQuery)
    async def bad_query(request: Request, exc: views.BadQuery) -> Response:
        return error(request, 400, str(exc))

    @app.exception_handler(LabelError)
    async def label_error(request: Request, exc: LabelError) -> Response:
        return error(request, 503 if isinstance(exc, LabelFileError) else 400, str(exc))

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, exc: AtlasError) -> Response:
        return error(request, 500, str(exc))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if is_api(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)
        page = render("explain.html", status=exc.status, error=exc.message, **explainer.form())
        page.headers.update(headers or {})
        return page

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and exc.detail in (None, "", "Not Found"):  # no route: a generic message
            return error(request, 404, f"nothing at {request.url.path[:200]}; start from the model page")
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return error(request, 400, "bad request: " + "; ".join(str(e.get("msg")) for e in exc.errors()[:3]))

    # Page, API and artifact handlers are coroutines: each is a few sub-millisecond SQLite reads (WAL readers never
    # wait for a build's commits) plus a template, cheaper on the event loop than a hop to a worker thread.
    # Only the explain computation runs in a worker thread.

    # -- HTML pages ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def model_page() -> Response:
        return render("model.html", v=views.model_view(store), skipped=store.get_meta("skipped_images") or [],
                      n_skipped=store.get_meta("n_skipped_images") or 0)

    def layer_v(layer: str, page: str, sort: str, order: str, show: str) -> dict:
        return views.layer_view(store, layer, _parse_int(page, "page"), page_size, sort=sort, order=order,
                                show=show, labels=labels.for_layer(layer) if labels is not None else None)

    def unit_v(layer: str, unit: str) -> dict:
        u = _parse_int(unit, "unit")
        v = views.unit_view(store, layer, u, label=(labels.get(layer, u) or {}) if labels is not None else None)
        if labels is not None:  # the band examples to label (units built with the bands kind)
            from .label_routes import example_label_panel

            v["bands_panel"] = example_label_panel(store, labels, layer, u)
        return v

    @app.get("/layer/{layer}", response_class=HTMLResponse)
    async def layer_page(layer: str, page: str = "1", sort: str = "unit", order: str = "", show: str = "all"
                         ) -> Response:
        return render("layer.html", v=layer_v(layer, page, sort, order, show))

    @app.get("/layer/{layer}/unit/{unit}", response_class=HTMLResponse)
    async def unit_page(layer: str, unit: str) -> Response:
        return render("unit.html", v=unit_v(layer, unit))

    @app.get("/image/{image_id}", response_class=HTMLResponse)
    async def image_page(image_id: str, layer: str | None = None, unit: str | None = None,
                         which: str | None = None) -> Response:
        return render("image.html", v=image_v(image_id, layer, unit, which))

    def image_v(image_id: str, layer: str | None, unit: str | None, which: str | None) -> dict:
        if (layer is None) != (unit is None):
            raise views.BadQuery("an image page takes layer and unit together (the unit whose examples it shows)")
        u = None if unit is None else _parse_int(unit, "unit")
        return views.image_view(store, _parse_int(image_id, "image id"), layer if u is not None else None, u,
                                which if which in ("top", "bottom") else None)

    @app.get("/image/{image_id}/picture")
    async def image_bytes(image_id: str, request: Request) -> Response:
        info, data = store.image(_parse_int(image_id, "image id"))
        if info["mime"] not in SERVED_MIME or info["mime"] == "application/json":
            raise StarletteHTTPException(415, f"image {info['id']} is stored as {info['mime'][:60]!r}, which the "
                                              "viewer does not serve")
        etag = f'"{info["sha256"]}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Content-Security-Policy": ARTIFACT_CSP}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=info["mime"], headers=headers)

    @app.get("/search", response_class=HTMLResponse)
    async def search_page(q: str = "") -> Response:
        v = _search(store, q, labels)
        if v["redirect"]:
            return RedirectResponse(v["redirect"], status_code=303)
        return render("search.html", status=200 if v["found"] or not q else 404, v=v)

    @app.get("/explain", response_class=HTMLResponse)
    async def explain_form() -> Response:
        return render("explain.html", **explainer.form())

    @app.post("/explain", response_class=HTMLResponse)
    async def explain_post(request: Request) -> Response:
        result = await explainer.handle(request)
        png = base64.b64encode(result.pop("panel_png")).decode("ascii")
        return render("explain.html", result=result, panel=f"data:image/png;base64,{png}", **explainer.form())

    # -- bytes --------------------------------------------------------------------------------------
    @app.get("/artifact/{artifact_id}")
    async def artifact(artifact_id: str, request: Request) -> Response:
        rec, data = store.artifact_bytes(_parse_int(artifact_id.removesuffix(".png"), "artifact id"))
        if not data:
            raise NotInAtlas(f"artifact {rec.id} is numbers only; see /api/artifacts/{rec.id}")
        if rec.mime not in SERVED_MIME:
            raise StarletteHTTPException(415, f"artifact {rec.id} is stored as {rec.mime[:60]!r}, which the viewer "
                                              "does not serve (images and JSON only); check the atlas with "
                                              "`cnnscope atlas info --check`")
        etag = f'"{rec.sha256}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Content-Security-Policy": ARTIFACT_CSP}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=rec.mime, headers=headers)

    @app.get("/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in static:  # a fixed set read at start-up: no path from the URL reaches the disk
            raise NotInAtlas(f"no static file {name[:80]!r}")
        data, mime = static[name]
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=600"})

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(static["favicon.svg"][0], media_type="image/svg+xml")

    # -- JSON API -----------------------------------------------------------------------------------
    @app.get("/api/model")
    async def api_model() -> dict:
        return views.model_view(store)

    @app.get("/api/layers")
    async def api_layers() -> list:
        return views.model_view(store)["layers"]

    @app.get("/api/layers/{layer}")
    async def api_layer(layer: str, page: str = "1", sort: str = "unit", order: str = "", show: str = "all"
                        ) -> dict:
        return layer_v(layer, page, sort, order, show)

    @app.get("/api/layers/{layer}/units/{unit}")
    async def api_unit(layer: str, unit: str) -> dict:
        return unit_v(layer, unit)

    @app.get("/api/images/{image_id}")
    async def api_image(image_id: str, layer: str | None = None, unit: str | None = None,
                        which: str | None = None) -> dict:
        return image_v(image_id, layer, unit, which)

    @app.get("/api/artifacts/{artifact_id}")
    async def api_artifact(artifact_id: str) -> dict:
        rec = store.artifact(_parse_int(artifact_id, "artifact id"))
        return rec.to_dict() | {"url": views.artifact_url(rec.id) if rec.size else None}

    @app.get("/api/search")
    async def api_search(q: str = "") -> Response:
        v = _search(store, q, labels)
        return JSONResponse(v, status_code=200 if v["found"] or not q else 404)

    @app.get("/api/explain")
    async def api_explain_info() -> dict:
        return explainer.form()

    @app.post("/api/explain")
    async def api_explain(request: Request) -> dict:
        result = await explainer.handle(request)
        result["panel_png_base64"] = base64.b64encode(result.pop("panel_png")).decode("ascii")
        return result

    @app.get("/api/health")
    async def health() -> dict:
        return {"ok": True, "units": store.summary()["units"], "explain": explainer.queue_state()}

    if labels is not None:
        app.include_router(label_router(labels, store))
    app.add_middleware(_Guard, allowed_hosts=frozenset(_host_name(h) for h in allowed_hosts))
    return app


def _search(store: AtlasStore, query: str, labels=None) -> dict:
    """The search view; a query with digits other than 0-9 finds nothing (``٣`` is not unit 3). In annotate mode
    units whose label or note holds the query are listed too (``"labelled"``), and a layer/unit query that finds
    nothing else but labels is found."""
    q = query[:200]
    if _non_ascii_digits(q):
        return {"query": q.strip(), "redirect": None, "matches": [], "found": False, "labelled": [],
                "message": "unit numbers are written with the digits 0-9"}
    v = views.search_view(store, q)
    v["labelled"] = []
    if labels is not None and q.strip():
        v["labelled"] = [{"label": f"{h['layer']}:{h['unit']} {h['label']}", "note": h.get("note") or "",
                          "url": views.unit_url(h["layer"], h["unit"])}
                         for h in labels.search(q.strip(), limit=50) if store.has_unit(h["layer"], h["unit"])]
        if v["labelled"] and not v["found"]:
            v.update(found=True, redirect=None, message=f"{len(v['labelled'])} labelled unit(s) match {q.strip()!r}")
    return v


def _suggest(store: AtlasStore, message: str) -> list[dict]:
    """Links for a 404 page: the layers named in its did-you-mean part first, then the others (12 at most)."""
    names = store.layer_names()
    hint = re.search(r"did you mean:? (.*?)\?", message)
    said = hint.group(1).split(", ") if hint else []
    named = [n for n in names if n in said]
    return [{"label": n, "url": views.layer_url(n)} for n in (named + [n for n in names if n not in named])[:12]]
