"""Plans remembered in memory and across processes, in the user's cache directory.

Planning times the forward and probes receptive fields; in a fresh process that is most of a one-image occlusion.
A plan (or the reason there is none) is therefore kept

* in memory, per model object, for the life of the model;
* on disk, as one JSON file per key under :func:`cache_dir` ``/occlusion-plans``, written atomically (a temporary
  file renamed over the old one).

The key holds everything a plan depends on: the model's **fingerprint** (:func:`fingerprint`: a hash of its
structure, the code of its modules' ``forward`` methods and the bytes of every parameter and buffer), the input
shape, the windows, the batch the plan was timed at, the device, dtype and memory format, the split layers asked
for, the approximate mode, whether batch norms were folded, and the versions of torch and of the file format. A file
that cannot be read, does not parse, has another format or key, or names layers the model does not have is ignored
and planned anew. A plan read from disk is a hint, never trusted: the clean-image checks run on it as on a new
plan, and one that fails them is dropped and planned anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from pathlib import Path

import torch
from torch import nn

from ..capture import module_state
from .geometry import AxisCut
from .plan import IncrementalUnavailable, Plan, Stage

#: Version of the file layout; files of another version are ignored.
FORMAT = 1
FOLDER = "occlusion-plans"

_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """cnnscope's cache directory: ``$CNNSCOPE_CACHE``, else ``$XDG_CACHE_HOME/cnnscope``, else
    ``~/.cache/cnnscope``."""
    if os.environ.get("CNNSCOPE_CACHE"):
        return Path(os.environ["CNNSCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnscope"


def fingerprint(module: nn.Module) -> str:
    """A hash of the model's structure (module names, classes, the code of their ``forward`` and their
    ``extra_repr``) and of the bytes of every parameter and buffer. Kept per model while its tensors are unchanged
    (:func:`~cnnscope.capture.module_state`)."""
    state = module_state(module)
    got = _FINGERPRINTS.get(module)
    if got is not None and got[0] == state:
        return got[1]
    h = hashlib.sha256()
    for name, m in module.named_modules():
        kind = type(m)
        code = getattr(getattr(kind, "forward", None), "__code__", None)
        h.update(f"{name}|{kind.__module__}.{kind.__qualname__}|{m.extra_repr()}|".encode())
        if code is not None:
            h.update(code.co_code)
            h.update(repr(code.co_consts).encode())
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    out = h.hexdigest()
    _FINGERPRINTS[module] = (state, out)
    return out


def plan_key(x: torch.Tensor, windows: tuple, *, batch: int, layers: tuple[str, ...] | None, tau: float | None,
             folded: bool, channels_last: bool) -> dict:
    """The key of a plan, without the model's fingerprint (:func:`lookup` adds it for the disk)."""
    device = x.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"format": FORMAT, "torch": torch.__version__, "input": list(x.shape[1:]), "dtype": str(x.dtype),
            "device": name, "channels_last": bool(channels_last), "batch": int(batch),
            "windows": [[list(w) for w in ws] for ws in windows], "layers": None if layers is None else list(layers),
            "approximate": tau, "folded": bool(folded)}


def lookup(model: nn.Module, key: dict) -> Plan | IncrementalUnavailable | None:
    """The plan (or the reason there is none) remembered for ``model`` and ``key``: in memory, else on disk."""
    mem = _MEMORY.setdefault(model, {})
    text = json.dumps(key, sort_keys=True)
    if text in mem:
        got = mem[text]
        if isinstance(got, Plan):
            got.origin = "memory"
        return got
    got = _read(_path({**key, "fingerprint": fingerprint(model)}), {**key, "fingerprint": fingerprint(model)}, model)
    if got is not None:
        mem[text] = got
    return got


def remember(model: nn.Module, key: dict, result: Plan | IncrementalUnavailable) -> None:
    """Keep ``result`` in memory and write it to disk (a cache that cannot be written is skipped)."""
    _MEMORY.setdefault(model, {})[json.dumps(key, sort_keys=True)] = result
    full = {**key, "fingerprint": fingerprint(model)}
    body = {"format": FORMAT, "key": full}
    if isinstance(result, Plan):
        body["plan"] = to_dict(result)
    else:
        body["unavailable"] = str(result)
    try:
        path = _path(full)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(body, fh)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def forget(model: nn.Module, key: dict) -> None:
    """Drop what is remembered for ``model`` and ``key``, in memory and on disk."""
    _MEMORY.get(model, {}).pop(json.dumps(key, sort_keys=True), None)
    try:
        _path({**key, "fingerprint": fingerprint(model)}).unlink(missing_ok=True)
    except OSError:
        pass


def to_dict(plan: Plan) -> dict:
    """JSON-ready form of a plan (what the cache file holds)."""
    cuts = lambda cs: [[c.r0, c.r1, c.c0, c.c1, c.jump] for c in cs]  # noqa: E731
    return {"cost": plan.cost, "tau": plan.tau, "candidates": plan.candidates,
            "windows": [[list(w) for w in ws] for ws in plan.windows],
            "stages": [{"source": st.source, "layer": st.layer, "share": st.share, "area": st.area,
                        "rows": cuts(st.rows), "cols": cuts(st.cols)} for st in plan.stages]}


def from_dict(d: dict) -> Plan:
    """The plan of :func:`to_dict`'s form (raises ``KeyError``/``TypeError``/``ValueError`` on a malformed one)."""
    cuts = lambda cs: [AxisCut(*(int(v) for v in c)) for c in cs]  # noqa: E731
    stages = [Stage(s["source"], str(s["layer"]), cuts(s["rows"]), cuts(s["cols"]), float(s["share"]),
                    float(s["area"])) for s in d["stages"]]
    windows = tuple([(int(a), int(b)) for a, b in ws] for ws in d["windows"])
    tau = None if d["tau"] is None else float(d["tau"])
    return Plan(stages, float(d["cost"]), windows, tau, {str(k): float(v) for k, v in d["candidates"].items()})


def _path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / FOLDER / f"{digest}.json"


def _read(path: Path, key: dict, model: nn.Module) -> Plan | IncrementalUnavailable | None:
    """What a cache file holds, or ``None`` when it is missing, unreadable, malformed or for another key."""
    try:
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT or body.get("key") != json.loads(json.dumps(key)):
            return None
        if "unavailable" in body:
            return IncrementalUnavailable(str(body["unavailable"]))
        plan = from_dict(body["plan"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    names = dict(model.named_modules())
    n_rows, n_cols = (len(ws) for ws in key["windows"])
    ok = (plan.stages and [[list(w) for w in ws] for ws in plan.windows] == key["windows"]
          and plan.tau == key["approximate"]
          and all(st.layer in names and (st.source is None or st.source in names)
                  and len(st.rows) == n_rows and len(st.cols) == n_cols for st in plan.stages)
          and [st.source for st in plan.stages] == [None, *plan.layers[:-1]])
    if not ok:
        return None
    plan.origin = "disk"
    return plan
