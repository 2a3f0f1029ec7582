"""PNG plots: an accuracy-matrix heatmap per method and accuracy-over-tasks curves for all methods.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so no display
or global backend is touched (safe in headless jobs and alongside other plotting code); each
is rendered to bytes and written atomically.

- `accuracy_heatmap_<method>.png`: mean accuracy matrix over seeds, rows = after training task
  i, columns = evaluated on task j, cells annotated in % when T <= 20. Cells of tasks not yet
  trained (j > i; see MethodSummary.learned when seeds order tasks differently) and unmeasured
  (NaN) cells are left blank over a light grey hatch; the CSVs keep every measured number.
  task_type_il seeds with different task orders are averaged per dataset, other scenarios by
  position (see aggregate.py); the title says which when the orders differ.
- `accuracy_curves.png`: two panels, x = tasks trained so far; left: average accuracy on the
  tasks seen so far (the points whose mean is AIA), right: average accuracy on all tasks.
  Above 15 tasks (stream_il's 30 chunks, named by the examples they hold) every k-th tick is labelled, counting back from the last.
  Lines are means over seeds, bands mean ± std (sample std; none for a single seed).

Every method has its own (colour, marker) pair (`method_styles`): the known methods a fixed
one, all with different colours, so a method looks the same in every report; other labels
take the unused pairs in sorted order. Pairs are unique for 13 x 12 = 156 labels, and a
linestyle separates labels beyond that.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from ..io import atomic_write_bytes
from .aggregate import MethodSummary, aggregate
from .naming import CURVES_PNG, heatmap_png_name, slugs

__all__ = [
    "ANNOTATE_MAX_TASKS",
    "KNOWN_METHODS",
    "MethodStyle",
    "curves_figure",
    "curves_png",
    "heatmap_figure",
    "heatmap_png",
    "heatmap_title",
    "method_styles",
    "plot_pngs",
    "style_at",
    "write_plots",
]

# Above this many tasks the cell labels overlap and hide the colours.
ANNOTATE_MAX_TASKS = 20
_DPI = 120

# tab10, then three more that stand apart from it.
COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#e6ab02", "#1b1b8f",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", ":", "-.")
# Methods with a fixed style: the k-th takes style_at(k), so each has its own colour.
KNOWN_METHODS = (
    "dkvb", "dkvb_joint", "finetune", "finetune_joint", "linear", "mlp", "ewc", "er", "derpp",
    "lwf", "nmc", "ranpac", "joint",
)


class MethodStyle(NamedTuple):
    colour: str
    marker: str
    linestyle: str = "-"


def style_at(k: int) -> MethodStyle:
    """The k-th style: colour k mod 13, marker shifted by k // 13, so the first 156 pairs differ."""
    c, m = len(COLOURS), len(MARKERS)
    block, b = divmod(k, c)
    return MethodStyle(COLOURS[b], MARKERS[(b + block) % m], LINESTYLES[(k // (c * m)) % len(LINESTYLES)])


def method_styles(labels: Iterable[str]) -> dict[str, MethodStyle]:
    """label -> style, the same for a label whatever else is plotted with it when the label (or,
    for "dataset/scenario/method" labels, its method) is a known method; the other labels take
    the unused styles in sorted label order."""
    labels = sorted(set(labels))
    out: dict[str, MethodStyle] = {}
    taken: set[int] = set()
    for label in labels:  # a full label naming a known method first, then a method suffix
        if label in KNOWN_METHODS:
            k = KNOWN_METHODS.index(label)
            out[label] = style_at(k)
            taken.add(k)
    for label in labels:
        method = label.rsplit("/", 1)[-1]
        if label not in out and method in KNOWN_METHODS and KNOWN_METHODS.index(method) not in taken:
            k = KNOWN_METHODS.index(method)
            out[label] = style_at(k)
            taken.add(k)
    k = 0
    for label in labels:
        if label not in out:
            while k in taken:
                k += 1
            out[label] = style_at(k)
            taken.add(k)
    return out


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


def heatmap_figure(matrix, task_names: Sequence[str], title: str = "", learned=None):
    """The heatmap Figure of heatmap_png (its axes' image holds the masked matrix)."""
    a = np.asarray(matrix, dtype=np.float64)
    t = len(task_names)
    if a.shape != (t, t):
        raise ValueError(f"matrix must be T x T with T = {t} task names; got shape {a.shape}")
    if learned is None:
        learned = np.tril(np.ones((t, t), dtype=bool))
    learned = np.asarray(learned, dtype=bool)
    if learned.shape != (t, t):
        raise ValueError(f"learned must be T x T with T = {t}; got shape {learned.shape}")
    shown = learned & np.isfinite(a)
    from matplotlib.patches import Rectangle  # here, like _figure: no matplotlib on import
    side = min(3.0 + 0.45 * t, 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    # Blank cells: not drawn by imshow, the hatched light grey background shows through.
    ax.set_facecolor("#f2f2f2")
    ax.add_patch(Rectangle((-0.5, -0.5), t, t, facecolor="none", edgecolor="#c8c8c8",
                           hatch="//", linewidth=0, zorder=0))
    image = ax.imshow(np.ma.masked_array(a, mask=~shown), vmin=0.0, vmax=1.0, cmap="viridis",
                      zorder=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    ax.set_xticks(range(t), labels=task_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(t), labels=task_names)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    if title:
        ax.set_title(title)
    if t <= ANNOTATE_MAX_TASKS:
        for i, j in zip(*np.nonzero(shown)):  # tasks not yet trained, unmeasured rows: blank
            # Dark text on the bright end of viridis, light text on the dark end.
            ax.text(j, i, f"{100 * a[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if a[i, j] > 0.6 else "white", zorder=2)
    return fig


def heatmap_png(matrix, task_names: Sequence[str], title: str = "", learned=None) -> bytes:
    """PNG bytes of a T x T accuracy heatmap (fractions in [0, 1]; cells labelled in % if T <= 20).

    Cells where `learned` is False (default: j > i, task j not trained yet after task i) and
    NaN cells are blank."""
    return _png(heatmap_figure(matrix, task_names, title, learned))


def _curves(s: MethodSummary) -> tuple[np.ndarray, np.ndarray]:
    mats = np.stack([np.asarray(r["accuracy_matrix"], dtype=np.float64) for r in s.runs])
    t = mats.shape[1]
    seen = np.stack([mats[:, i, : i + 1].mean(axis=1) for i in range(t)], axis=1)  # (seeds, T)
    return seen, mats.mean(axis=2)


def _position_names(s: MethodSummary) -> list[str]:
    # Curves are by position (x = tasks trained so far); a per-dataset order names no position.
    return s.task_names if s.order == "shared" else [f"task{j + 1}" for j in range(len(s.task_names))]


# Above this many tasks (a stream_il run has 30 chunks) the curves label every k-th tick only.
LABEL_MAX_TICKS = 15


def _thinned(names: Sequence[str]) -> list[str]:
    """Tick labels with at most about LABEL_MAX_TICKS shown (the last always); the others blank."""
    step = -(-len(names) // LABEL_MAX_TICKS)
    return [n if (len(names) - 1 - j) % step == 0 else "" for j, n in enumerate(names)]


def curves_figure(summaries: Sequence[MethodSummary], styles: Mapping[str, MethodStyle] | None = None):
    """The Figure of curves_png; `styles` (label -> MethodStyle) defaults to method_styles."""
    if not summaries:
        raise ValueError("curves_png needs at least one method; got none")
    if styles is None:
        styles = method_styles(s.label for s in summaries)
    longest = max(summaries, key=lambda s: len(s.task_names))
    t = len(longest.task_names)
    fig = _figure(min(10.0 + 0.3 * t, 20.0), 4.5)
    ax_seen, ax_all = fig.subplots(1, 2, sharey=True)
    for s in summaries:
        seen, overall = _curves(s)
        x = np.arange(1, seen.shape[1] + 1)
        style = styles[s.label]
        for ax, values in ((ax_seen, seen), (ax_all, overall)):
            mean = values.mean(axis=0)
            (line,) = ax.plot(x, 100 * mean, color=style.colour, marker=style.marker,
                              linestyle=style.linestyle, markersize=5, label=s.label)
            if values.shape[0] > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(x, 100 * (mean - std), 100 * (mean + std),
                                color=line.get_color(), alpha=0.2, linewidth=0)
    titles = ("average accuracy on seen tasks", "average accuracy on all tasks")
    for ax, title in zip((ax_seen, ax_all), titles):
        ax.set_title(title)
        ax.set_xlabel("after training task")
        ax.set_xticks(range(1, t + 1), labels=_thinned(_position_names(longest)), rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.grid(True, alpha=0.3)
    ax_seen.set_ylabel("accuracy (%)")
    ax_seen.set_ylim(0, 100)
    ax_all.legend(loc="best", fontsize=8, ncol=2 if len(summaries) > 12 else 1)
    return fig


def curves_png(summaries: Sequence[MethodSummary], styles: Mapping[str, MethodStyle] | None = None) -> bytes:
    """PNG bytes of average accuracy on seen / all tasks after each task, one line per method."""
    return _png(curves_figure(summaries, styles))


def heatmap_title(s: MethodSummary) -> str:
    """The method, its seed count, and how seeds with different task orders were averaged."""
    n = len(s.runs)
    title = f"{s.label} ({'1 seed' if n == 1 else f'mean over {n} seeds'})"
    if s.order == "by_name":
        title += "\nseeds order the tasks differently: averaged per dataset"
    elif s.order == "by_position":
        title += "\nseeds order the tasks differently: averaged by position"
    return title


def plot_pngs(results: Mapping) -> dict[str, bytes]:
    """Every heatmap and the curves figure, file name -> PNG bytes (nothing written)."""
    summaries = aggregate(results)
    names = slugs(s.label for s in summaries)
    pngs: dict[str, bytes] = {}
    for s in summaries:
        pngs[heatmap_png_name(names[s.label])] = heatmap_png(s.accuracy_mean, s.task_names,
                                                             heatmap_title(s), s.learned)
    pngs[CURVES_PNG] = curves_png(summaries)
    return pngs


def write_plots(results: Mapping, out_dir) -> dict[str, Path]:
    """Write every heatmap and the curves figure into out_dir; file name -> path."""
    out_dir = Path(out_dir)
    return {name: atomic_write_bytes(out_dir / name, data) for name, data in plot_pngs(results).items()}
