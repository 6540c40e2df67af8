"""Matplotlib figures on an Agg canvas of their own (no pyplot state, so a notebook keeps its backend). No torch:
the offline leaderboard draws with it and starts without loading torch."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def figure(nrows: int = 1, ncols: int = 1, **kwargs) -> tuple[Figure, object]:
    """A figure and its axes, on an Agg canvas of its own (``Figure.subplots``; no pyplot state)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols)
