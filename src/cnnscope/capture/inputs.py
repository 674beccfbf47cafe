"""``InputCapture``: record what goes *into* layers (e.g. a convolution's input, the ``h_prev`` of a circuit).

:class:`~cnnscope.capture.Capture` with ``pre_activation=True`` records inputs only of activation modules; circuits
also need the input of a convolution. This is the same capture (same stop-early, reuse and clone rules, hooks
removed in ``finally``), recording each layer's first positional tensor input for any module kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .capture import Capture
from .state import module_of

if TYPE_CHECKING:
    from ..models import ModelLike


class InputCapture(Capture):
    """Like :class:`~cnnscope.capture.Capture`, but ``activations[name]`` is the input of layer ``name``.

    Example:
        >>> with InputCapture(model, "blocks.4.0.conv_pw") as cap:
        ...     cap.run(x)
        >>> h_prev = cap["blocks.4.0.conv_pw"]   # [B, C_in, H, W]
    """

    def __init__(self, model: ModelLike, layers: str | Iterable[str], **options: Any) -> None:
        module = module_of(model)
        options.pop("pre_activation", None)
        super().__init__(module, layers, **options)
        self.pre_activation = True  # forward pre-hooks; unlike Capture(pre_activation=True) any module kind is fine
