"""``fingerprint``: one hash that says "the same model", for atlases that resume and caches that persist.

The hash covers the model's class and every parameter and buffer (names, shapes, dtypes and bytes), so a
``LoadedModel`` and its plain module agree. ``code=True`` also hashes the structure: each submodule's name, class,
``extra_repr`` and the bytecode of its ``forward`` (a cache of execution plans must not outlive a code change;
an atlas must stay resumable across Python versions, so it leaves the bytecode out). Results are remembered per
module while its tensors are unchanged (:func:`~cnnscope.capture.module_state`).
"""

from __future__ import annotations

import hashlib
import weakref

import torch
from torch import nn

from .adapter import ModelLike

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[tuple, str]]] = weakref.WeakKeyDictionary()


def fingerprint(model: ModelLike, *, code: bool = False) -> str:
    """SHA-256 hex digest of the model's class and weights (and its code with ``code=True``)."""
    from ..capture import module_of, module_state

    module = module_of(model)
    state = module_state(module)
    seen = _CACHE.setdefault(module, {})
    if code in seen and seen[code][0] == state:
        return seen[code][1]
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    with torch.no_grad():
        for name, t in module.state_dict().items():
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    if code:
        for name, m in module.named_modules():
            kind = type(m)
            h.update(f"|{name}|{kind.__module__}.{kind.__qualname__}|{m.extra_repr()}|".encode())
            body = getattr(getattr(kind, "forward", None), "__code__", None)
            if body is not None:
                h.update(body.co_code)
                h.update(repr(body.co_consts).encode())
    out = h.hexdigest()
    seen[code] = (state, out)
    return out
