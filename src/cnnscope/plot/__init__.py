"""Every matplotlib figure of cnnscope lives in this package, one module per area.

Figures are built on the Agg backend with ``matplotlib.figure.Figure`` (never ``pyplot``), returned to the caller,
and written only by explicit ``save_*`` helpers (docs/ARCHITECTURE.md, rule 6).
"""

from .common import figure, grid_image, save_figure

__all__ = ["figure", "grid_image", "save_figure"]
