"""The read-only web viewer over an atlas: FastAPI routes, Jinja2 pages and a JSON API.

Pages: ``/`` (model and layers) -> ``/layer/{layer}`` (thumbnail grid, paginated, lazy-loaded) ->
``/layer/{layer}/unit/{unit}`` (every artifact, previous/next), ``/search?q=``, ``/explain`` (upload an image,
see an attribution panel computed on the fly; nothing is written). ``/api/...`` returns the same views as
JSON. Artifacts are served by numeric id from the database only; no URL ever names a file.
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
from ..atlas.store import AtlasStore
from . import views
from .explain import Explainer, UploadError

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
_MIME = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                         b"script-src 'self'; form-action 'self'; frame-ancestors 'none'")]


class _SecurityHeaders:
    """Pure ASGI middleware adding security headers to every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _parse_int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise NotInAtlas(f"{what} must be a number, got {text[:40]!r}")
    return int(text)


def create_app(atlas: str | Path | AtlasStore, *, model=None, explain: bool = True,
               max_upload_bytes: int = 8 * 1024 * 1024, max_pixels: int = 40_000_000,
               page_size: int = views.PAGE_SIZE) -> FastAPI:
    """The viewer application for the atlas at ``atlas`` (opened read-only).

    Args:
        atlas: an atlas folder or an open :class:`~cnnscope.atlas.AtlasStore`.
        model: the model of the explain page, a ``LoadedModel`` or ``nn.Module`` (default: reloaded from the
            atlas's model name and weights on first use, and only if its fingerprint matches the atlas).
        explain: offer the "explain an image" page.
        max_upload_bytes: larger uploads get HTTP 413.
        max_pixels: images with more pixels get HTTP 413.
        page_size: units per layer page.

    Raises:
        AtlasError: no atlas at ``atlas`` or another schema version.
    """
    store = atlas if isinstance(atlas, AtlasStore) else AtlasStore(atlas, writable=False)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    static = {p.name: (p.read_bytes(), _MIME.get(p.suffix, "application/octet-stream"))
              for p in STATIC.iterdir() if p.is_file() and not p.name.startswith(".")}
    explainer = Explainer(store, model=model, enabled=explain, max_bytes=max_upload_bytes, max_pixels=max_pixels)
    app = FastAPI(title="cnnscope atlas", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.explainer = explainer
    def render(name: str, status: int = 200, **ctx) -> HTMLResponse:
        model_desc = store.get_meta("model", {}) or {}
        html = env.get_template(name).render(model_name=model_desc.get("name", "model"), nav_layers=store.layer_names(),
                                             explain_enabled=explain, **ctx)
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

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, exc: AtlasError) -> Response:
        return error(request, 500, str(exc))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> Response:
        if is_api(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return render("explain.html", status=exc.status, error=exc.message, **explainer.form())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
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
        return render("model.html", v=views.model_view(store))

    @app.get("/layer/{layer}", response_class=HTMLResponse)
    async def layer_page(layer: str, page: str = "1") -> Response:
        return render("layer.html", v=views.layer_view(store, layer, _parse_int(page, "page"), page_size))

    @app.get("/layer/{layer}/unit/{unit}", response_class=HTMLResponse)
    async def unit_page(layer: str, unit: str) -> Response:
        return render("unit.html", v=views.unit_view(store, layer, _parse_int(unit, "unit")))

    @app.get("/search", response_class=HTMLResponse)
    async def search_page(q: str = "") -> Response:
        v = views.search_view(store, q[:200])
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
        etag = f'"{rec.sha256}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
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
    async def api_layer(layer: str, page: str = "1") -> dict:
        return views.layer_view(store, layer, _parse_int(page, "page"), page_size)

    @app.get("/api/layers/{layer}/units/{unit}")
    async def api_unit(layer: str, unit: str) -> dict:
        return views.unit_view(store, layer, _parse_int(unit, "unit"))

    @app.get("/api/artifacts/{artifact_id}")
    async def api_artifact(artifact_id: str) -> dict:
        rec = store.artifact(_parse_int(artifact_id, "artifact id"))
        return rec.to_dict() | {"url": views.artifact_url(rec.id) if rec.size else None}

    @app.get("/api/search")
    async def api_search(q: str = "") -> Response:
        v = views.search_view(store, q[:200])
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
        return {"ok": True, "units": store.summary()["units"]}

    app.add_middleware(_SecurityHeaders)
    return app


def _suggest(store: AtlasStore, message: str) -> list[dict]:
    """Links for a 404 page: the layers named in its did-you-mean part first, then the others (12 at most)."""
    names = store.layer_names()
    hint = re.search(r"did you mean:? (.*?)\?", message)
    said = hint.group(1).split(", ") if hint else []
    named = [n for n in names if n in said]
    return [{"label": n, "url": views.layer_url(n)} for n in (named + [n for n in names if n not in named])[:12]]
