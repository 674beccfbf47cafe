"""What each page shows, as JSON-ready dicts: the HTML templates and the JSON API render the same views."""

from __future__ import annotations

import math
import re
from urllib.parse import quote

from ..atlas.kinds import list_kinds
from ..atlas.records import ArtifactRecord, AtlasError, NotInAtlas, format_units
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
        "graph": graph_view(store),
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


#: how a layer page can order its units: ``unit`` or a stored fact (``store.fact_names``)
SORT_FACTS = ("mean", "max", "fraction_positive")
#: which units a layer page shows
SHOW = ("all", "alive", "dead", "labelled")


class BadQuery(AtlasError):
    """A query parameter the page cannot use (HTTP 400)."""


def layer_view(store: AtlasStore, layer: str, page: int = 1, page_size: int = PAGE_SIZE, *, sort: str = "unit",
               order: str = "", show: str = "all", labels: dict[int, str] | None = None) -> dict:
    """The layer page: one page of its built units with thumbnail URLs (raises :class:`NotInAtlas`).

    Args:
        sort: ``"unit"`` or a fact the layer's units have (``mean``, ``max``, ``fraction_positive``: from the
            dataset pass's histograms).
        order: ``"asc"`` or ``"desc"`` (default: ascending units, descending facts).
        show: ``all``, ``alive`` / ``dead`` (the channel render's ``dead`` fact), ``labelled`` (units with a label
            in the annotate file, ``labels``).
        labels: ``unit -> label`` of this layer (annotate mode), shown on the tiles.

    Raises:
        BadQuery: an unknown ``sort``, ``order`` or ``show``, or a fact the layer's units do not have.
    """
    rec = store.layer(layer)
    facts = store.fact_names(layer)
    sortable = ["unit"] + [f for f in SORT_FACTS if f in facts]
    if sort not in sortable:
        raise BadQuery(f"cannot sort {layer!r} by {sort[:40]!r}; choose from {', '.join(sortable)}")
    if order not in ("", "asc", "desc"):
        raise BadQuery(f"order is asc or desc, got {order[:20]!r}")
    if show not in SHOW:
        raise BadQuery(f"show is one of {', '.join(SHOW)}, got {show[:20]!r}")
    if show in ("alive", "dead") and "dead" not in facts:
        raise BadQuery(f"the units of {layer!r} have no dead/alive mark (built without the featurevis kind or "
                       "before it was recorded)")
    labels = labels or {}
    built = store.units(layer)
    units = built
    if show == "labelled" and not labels:
        raise BadQuery("show=labelled needs labels: start the viewer with --annotate FILE and label some units")
    if show in ("alive", "dead"):  # units without the mark (built before it was recorded) are in neither
        dead = store.fact_values(layer, "dead")
        units = [u for u in units if u in dead and (dead[u] > 0) == (show == "dead")]
    elif show == "labelled":
        units = [u for u in units if u in labels]
    values = store.fact_values(layer, sort) if sort != "unit" else {}
    descending = order == "desc" or (order == "" and sort != "unit")
    if sort != "unit":  # units without the fact go last, in unit order
        have = sorted((u for u in units if u in values), key=lambda u: (values[u], -u if descending else u),
                      reverse=descending)
        units = have + [u for u in units if u not in values]
    elif descending:
        units = units[::-1]
    pages = max(1, math.ceil(len(units) / page_size))
    if not 1 <= page <= pages:
        raise NotInAtlas(f"layer {layer!r} has {pages} page(s) of units; page {page} does not exist")
    shown = units[(page - 1) * page_size: page * page_size]
    source = thumbnail_source(store, layer)
    thumbs = store.thumbnails(layer, source[0], source[1], shown) if source else {}
    query = {"sort": sort if sort != "unit" else "", "order": order, "show": show if show != "all" else ""}
    suffix = "".join(f"&{k}={v}" for k, v in query.items() if v)
    return {
        "layer": rec.to_dict() | {"url": layer_url(rec.name)},
        "built_units": format_units(built),
        "pending": len(set(rec.planned) - set(built)),
        "page": page, "pages": pages, "page_size": page_size, "matching": len(units),
        "prev_page": page - 1 if page > 1 else None, "next_page": page + 1 if page < pages else None,
        "query_suffix": suffix, "sort": sort, "order": "desc" if descending else "asc", "order_asked": order,
        "show": show,
        "sortable": sortable, "filters": [f for f in SHOW if f == "all" or (f in ("alive", "dead") and "dead" in facts)
                                          or (f == "labelled" and labels)],
        "thumbnail": {"kind": source[0], "name": source[1]} if source else None,
        "units": [{"unit": u, "url": unit_url(layer, u), "value": values.get(u), "label": labels.get(u),
                   "thumbnail": artifact_url(thumbs[u]) if u in thumbs else None} for u in shown],
    }


