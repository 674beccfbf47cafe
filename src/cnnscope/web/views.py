"""What each page shows, as JSON-ready dicts: the HTML templates and the JSON API render the same views."""

from __future__ import annotations

import math
import re
from urllib.parse import quote

from ..atlas.kinds import list_kinds
from ..atlas.records import ArtifactRecord, NotInAtlas, format_units
from ..atlas.store import AtlasStore
from ..errors import close_matches

PAGE_SIZE = 48


def layer_url(layer: str) -> str:
    return f"/layer/{quote(layer, safe='')}"


def unit_url(layer: str, unit: int) -> str:
    return f"/layer/{quote(layer, safe='')}/unit/{int(unit)}"


def artifact_url(artifact_id: int) -> str:
    return f"/artifact/{int(artifact_id)}"


def kind_table(store: AtlasStore) -> dict[str, dict]:
    """``kind -> {"title", "order", "thumbnail", "artifacts": [[name, MIME type], ...]}``.

    What the atlas recorded of its kinds when it was built (so kinds this process does not know are shown too),
    else what the registry says.
    """
    table = {k.name: k.describe() for k in list_kinds()}
    table.update(store.get_meta("kind_info", {}) or {})
    return table


def _kind(table: dict[str, dict], name: str) -> dict:
    return table.get(name) or {"title": name, "order": 1000, "thumbnail": None, "artifacts": []}


def model_view(store: AtlasStore) -> dict:
    """The model page: description, build settings and the layers with their unit counts."""
    meta = store.meta()
    kinds = kind_table(store)
    return {
        "model": meta.get("model") or {},
        "fingerprint": meta.get("fingerprint"),
        "options": meta.get("options") or {},
        "kinds": [{"name": k, "title": _kind(kinds, k)["title"]} for k in meta.get("kinds") or []],
        "images": meta.get("images"),
        "cnnscope_version": meta.get("cnnscope_version"),
        "schema_version": meta.get("schema_version"),
        "summary": store.summary() | {"root": store.root.name},
        "layers": [rec.to_dict() | {"url": layer_url(rec.name)} for rec in store.layers()],
    }


def thumbnail_source(store: AtlasStore, layer: str) -> tuple[str, str] | None:
    """``(kind, name)`` of the artifact shown as a unit's thumbnail on the layer page."""
    present = set(store.kinds_present())
    table = kind_table(store)
    units = store.units(layer)[:1]
    for name in sorted(present, key=lambda k: (_kind(table, k)["order"], k)):
        thumb = _kind(table, name)["thumbnail"]
        if thumb and units and store.thumbnails(layer, name, thumb, units):
            return name, thumb
    return None


def layer_view(store: AtlasStore, layer: str, page: int = 1, page_size: int = PAGE_SIZE) -> dict:
    """The layer page: one page of its built units with thumbnail URLs (raises :class:`NotInAtlas`)."""
    rec = store.layer(layer)
    units = store.units(layer)
    pages = max(1, math.ceil(len(units) / page_size))
    if not 1 <= page <= pages:
        raise NotInAtlas(f"layer {layer!r} has {pages} page(s) of units; page {page} does not exist")
    shown = units[(page - 1) * page_size: page * page_size]
    source = thumbnail_source(store, layer)
    thumbs = store.thumbnails(layer, source[0], source[1], shown) if source else {}
    return {
        "layer": rec.to_dict() | {"url": layer_url(rec.name)},
        "built_units": format_units(units),
        "pending": len(set(rec.planned) - set(units)),
        "page": page, "pages": pages, "page_size": page_size,
        "prev_page": page - 1 if page > 1 else None, "next_page": page + 1 if page < pages else None,
        "thumbnail": {"kind": source[0], "name": source[1]} if source else None,
        "units": [{"unit": u, "url": unit_url(layer, u),
                   "thumbnail": artifact_url(thumbs[u]) if u in thumbs else None} for u in shown],
    }


