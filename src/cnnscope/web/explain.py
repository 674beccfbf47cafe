"""The "explain an image" page: validate an upload, run attribution methods on it, return the panel.

Nothing is written anywhere: the upload is decoded in memory, the panel is rendered to PNG bytes and sent back.
Uploads are bounded (bytes, and pixels read from the image header before decoding, image formats). Decoding and
explaining run in worker threads, never on the event loop; one explanation runs at a time and at most
``max_queue`` requests wait or run (more get HTTP 429 with ``Retry-After``). A job whose client disconnected while
it waited is skipped; one that was running stops within one forward pass (:mod:`.explain_panel`) and frees the lock
and its queue slot.

Besides the attribution panel, a request lists the units of one atlas layer that fire most on the picture
(:mod:`.image_units`), computed in the same job.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..atlas.store import AtlasStore
from ..errors import CnnscopeError, close_matches
from ..models import as_model
from .explain_panel import Cancelled, explain_panel
from .image_units import TOP_UNITS, image_units

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
DEFAULT_METHODS = ("saliency", "gradcam", "integrated_gradients")
MAX_METHODS = 4
#: bytes a multipart request may carry beyond the image (boundaries, headers, the other fields)
FORM_OVERHEAD = 64 * 1024
#: requests running or waiting for an explanation at once (more get HTTP 429)
MAX_QUEUE = 4
#: seconds a client is told to wait (``Retry-After``) when the queue is full
RETRY_AFTER = 10


class UploadError(CnnscopeError):
    """A request the explain page refuses, with its HTTP status (400, 413, 415, 429, 503) and, for 429, the
    seconds to wait (``Retry-After``)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _Job:
    """One admitted explanation: ``cancelled`` is set when its client goes away; ``layer`` is the layer whose
    units it lists."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.layer: str | None = None


def decode_upload(data: bytes, filename: str, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Bytes of an uploaded file -> ``uint8 [H, W, 3]``, or :class:`UploadError` saying what is wrong."""
    from ..images import load_image

    name = (filename or "upload")[:80]
    if not data:
        raise UploadError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{name}: {len(data):,} bytes is over the limit of {max_bytes:,} bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ACCEPTED_FORMATS:
                raise UploadError(415, f"{name}: {img.format} images are not accepted; use "
                                       + ", ".join(ACCEPTED_FORMATS))
            w, h = img.size
            if w * h > max_pixels:
                raise UploadError(413, f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} pixels")
            img.load()
            return load_image(img)
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError(413, f"{name}: the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise UploadError(415, f"{name}: not an image ({', '.join(ACCEPTED_FORMATS)} accepted)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(415, f"{name}: unreadable image ({exc})") from None


async def read_capped(request: Request, cap: int, refuse) -> bytes:
    """The request body, refusing anything longer than ``cap`` bytes (``raise refuse()``) before reading it all:
    by its ``Content-Length`` when it says, else as the chunks arrive."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise refuse()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise refuse()
        chunks.append(chunk)
    return b"".join(chunks)


class Explainer:
    """Runs attribution for the explain page with the atlas's model.

    Args:
        store: the atlas (its model name, weights and fingerprint select the model).
        model: a ``LoadedModel`` or ``nn.Module`` to use instead of reloading the atlas's model.
        enabled: whether the page is offered at all.
        max_bytes, max_pixels: upload limits.
        max_queue: explanations running or waiting at once; more requests get HTTP 429.
    """

    def __init__(self, store: AtlasStore, model=None, enabled: bool = True, max_bytes: int = 8 * 1024 * 1024,
                 max_pixels: int = 40_000_000, max_queue: int = MAX_QUEUE) -> None:
        self.store = store
        self.model = None if model is None else as_model(model)
        self.enabled = enabled
        self.max_bytes = int(max_bytes)
        self.max_pixels = int(max_pixels)
        self.max_queue = max(1, int(max_queue))
        self._lock = threading.Lock()
        self._admitted = 0
        self._count_lock = threading.Lock()
        self._model_error: str | None = None
        self.skipped = 0  # jobs dropped because their client disconnected before they ran
        self.cancelled = 0  # jobs stopped while running because their client disconnected
        self._current: _Job | None = None  # the job holding the lock

    def queue_state(self) -> dict:
        """``{"queued" (running or waiting), "max_queue", "running", "skipped" (dropped while waiting),
        "cancelled" (stopped while running)}`` for ``/api/health``."""
        return {"queued": self._admitted, "max_queue": self.max_queue, "running": self._lock.locked(),
                "skipped": self.skipped, "cancelled": self.cancelled}

    def _admit(self) -> _Job:
        with self._count_lock:
            if self._admitted >= self.max_queue:
                raise UploadError(429, f"{self._admitted} explanations are running or waiting (the limit is "
                                       f"{self.max_queue}); try again in {RETRY_AFTER} s", retry_after=RETRY_AFTER)
            self._admitted += 1
        return _Job()

    def _release(self) -> None:
        with self._count_lock:
            self._admitted -= 1

    # -- what is offered ----------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """The menu: every registered attribution method (``cnnscope.attribution.list_methods``)."""
        from ..attribution import list_methods

        return list(list_methods())

    def unavailable(self) -> str | None:
        """Why the page cannot explain images here, or ``None``."""
        if not self.enabled:
            return "the explain page is switched off for this server"
        if self.model is None:
            desc = self.store.get_meta("model", {}) or {}
            if desc.get("source") == "user":
                return ("the atlas was built from a user module, which the server cannot reload; pass model= to "
                        "cnnscope.web.create_app")
        return self._model_error

    def default_layer(self) -> str | None:
        """The layer whose units are listed when none is chosen: the last (in model order) with built units, else
        the last layer; ``None`` for an atlas without layers."""
        layers = self.store.layers()
        built = [rec.name for rec in layers if rec.built]
        return built[-1] if built else layers[-1].name if layers else None

    def form(self) -> dict:
        methods = self.methods()
        return {"available": self.unavailable() is None, "reason": self.unavailable(), "methods": methods,
                "default_methods": [m for m in DEFAULT_METHODS if m in methods] or methods[:1],
                "max_upload_bytes": self.max_bytes, "max_pixels": self.max_pixels,
                "accepted_formats": list(ACCEPTED_FORMATS), "max_methods": MAX_METHODS,
                "layers": self.store.layer_names(), "default_layer": self.default_layer(), "top_units": TOP_UNITS}

    def _get_model(self):
        if self.model is not None:
            return self.model
        from ..models import fingerprint, load_model

        desc = self.store.get_meta("model", {}) or {}
        weights = desc.get("weights")
        try:
            m = load_model(desc.get("name", ""), weights=None if weights in (None, "embedded") else weights)
        except CnnscopeError as exc:
            self._model_error = f"cannot reload the atlas's model: {exc}"
            raise UploadError(503, self._model_error) from None
        if fingerprint(m) != self.store.get_meta("fingerprint"):
            self._model_error = "the reloaded model's weights differ from the atlas's (fingerprint mismatch)"
            raise UploadError(503, self._model_error)
        self.model = m
        return m

    # -- one request --------------------------------------------------------------------------------
    async def handle(self, request: Request) -> dict:
        """Validate the multipart upload of ``request`` and compute the explanation (in a worker thread)."""
        if not self.enabled:
            raise UploadError(503, self.unavailable() or "")
        too_big = f"the upload is over the limit of {self.max_bytes:,} bytes"
        body = await read_capped(request, self.max_bytes + FORM_OVERHEAD, lambda: UploadError(413, too_big))

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=FORM_OVERHEAD)
        except Exception as exc:  # noqa: BLE001 - multipart parser errors become one clear 400
            raise UploadError(400, f"cannot read the upload: {exc}") from None
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise UploadError(400, "no image in the upload (send the file in the form field 'image')")
            data = await upload.read(self.max_bytes + 1)
            filename = upload.filename or "upload"
            methods = [str(v) for v in form.getlist("methods")]
            target = str(form.get("target") or "").strip()
            layer = str(form.get("layer") or "").strip()
        finally:
            await form.close()
        job = self._admit()
        try:
            task = asyncio.ensure_future(run_in_threadpool(self._job, job, data, filename, methods, target, layer))
        except BaseException:
            self._release()
            raise
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            if not task.done() and await request.is_disconnected():
                job.cancelled.set()  # skipped if still waiting, stopped if running; nobody reads the answer
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                raise UploadError(499, "the client disconnected")
        return task.result()

    def _job(self, job: _Job, data: bytes, filename: str, methods: list[str], target: str, layer: str = "") -> dict:
        """Decode and explain in a worker thread; the queue slot is given back when it ends."""
        try:
            image = decode_upload(data, filename, self.max_bytes, self.max_pixels)
            why = self.unavailable()  # checked after the upload, so bad uploads get their 4xx in any case
            if why:
                raise UploadError(503, why)
            chosen = self._methods(methods)
            job.layer = self._layer(layer)
            while not self._lock.acquire(timeout=0.1):
                if job.cancelled.is_set():
                    self.skipped += 1
                    raise UploadError(499, "the client disconnected")
            try:
                if job.cancelled.is_set():
                    self.skipped += 1
                    raise UploadError(499, "the client disconnected")
                self._current = job
                return self._run(image, chosen, target, filename)
            except Cancelled:
                self.cancelled += 1
                raise UploadError(499, "the client disconnected") from None
            finally:
                self._current = None
                self._lock.release()
        finally:
            self._release()

    def _layer(self, asked: str) -> str | None:
        """The layer whose units a request lists (``""``: :meth:`default_layer`); an unknown one is a 400."""
        if not asked:
            return self.default_layer()
        names = self.store.layer_names()
        if asked not in names:
            near = close_matches(asked, names)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; choose from {', '.join(names[:12])}"
            raise UploadError(400, f"no layer {asked[:80]!r} in this atlas{hint}")
        return asked

    def _methods(self, asked: list[str]) -> list[str]:
        known = self.methods()
        chosen = [m for part in asked for m in part.split(",") if m.strip()] or self.form()["default_methods"]
        chosen = list(dict.fromkeys(m.strip() for m in chosen))
        for m in chosen:
            if m not in known:
                near = close_matches(m, known)
                hint = f"; did you mean {', '.join(near)}?" if near else f"; choose from {', '.join(known)}"
                raise UploadError(400, f"unknown attribution method {m[:40]!r}{hint}")
        if len(chosen) > MAX_METHODS:
            raise UploadError(400, f"choose at most {MAX_METHODS} methods per request")
        return chosen

    def _target(self, model, target: str) -> int | None:
        if not target:
            return None
        if re.fullmatch(r"[0-9]{1,9}", target):
            n = len(model.labels) if model.labels is not None else None
            if n is not None and int(target) >= n:
                raise UploadError(400, f"class index {target} is out of range (the model has {n} classes)")
            return int(target)
        try:
            return model.class_index(target)
        except CnnscopeError as exc:
            raise UploadError(400, str(exc)) from None

    def _run(self, image: np.ndarray, methods: list[str], target: str, filename: str) -> dict:
        """One explanation and the unit listing of the running job's layer (the default layer when called without
        a job); the caller holds the lock (one explanation at a time bounds memory).

        Raises:
            Cancelled: the job's client went away (checked within every forward pass).
        """
        job = self._current
        cancelled = job.cancelled if job is not None else None
        layer = job.layer if job is not None else self.default_layer()
        model = self._get_model()
        cls = self._target(model, target)
        listing = {"layer": None, "layer_url": None, "value": None, "units": [], "error": None}
        if layer is not None:
            pre = bool((self.store.get_meta("options", {}) or {}).get("pre_activation", False))
            try:
                listing = image_units(model, image, layer, store=self.store, pre_activation=pre,
                                      cancelled=cancelled) | {"error": None}
            except CnnscopeError as exc:  # a model handed to the app that cannot read the atlas's layer: say so
                listing |= {"layer": layer, "error": f"cannot list the units of {layer!r}: {exc}"}
        result = explain_panel(model, image, methods, target=cls, cancelled=cancelled)
        return result | {"filename": filename[:80], "layer": listing["layer"], "layer_url": listing["layer_url"],
                         "units_value": listing["value"], "units": listing["units"], "units_error": listing["error"]}