def image_url(image_id: int, layer: str | None = None, unit: int | None = None, which: str | None = None) -> str:
    """The page of a stored whole image (with the example's box when ``layer``/``unit`` name one)."""
    url = f"/image/{int(image_id)}"
    if layer is not None and unit is not None:
        url += f"?layer={quote(layer, safe='')}&unit={int(unit)}" + (f"&which={quote(which)}" if which else "")
    return url


def _artifact(rec: ArtifactRecord, stored_images: set[int] | None = None) -> dict:
    """The record plus its URL and how the unit page shows it: ``"image"`` (a picture the page embeds),
    ``"file"`` (other bytes, linked), ``"numbers"`` (numbers only) or ``"examples"`` (a contact sheet of dataset
    examples, shown tile by tile with captions, see :func:`example_tiles`)."""
    url = artifact_url(rec.id) if rec.size else None
    show = "numbers" if url is None else "image" if rec.mime.startswith("image/") else "file"
    out = rec.to_dict() | {"url": url, "show": show}
    tiles = example_tiles(rec.numbers) if show in ("image", "numbers") else None
    if tiles is not None:
        for t in tiles:  # click-through to the whole image with the box, where the atlas stored it
            iid = t["image_id"]
            t["image_url"] = (image_url(iid, rec.layer, rec.unit, rec.name) if isinstance(iid, int)
                              and iid in (stored_images or ()) else None)
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


def unit_view(store: AtlasStore, layer: str, unit: int, label: dict | None = None) -> dict:
    """The unit page: every artifact grouped by kind (page order), its circuit (strongest incoming units and the
    units it feeds most, with signed weights and thumbnails, linked when the atlas holds them), previous/next
    units and, in annotate mode, its ``label`` (raises NotInAtlas)."""
    rec = store.require_unit(layer, unit)
    prev, nxt = store.neighbors(layer, unit)
    kinds = kind_table(store)
    records = store.artifacts(layer, unit)
    ids = {ex["image_id"] for a in records if isinstance(a.numbers, dict)
           and isinstance(a.numbers.get("examples"), list) for ex in a.numbers["examples"]
           if isinstance(ex, dict) and "image_id" in ex}
    stored = store.image_ids([i for i in ids if isinstance(i, int) and not isinstance(i, bool)])

    def section(kind: str) -> dict:
        info = _kind(kinds, kind)
        return {"kind": kind, "title": info["title"], "order": info["order"], "artifacts": []}

    sections: dict[str, dict] = {}
    for a in records:
        if a.name == "thumbnail":
            continue  # the layer page's small copy of a picture shown here in full
        sections.setdefault(a.kind, section(a.kind))["artifacts"].append(_artifact(a, stored))
    for sec in sections.values():  # in the order the kind declares its artifacts
        declared = [name for name, _ in _kind(kinds, sec["kind"])["artifacts"]]
        sec["artifacts"].sort(key=lambda a: declared.index(a["name"]) if a["name"] in declared else len(declared))
    circuit = circuit_view(store, layer, unit, sections)
    for kind, why in (store.get_meta("not_applicable", {}) or {}).get(layer, {}).items():
        sections[kind] = section(kind) | {"not_applicable": why}

    def nav(item: tuple[str, int] | None) -> dict | None:
        return None if item is None else {"layer": item[0], "unit": item[1], "url": unit_url(*item)}

    return {
        "layer": rec.to_dict() | {"url": layer_url(rec.name)},
        "unit": int(unit), "url": unit_url(layer, unit),
        "prev": nav(prev), "next": nav(nxt),
        "facts": store.facts(layer, unit),
        "sections": sorted(sections.values(), key=lambda s: (s["order"], s["kind"])),
        "circuit": circuit,
        "links": [i for i in circuit["incoming"] + circuit["outgoing"] if i["url"]],
        "label": label,
    }


