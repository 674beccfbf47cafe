"""Method x metric tables: per-image values, summaries (mean +- std over images), Markdown and CSV."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import write_text

#: column -> (heading, which direction is better, one-line meaning)
COLUMNS: dict[str, tuple[str, str, str]] = {
    "deletion_auc": ("deletion AUC", "lower", "RISE deletion: class probability as salient pixels are zeroed"),
    "insertion_auc": ("insertion AUC", "higher", "RISE insertion: probability as salient pixels return to a blur"),
    "road_morf": ("ROAD MoRF", "lower", "ROAD: probability after imputing the most relevant 10..90 %"),
    "road_lerf": ("ROAD LeRF", "higher", "ROAD: probability after imputing the least relevant 10..90 %"),
    "road": ("ROAD combined", "higher", "ROAD: mean of (LeRF - MoRF) / 2"),
    "sanity_spearman_abs": ("sanity Spearman |.|", "lower",
                            "rank correlation with the trained model's maps after full cascading randomization"),
    "sanity_ssim": ("sanity SSIM", "lower", "SSIM with the trained model's maps after full randomization"),
    "pointing": ("pointing game", "higher", "share of maps whose maximum lies within 15 px of the object"),
    "seconds": ("seconds / image", "lower", "time to compute one map"),
}


def _fmt(v: float, digits: int = 3) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


@dataclass
class MetricTable:
    """Per-image metric values: rows of ``(method, metric, image, value)``."""

    rows: list[tuple[str, str, str, float]] = field(default_factory=list)

    def add(self, method: str, metric: str, image: str, value: float) -> None:
        self.rows.append((method, metric, image, float(value)))

    def extend(self, method: str, metric: str, images: list[str], values: object) -> None:
        """Add one value per image (``values`` is any sequence or 1-D tensor/array)."""
        vals = [float(v) for v in values]  # type: ignore[union-attr]
        if len(vals) != len(images):
            raise ValueError(f"{len(vals)} values for {len(images)} images")
        for img, v in zip(images, vals):
            self.add(method, metric, img, v)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r[0] for r in self.rows))

    @property
    def metrics(self) -> list[str]:
        found = list(dict.fromkeys(r[1] for r in self.rows))
        return [c for c in COLUMNS if c in found] + [c for c in found if c not in COLUMNS]

    def values(self, method: str, metric: str) -> list[float]:
        return [r[3] for r in self.rows if r[0] == method and r[1] == metric]

    def summary(self) -> dict[tuple[str, str], tuple[float, float, int]]:
        """``(method, metric) -> (mean, std, n)`` over images (sample std; ``nan`` values skipped)."""
        out = {}
        for m in self.methods:
            for k in self.metrics:
                vals = [v for v in self.values(m, k) if not math.isnan(v)]
                if not self.values(m, k):
                    continue
                n = len(vals)
                mean = sum(vals) / n if n else float("nan")
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0 if n else float("nan")
                out[(m, k)] = (mean, std, n)
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """A Markdown table, one row per method, ``mean ± std`` per metric (arrows say which way is better)."""
        summ = self.summary()
        cols = self.metrics
        head = ["method"] + [f"{COLUMNS.get(c, (c, ''))[0]} {_arrow(c)}".rstrip() for c in cols]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in self.methods:
            cells = [m]
            for c in cols:
                if (m, c) in summ:
                    mean, std, _ = summ[(m, c)]
                    cells.append(f"{_fmt(mean, digits)} ± {_fmt(std, digits)}")
                else:
                    cells.append("")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Wide CSV: ``method, <metric>_mean, <metric>_std, ..., images``."""
        summ = self.summary()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = self.metrics
        w.writerow(["method"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")] + ["images"])
        for m in self.methods:
            row: list[object] = [m]
            n = 0
            for c in cols:
                mean, std, k = summ.get((m, c), (float("nan"), float("nan"), 0))
                row += [f"{mean:.6g}", f"{std:.6g}"]
                n = max(n, k)
            w.writerow(row + [n])
        return buf.getvalue()

    def per_image_csv(self) -> str:
        """Long CSV: ``method, metric, image, value``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "metric", "image", "value"])
        for r in self.rows:
            w.writerow([r[0], r[1], r[2], f"{r[3]:.6g}"])
        return buf.getvalue()

    def legend(self) -> str:
        """Markdown bullet list explaining each column present."""
        return "\n".join(f"- **{COLUMNS[c][0]}** ({COLUMNS[c][1]} is better): {COLUMNS[c][2]}"
                         for c in self.metrics if c in COLUMNS) + "\n"


def _arrow(metric: str) -> str:
    better = COLUMNS.get(metric, ("", "", ""))[1]
    return {"lower": "↓", "higher": "↑"}.get(better, "")


def save_table(table: MetricTable, out: str | Path, *, title: str = "Evaluation", notes: str = "") -> list[Path]:
    """Write ``evaluation.md``, ``evaluation.csv`` and ``per_image.csv`` into the folder ``out`` (each atomically:
    a temporary file renamed into place)."""
    folder = Path(out)
    md = f"# {title}\n\n{table.to_markdown()}\n{table.legend()}"
    if notes:
        md += "\n" + notes.rstrip() + "\n"
    texts = {"evaluation.md": md, "evaluation.csv": table.to_csv(), "per_image.csv": table.per_image_csv()}
    return [write_text(folder / name, text) for name, text in texts.items()]
