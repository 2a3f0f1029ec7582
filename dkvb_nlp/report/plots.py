"""PNG plots: an accuracy-matrix heatmap per method and accuracy-over-tasks curves for all methods.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so no display
or global backend is touched (safe in headless jobs and alongside other plotting code); each
is rendered to bytes and written atomically.

- `accuracy_heatmap_<method>.png`: mean accuracy matrix over seeds, rows = after training task
  i, columns = evaluated on task j, cells annotated in % when T <= 20.
- `accuracy_curves.png`: two panels, x = tasks trained so far; left: average accuracy on the
  tasks seen so far (the points whose mean is AIA), right: average accuracy on all tasks.
  Lines are means over seeds, bands mean ± std (sample std; none for a single seed).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_write_bytes
from .aggregate import MethodSummary, aggregate
from .naming import CURVES_PNG, heatmap_png_name, slugs

__all__ = ["ANNOTATE_MAX_TASKS", "curves_png", "heatmap_png", "plot_pngs", "write_plots"]

# Above this many tasks the cell labels overlap and hide the colours.
ANNOTATE_MAX_TASKS = 20
_DPI = 120


def _figure(width: float, height: float):
    # Imported here so that importing the report package does not load matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def heatmap_png(matrix, task_names: Sequence[str], title: str = "") -> bytes:
    """PNG bytes of a T x T accuracy heatmap (fractions in [0, 1]; cells labelled in % if T <= 20)."""
    a = np.asarray(matrix, dtype=np.float64)
    t = len(task_names)
    if a.shape != (t, t):
        raise ValueError(f"matrix must be T x T with T = {t} task names; got shape {a.shape}")
    side = min(3.0 + 0.45 * t, 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(a, vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    ax.set_xticks(range(t), labels=task_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(t), labels=task_names)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    if title:
        ax.set_title(title)
    if t <= ANNOTATE_MAX_TASKS:
        for i, j in zip(*np.nonzero(np.isfinite(a))):  # unmeasured rows stay blank
            # Dark text on the bright end of viridis, light text on the dark end.
            ax.text(j, i, f"{100 * a[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if a[i, j] > 0.6 else "white")
    return _png(fig)


def _curves(s: MethodSummary) -> tuple[np.ndarray, np.ndarray]:
    mats = np.stack([np.asarray(r["accuracy_matrix"], dtype=np.float64) for r in s.runs])
    t = mats.shape[1]
    seen = np.stack([mats[:, i, : i + 1].mean(axis=1) for i in range(t)], axis=1)  # (seeds, T)
    return seen, mats.mean(axis=2)


def curves_png(summaries: Sequence[MethodSummary]) -> bytes:
    """PNG bytes of average accuracy on seen / all tasks after each task, one line per method."""
    if not summaries:
        raise ValueError("curves_png needs at least one method; got none")
    longest = max(summaries, key=lambda s: len(s.task_names))
    t = len(longest.task_names)
    fig = _figure(min(10.0 + 0.3 * t, 20.0), 4.5)
    ax_seen, ax_all = fig.subplots(1, 2, sharey=True)
    for s in summaries:
        seen, overall = _curves(s)
        x = np.arange(1, seen.shape[1] + 1)
        for ax, values in ((ax_seen, seen), (ax_all, overall)):
            mean = values.mean(axis=0)
            (line,) = ax.plot(x, 100 * mean, marker="o", markersize=3, label=s.label)
            if values.shape[0] > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(x, 100 * (mean - std), 100 * (mean + std),
                                color=line.get_color(), alpha=0.2, linewidth=0)
    titles = ("average accuracy on seen tasks", "average accuracy on all tasks")
    for ax, title in zip((ax_seen, ax_all), titles):
        ax.set_title(title)
        ax.set_xlabel("after training task")
        ax.set_xticks(range(1, t + 1), labels=longest.task_names, rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.grid(True, alpha=0.3)
    ax_seen.set_ylabel("accuracy (%)")
    ax_seen.set_ylim(0, 100)
    ax_all.legend(loc="best", fontsize=8)
    return _png(fig)


def plot_pngs(results: Mapping) -> dict[str, bytes]:
    """Every heatmap and the curves figure, file name -> PNG bytes (nothing written)."""
    summaries = aggregate(results)
    names = slugs(s.label for s in summaries)
    pngs: dict[str, bytes] = {}
    for s in summaries:
        n = len(s.runs)
        title = f"{s.label} ({'1 seed' if n == 1 else f'mean over {n} seeds'})"
        pngs[heatmap_png_name(names[s.label])] = heatmap_png(s.accuracy_mean, s.task_names, title)
    pngs[CURVES_PNG] = curves_png(summaries)
    return pngs


def write_plots(results: Mapping, out_dir) -> dict[str, Path]:
    """Write every heatmap and the curves figure into out_dir; file name -> path."""
    out_dir = Path(out_dir)
    return {name: atomic_write_bytes(out_dir / name, data) for name, data in plot_pngs(results).items()}