def circuit_view(store: AtlasStore, layer: str, unit: int, sections: dict[str, dict] | None = None) -> dict:
    """``{"incoming", "outgoing", "note"}``: the unit's strongest inputs and the units that count it among theirs,
    each ``{"layer", "unit", "weight", "norm", "url" (None when not in the atlas), "thumbnail"}``, strongest first.

    Atlases built before links were stored fall back to the inputs named in the circuit artifact's numbers.
    """
    incoming = store.incoming(layer, unit)
    if not incoming and sections:
        for sec in sections.values():
            for a in sec["artifacts"]:
                nums = a.get("numbers")
                if isinstance(nums, dict) and isinstance(nums.get("inputs"), list):
                    incoming += [{"layer": i["layer"], "unit": i["unit"], "weight": _number(i.get("weight")),
                                  "norm": _number(i.get("norm"))} for i in nums["inputs"] if isinstance(i, dict)
                                 and isinstance(i.get("layer"), str) and isinstance(i.get("unit"), int)]
    aliases = store.get_meta("tensor_aliases", {}) or {}
    outgoing = store.outgoing(layer, unit, limit=OUTGOING, names=aliases.get(layer, ()))
    held = set(store.layer_names())
    for i in incoming:  # links stored under another name of the same tensor: the name the atlas holds
        if i["layer"] not in held:
            i["layer"] = next((n for n in aliases.get(i["layer"], ()) if n in held), i["layer"])
    items = incoming + outgoing
    thumbs: dict[str, dict[int, int]] = {}
    for name in {i["layer"] for i in items if i["layer"] in held}:
        src = thumbnail_source(store, name)
        wanted = [i["unit"] for i in items if i["layer"] == name]
        thumbs[name] = store.thumbnails(name, src[0], src[1], wanted) if src else {}
    for i in items:
        there = i["layer"] in held and store.has_unit(i["layer"], i["unit"])
        i["url"] = unit_url(i["layer"], i["unit"]) if there else None
        tid = thumbs.get(i["layer"], {}).get(i["unit"])
        i["thumbnail"] = artifact_url(tid) if there and tid is not None else None
    missing = sorted({i["layer"] for i in incoming if i["layer"] not in held})
    note = (f"the inputs come from {', '.join(missing)}, which this atlas does not hold (build it with that layer "
            "too to link them)") if missing else ""
    return {"incoming": incoming, "outgoing": outgoing, "note": note}


#: outgoing units listed on a unit page
OUTGOING = 12


def image_view(store: AtlasStore, image_id: int, layer: str | None = None, unit: int | None = None,
               which: str | None = None) -> dict:
    """The page of a whole stored image: its name and class and, when ``layer``/``unit`` name a unit whose
    examples include it, each example's receptive-field box and value (raises NotInAtlas)."""
    info, _ = store.image(image_id)
    boxes = []
    if layer is not None and unit is not None:
        store.require_unit(layer, unit)
        for a in store.artifacts(layer, unit):
            nums = a.numbers
            if a.kind != "examples" or (which and a.name != which) or not isinstance(nums, dict):
                continue
            for ex in nums.get("examples") or []:
                box = ex.get("box") if isinstance(ex, dict) else None
                if isinstance(box, list) and ex.get("image_id") == image_id and len(box) == 4 and \
                        all(isinstance(b, int) for b in box) and _number(ex.get("value")) is not None:
                    top, left, bottom, right = box
                    boxes.append({"which": a.name, "value": float(ex["value"]), "value_text": f"{ex['value']:.4g}",
                                  "x": left, "y": top, "width": right - left, "height": bottom - top,
                                  "position": [ex.get("y"), ex.get("x")]})
    return {"image": info | {"url": f"/image/{int(image_id)}/picture"}, "boxes": boxes,
            "unit": None if unit is None or layer is None else {"layer": layer, "unit": int(unit),
                                                                 "url": unit_url(layer, unit)}}


def graph_view(store: AtlasStore) -> list[dict]:
    """The model page's overview: each atlas layer in model order with its output shape, channels, units built and
    bar lengths (pixels) for an inline SVG: channels on a log scale, the built fraction of them filled."""
    layers = store.layers()
    most = max((rec.channels for rec in layers), default=1)
    out = []
    for rec in layers:
        width = 40 + 200 * math.log2(max(rec.channels, 1)) / max(math.log2(max(most, 2)), 1)
        out.append(rec.to_dict() | {"url": layer_url(rec.name), "bar": round(width, 1),
                                    "filled": round(width * rec.built / max(rec.channels, 1), 1)})
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
