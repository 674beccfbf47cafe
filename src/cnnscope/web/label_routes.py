"""The viewer's ``/api/labels`` routes over a :class:`~cnnscope.web.labels.LabelStore` (annotate mode), and what the
unit page shows to label a unit's band examples (:func:`example_label_panel`).

Unit numbers in URLs are ASCII digits only, the unit must be built in the atlas (404 otherwise), bodies are capped at
:data:`~cnnscope.web.labels.MAX_BODY` (413), bad text is 400; POSTs pass the viewer's cross-origin guard
(docs/atlas.md, labels and notes).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..atlas.store import AtlasStore
from . import views
from .labels import EXPORT_FORMATS, MAX_BODY, LabelError, LabelFileError, LabelStore


def label_router(labels: LabelStore, store: AtlasStore) -> APIRouter:
    """The annotate-mode routes of the viewer over ``labels`` for the atlas ``store``.

    ``GET /api/labels`` (JSON list; ``?format=csv`` a CSV download; ``?q=`` a search), ``GET /api/labels/{layer}/
    {unit}`` and ``POST /api/labels/{layer}/{unit}`` (form fields ``label`` and ``note``; a missing field keeps its
    value, both empty delete the entry). A POST answers 303 to the unit page, or JSON when the request accepts
    ``application/json``. Units must be built in the atlas (404 otherwise); bad text gets 400, a body over
    :data:`MAX_BODY` bytes 413.

    Example labels: ``GET /api/labels/examples`` (every example label; ``?format=csv`` a CSV download),
    ``GET /api/labels/{layer}/{unit}/examples`` (the unit's example labels, the suggested labels and, when the atlas
    has the ``bands`` kind, :func:`example_label_panel`), ``GET /api/labels/{layer}/{unit}/examples/figure.png``
    (the report's figure, 404 until some band example is labelled) and ``POST /api/labels/{layer}/{unit}/examples``
    (fields ``image_id``, ``y``, ``x``, ``label`` and optionally ``name``, as a form or a JSON object; an empty label
    deletes; the same answers, limits and errors as a unit label).
    """
    from .app import _parse_int  # here, not at the top: the app imports this module

    router = APIRouter()

    def answer(fn: Callable[..., Any], *args: object) -> Any:
        """``fn(*args)``; a bad label is HTTP 400, a labels file that cannot be used now 503."""
        try:
            return fn(*args)
        except LabelError as exc:
            raise HTTPException(503 if isinstance(exc, LabelFileError) else 400, str(exc)) from None

    def unit_of(layer: str, unit: str) -> int:
        u = _parse_int(unit, "unit")
        store.require_unit(layer, u)  # NotInAtlas (404) naming what exists
        return u

    @router.get("/api/labels")
    def api_labels(format: str = "json", q: str = "") -> Response:
        if format not in EXPORT_FORMATS:
            raise HTTPException(400, f"unknown format {format[:20]!r}; use json or csv")
        if format == "csv":
            return Response(answer(labels.export, "csv"), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="labels.csv"'})
        return JSONResponse(answer(labels.search, q, 500) if q.strip() else answer(labels.all))

    @router.get("/api/labels/{layer}/{unit}")
    def api_label(layer: str, unit: str) -> dict:
        u = unit_of(layer, unit)
        entry = answer(labels.get, layer, u) or {"label": "", "note": "", "updated": None}
        return {"layer": layer, "unit": u, "url": views.unit_url(layer, u)} | entry

    @router.post("/api/labels/{layer}/{unit}")
    async def api_set_label(layer: str, unit: str, request: Request) -> Response:
        u = await run_in_threadpool(unit_of, layer, unit)
        fields = await _form_fields(request)
        entry = await run_in_threadpool(answer, labels.set, layer, u, fields.get("label"), fields.get("note"))
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"layer": layer, "unit": u, "url": views.unit_url(layer, u), "deleted": entry is None}
                                | (entry or {"label": "", "note": "", "updated": None}))
        return RedirectResponse(views.unit_url(layer, u), status_code=303)

    @router.get("/api/labels/examples")
    def api_example_export(format: str = "json") -> Response:
        if format not in EXPORT_FORMATS:
            raise HTTPException(400, f"unknown format {format[:20]!r}; use json or csv")
        text = answer(labels.export_examples, format)
        if format == "csv":
            return Response(text, media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="example-labels.csv"'})
        return Response(text, media_type="application/json")

    @router.get("/api/labels/{layer}/{unit}/examples")
    def api_example_labels(layer: str, unit: str) -> dict:
        from ..dataset.labels import SUGGESTED_LABELS

        u = unit_of(layer, unit)
        return {"layer": layer, "unit": u, "url": views.unit_url(layer, u), "suggested": list(SUGGESTED_LABELS),
                "labels": answer(labels.example_labels, layer, u),
                "panel": answer(example_label_panel, store, labels, layer, u)}

    @router.get("/api/labels/{layer}/{unit}/examples/figure.png")
    def api_example_figure(layer: str, unit: str) -> Response:
        from ..atlas.encode import figure_png
        from ..plot.labels import label_report_figure

        u = unit_of(layer, unit)
        report = answer(example_label_report, store, labels, layer, u)
        if report is None:
            raise HTTPException(404, f"no labelled band examples of {layer}:{u} yet; label some on the unit page "
                                     "(an atlas built with the bands kind)")
        return Response(figure_png(label_report_figure(report)), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @router.post("/api/labels/{layer}/{unit}/examples")
    async def api_set_example_label(layer: str, unit: str, request: Request) -> Response:
        u = await run_in_threadpool(unit_of, layer, unit)
        fields = await _form_fields(request, EXAMPLE_FIELDS, json_ok=True)
        missing = [k for k in ("image_id", "y", "x", "label") if k not in fields]
        if missing:
            raise HTTPException(400, f"send the fields image_id, y, x and label (missing: {', '.join(missing)})")
        numbers = {k: _field_number(k, fields[k]) for k in ("image_id", "y", "x")}
        entry = await run_in_threadpool(answer, labels.set_example, layer, u, numbers["image_id"], numbers["y"],
                                        numbers["x"], fields["label"], fields.get("name") or "")
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"layer": layer, "unit": u, "url": views.unit_url(layer, u), "deleted": entry is None}
                                | numbers | (entry or {"label": "", "name": fields.get("name") or "",
                                                      "updated": None}))
        return RedirectResponse(views.unit_url(layer, u), status_code=303)

    return router


#: fields of an example-label POST
EXAMPLE_FIELDS = ("image_id", "y", "x", "label", "name")


def _field_number(key: str, value: object) -> int:
    """An image id or grid coordinate from a form (ASCII digits) or JSON (an integer); HTTP 400 otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 16:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 16:
        return int(value.strip())
    raise HTTPException(400, f"{key} must be a number 0 or more (digits 0-9), got {str(value)[:40]!r}")


def example_label_report(store: AtlasStore, labels: LabelStore, layer: str, unit: int):
    """The :class:`~cnnscope.dataset.labels.LabelReport` of a unit's labelled band examples in the atlas, or ``None``
    when the atlas has no bands of the unit or none of their examples is labelled (coverage warnings are dropped:
    the report holds the coverage)."""
    from ..atlas.bands_kind import atlas_bands
    from ..dataset.labels import LabelDataError, label_report

    found = atlas_bands(store, layer, unit)
    given = {(e["image_id"], e["y"], e["x"]): e["label"] for e in labels.example_labels(layer, unit)}
    if found is None or not given:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return label_report(found[0], given, layer=layer, unit=unit)
        except LabelDataError:
            return None  # labels of positions that are not among these bands' samples


def example_label_panel(store: AtlasStore, labels: LabelStore | None, layer: str, unit: int) -> dict | None:
    """What the unit page shows to label a unit's examples per activation band, or ``None`` when the atlas has no
    ``bands`` artifact for the unit (build it with ``--kinds bands``).

    Returns:
        ``{"sheet": URL of the bands contact sheet, "sheet_size": [w, h], "pre_activation", "bands": [{"index",
        "low", "high", "count", "contribution", "examples": [{"image_id", "name", "y", "x", "value", "box", "cell":
        [top, left, h, w] in the sheet, "label": current label or ""}]}], "suggested": labels to offer, "report":
        :meth:`~cnnscope.dataset.labels.LabelReport.to_dict` without its examples once some example is labelled (else
        ``None``)}``.
    """
    from ..atlas.bands_kind import atlas_bands
    from ..dataset.labels import SUGGESTED_LABELS

    found = atlas_bands(store, layer, unit)
    if found is None:
        return None
    record = found[1]
    given = {(e["image_id"], e["y"], e["x"]): e["label"] for e in labels.example_labels(layer, unit)} \
        if labels is not None else {}
    shown = []
    for raw in record.numbers.get("bands", []):
        shown.append({k: raw.get(k) for k in ("index", "low", "high", "count", "contribution")}
                     | {"examples": [e | {"label": given.get((e["image_id"], e["y"], e["x"]), "")}
                                     for e in raw.get("examples", [])]})
    report = example_label_report(store, labels, layer, unit) if labels is not None and given else None
    if report is not None:
        report = report.to_dict()
        report.pop("examples", None)
    return {"sheet": f"/artifact/{record.id}" if record.mime.startswith("image/") else None,
            "sheet_size": record.numbers.get("sheet_size"), "pre_activation": record.numbers.get("pre_activation"),
            "bands": shown, "suggested": list(SUGGESTED_LABELS), "report": report}


async def _form_fields(request: Request, keys: tuple[str, ...] = ("label", "note"), *, json_ok: bool = False
                       ) -> dict[str, Any]:
    """The fields ``keys`` of a form POST (URL-encoded or multipart; with ``json_ok`` also a JSON object), the body
    capped at :data:`MAX_BODY`."""
    from .explain import read_capped

    body = await read_capped(request, MAX_BODY, lambda: HTTPException(413, f"a label POST is limited to {MAX_BODY:,} "
                                                                           "bytes"))
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=0, max_fields=8, max_part_size=MAX_BODY)
        except Exception as exc:  # noqa: BLE001 - multipart parser errors become one clear 400
            raise HTTPException(400, f"cannot read the form: {exc}") from None
        pairs = list(form.multi_items())
    elif kind == "application/json" and json_ok:
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPException(400, f"cannot read the JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPException(400, f"send a JSON object with the fields {', '.join(keys)}")
        pairs = [(k, v) for k, v in data.items() if k in keys]
    elif kind in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=8, errors="strict")
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPException(400, f"cannot read the form: {exc}") from None
    else:
        also = " or a JSON object" if json_ok else ""
        raise HTTPException(415, f"send the fields {' and '.join(keys)} as a form{also}, not {kind[:40]!r}")
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in keys:
            if key in fields or not (isinstance(value, str) or (kind == "application/json" and isinstance(value, int)
                                                                 and not isinstance(value, bool))):
                raise HTTPException(400, f"send one text field {key!r}")
            fields[key] = value
    if not fields:
        raise HTTPException(400, f"send the form fields {' and/or '.join(keys)}")
    return fields
