"""Heatmaps in the style of the paper's Fig. 4: source block on the vertical axis, target block on the
horizontal one, values in [0, 1].

Drawn with matplotlib's object API on the Agg canvas (no pyplot), so importing this never changes the
caller's backend, and written to a temporary file that is renamed into place, so an interrupted run
leaves no truncated PNG behind.
"""

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..files import atomic_path

__all__ = ["save_heatmap"]


def _stage_edges(labels: Sequence[str]) -> list:
    """Positions between consecutive labels whose stage ("3" of "3.1") differs."""
    stages = [label.split(".")[0] for label in labels]
    return [index - 0.5 for index in range(1, len(stages)) if stages[index] != stages[index - 1]]


def save_heatmap(
    matrix: np.ndarray,
    path: Union[str, Path],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    colorbar_label: str,
    annotations: Optional[np.ndarray] = None,
) -> Path:
    """Draw ``matrix`` (values in [0, 1], NaN for "no connection") as a PNG heatmap.

    Args:
        matrix: ``(len(row_labels), len(col_labels))``; rows are source blocks, columns target blocks.
        path: the PNG to write; its folder is created.
        row_labels: one label per row, ``"stage.unit"`` (``"2.0"``) or e.g. ``"stem"``.
        col_labels: one label per column.
        title: figure title.
        colorbar_label: what the colour means.
        annotations: optional integers written in the non-zero cells (e.g. channel counts).

    Returns:
        The path written.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix shape {matrix.shape} does not match {len(row_labels)} row and {len(col_labels)} column labels"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    side = 0.42 * max(len(row_labels), len(col_labels)) + 2.0
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    masked = np.ma.masked_invalid(np.where(matrix == 0, np.nan, matrix))
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="#f2f2f2")  # "no connection" in light grey
    image = axes.imshow(masked, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest")
    if annotations is not None:
        for (row, col), value in np.ndenumerate(np.asarray(annotations)):
            if value:
                colour = "black" if matrix[row, col] > 0.6 else "white"
                axes.text(col, row, f"{int(value)}", ha="center", va="center", fontsize=6, color=colour)
    for edge in _stage_edges(col_labels):
        axes.axvline(edge, color="black", linewidth=0.8)
    for edge in _stage_edges(row_labels):
        axes.axhline(edge, color="black", linewidth=0.8)
    axes.set_xticks(range(len(col_labels)), labels=col_labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(row_labels)), labels=row_labels, fontsize=7)
    axes.set_xlabel("target block l (stage.unit)")
    axes.set_ylabel("source block s (stage.unit)")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8, label=colorbar_label)

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=130)
    return path