def _artifact(rec: ArtifactRecord) -> dict:
    """The record plus its URL and how the unit page shows it: ``"image"`` (a picture the page embeds),
    ``"file"`` (other bytes, linked), ``"numbers"`` (numbers only) or ``"examples"`` (a contact sheet of dataset
    examples, shown tile by tile with captions, see :func:`example_tiles`)."""
    url = artifact_url(rec.id) if rec.size else None
    show = "numbers" if url is None else "image" if rec.mime.startswith("image/") else "file"
    out = rec.to_dict() | {"url": url, "show": show}
    tiles = example_tiles(rec.numbers) if show in ("image", "numbers") else None
    if tiles is not None:
        nums = rec.numbers
        out |= {"show": "examples" if url else "numbers", "tiles": tiles if url else [],
                "note": nums.get("note") or "", "which": nums.get("which") or rec.name}
    return out


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _pixels(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def example_tiles(numbers: object) -> list[dict] | None:
    """The tiles of a dataset-examples sheet, read from its numbers (``{"sheet_size": [width, height], "examples":
    [{"value", "name", "label", "cell": [top, left, height, width], "box", ...}]}``): each with its caption parts
    and the SVG ``viewBox`` that shows its cell of the sheet. ``None`` when the numbers do not describe a sheet (a
    malformed entry leaves the whole artifact to the plain picture view rather than showing a tile at the wrong
    place)."""
    if not isinstance(numbers, dict) or not isinstance(numbers.get("examples"), list):
        return None
    sheet = numbers.get("sheet_size")
    sized = isinstance(sheet, list) and len(sheet) == 2 and all(_pixels(v) for v in sheet)
    if numbers["examples"] and not sized:
        return None
    tiles = []
    for ex in numbers["examples"]:
        if not isinstance(ex, dict):
            return None
        cell, value = ex.get("cell"), _number(ex.get("value"))
        if value is None or not isinstance(cell, list) or len(cell) != 4 or not all(_pixels(c) for c in cell):
            return None
        top, left, h, w = cell
        if top + h > sheet[1] or left + w > sheet[0]:
            return None
        label = ex.get("label")
        tiles.append({"value": value, "value_text": f"{value:.4g}", "name": str(ex.get("name", "")),
                      "label": str(label) if label is not None else None,
                      "image_id": ex.get("image_id"), "box": ex.get("box"), "size": [w, h],
                      "viewbox": f"{left} {top} {w} {h}", "sheet": list(sheet)})
    return tiles


def unit_view(store: AtlasStore, layer: str, unit: int) -> dict:
    """The unit page: every artifact grouped by kind (page order), previous/next units (raises NotInAtlas)."""
    rec = store.require_unit(layer, unit)
    prev, nxt = store.neighbors(layer, unit)
    kinds = kind_table(store)

    def section(kind: str) -> dict:
        info = _kind(kinds, kind)
        return {"kind": kind, "title": info["title"], "order": info["order"], "artifacts": []}

    sections: dict[str, dict] = {}
    for a in store.artifacts(layer, unit):
        sections.setdefault(a.kind, section(a.kind))["artifacts"].append(_artifact(a))
    for sec in sections.values():  # in the order the kind declares its artifacts
        declared = [name for name, _ in _kind(kinds, sec["kind"])["artifacts"]]
        sec["artifacts"].sort(key=lambda a: declared.index(a["name"]) if a["name"] in declared else len(declared))
    links = _circuit_links(store, sections)
    for kind, why in (store.get_meta("not_applicable", {}) or {}).get(layer, {}).items():
        sections[kind] = section(kind) | {"not_applicable": why}

    def nav(item: tuple[str, int] | None) -> dict | None:
        return None if item is None else {"layer": item[0], "unit": item[1], "url": unit_url(*item)}

    return {
        "layer": rec.to_dict() | {"url": layer_url(rec.name)},
        "unit": int(unit), "url": unit_url(layer, unit),
        "prev": nav(prev), "next": nav(nxt),
        "sections": sorted(sections.values(), key=lambda s: (s["order"], s["kind"])),
        "links": links,
    }


def _circuit_links(store: AtlasStore, sections: dict[str, dict]) -> list[dict]:
    """Units named in a circuit artifact's numbers (``{"inputs": [{"layer", "unit", ...}]}``) that the atlas has."""
    out = []
    for sec in sections.values():
        for a in sec["artifacts"]:
            nums = a.get("numbers")
            if not isinstance(nums, dict) or not isinstance(nums.get("inputs"), list):
                continue
            for item in nums["inputs"]:
                if isinstance(item, dict) and isinstance(item.get("layer"), str) and isinstance(item.get("unit"), int):
                    if store.has_unit(item["layer"], item["unit"]):
                        out.append({"layer": item["layer"], "unit": item["unit"],
                                    "url": unit_url(item["layer"], item["unit"])})
    return out


_QUERY = re.compile(r"^\s*(?P<layer>[^\s:/#]+?)?\s*(?:[\s:/#]+\s*(?P<unit>\d+))?\s*$", re.ASCII)


def search_view(store: AtlasStore, query: str) -> dict:
    """Resolve a search box entry: ``LAYER``, ``LAYER:UNIT``, ``LAYER UNIT``, ``LAYER/UNIT`` or a unit number.

    Returns ``{"query", "redirect" (URL or None), "matches" [{"label", "url"}], "found", "message"}``;
    ``found`` is false when the matches are only suggestions (close spellings, nearby units).
    """
    q = (query or "").strip()
    layers = [rec.name for rec in store.layers()]
    out: dict = {"query": q, "redirect": None, "matches": [], "found": False, "message": ""}
    if not q:
        out["message"] = "type a layer name, optionally with a unit: blocks.4.0:12"
        return out
    m = _QUERY.match(q)
    layer, unit = (m.group("layer"), m.group("unit")) if m else (q, None)
    # a bare unit number (ASCII digits only: '٣' is not 3): that unit in every layer
    if layer is not None and layer.isascii() and layer.isdigit() and unit is None:
        u = int(layer)
        hits = [name for name in layers if store.has_unit(name, u)]
        out["matches"] = [{"label": f"{name}:{u}", "url": unit_url(name, u)} for name in hits]
        out["found"] = bool(hits)
        if len(hits) == 1:
            out["redirect"] = out["matches"][0]["url"]
        out["message"] = "" if hits else f"no layer of this atlas has unit {u} built"
        return out
    candidates = [layer] if layer in layers else [n for n in layers if layer and n.startswith(layer)]
    if len(candidates) != 1:
        near = candidates or close_matches(layer or "", layers)
        out["matches"] = [{"label": n, "url": layer_url(n)} for n in near]
        out["found"] = bool(candidates)
        if candidates:
            out["message"] = f"{len(near)} layers match {layer!r}"
        else:
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            out["message"] = f"no layer {layer!r} in this atlas{hint}"
        return out
    name = candidates[0]
    out["found"] = unit is None or store.has_unit(name, int(unit))
    if out["found"]:
        out["redirect"] = layer_url(name) if unit is None else unit_url(name, int(unit))
        return out
    built = store.units(name)
    out["message"] = f"unit {unit} of {name} is not in this atlas (built: {format_units(built) or 'none'})"
    out["matches"] = [{"label": f"{name}:{u}", "url": unit_url(name, u)}
                      for u in sorted(built, key=lambda v: abs(v - int(unit)))[:5]]
    return out
