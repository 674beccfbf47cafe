"""Exact speed-ups for the no-gradient forwards of perturbation methods (occlusion, RISE, Score-CAM).

    from cnnscope.fastforward import fast_forward
    ff = fast_forward(model, x)            # a batch-norm-folded copy when it reproduces the model on x
    ff.module(perturbed_batch)             # ... else the model itself; ff.report says which and why
    scores, plan = ff.occlusion_scores(x, base, windows, score, clean, batch_size=16, channels_last=True)

* :mod:`.fold_bn`: eval-mode batch norms folded into the convolutions that feed them (exact).
* :mod:`.incremental`: occluded copies computed incrementally through a chain of split layers (Krypton; exact),
  planned by :mod:`.plan` on the crop geometry of :mod:`.geometry`, with plans remembered in memory and in the
  user's cache directory by :mod:`.plan_cache`.
* :mod:`.approximate`: Krypton's projective-field threshold, an opt-in approximation of incremental inference.

Every speed-up is checked on the call's clean images before it is used, and the caller falls back to plain forwards
when a check fails. See docs/fastforward.md.
"""

from .approximate import map_error
from .fold_bn import fold_batchnorm
from .forward import FastForward, fast_forward
from .plan import IncrementalUnavailable
from .plan_cache import cache_dir

__all__ = ["FastForward", "IncrementalUnavailable", "cache_dir", "fast_forward", "fold_batchnorm", "map_error"]
