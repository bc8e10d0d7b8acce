"""Matplotlib plots (Agg, no pyplot state) rendered to PNG data URIs, with one palette.

Each metric, sample kind, status and CAM method has one colour used in every plot, so a
reader learns the colour once (Okabe-Ito colour-blind-safe hues).
"""

from __future__ import annotations

import io
from typing import Any, Iterator
from contextlib import contextmanager

from ._html import data_uri, img

#: The one colour per thing plotted, shared by all reports.
PALETTE: dict[str, str] = {
    # hardening metrics
    "accuracy": "#0072B2",
    "robust_accuracy": "#D55E00",
    "fpr": "#CC79A7",
    "miss_rate": "#E69F00",
    "item_recall": "#009E73",
    "pointing_game": "#56B4E9",
    "boxed_flagged": "#332288",
    "alone_flagged": "#882255",
    # kinds of added samples
    "cam_erasure": "#0072B2",
    "attention": "#009E73",
    "adversarial": "#D55E00",
    "jacobian": "#CC79A7",
    "pool": "#E69F00",
    "hard": "#56B4E9",
    # mosaic statuses and scores
    "clean": "#009E73",
    "censored": "#0072B2",
    "unresolved": "#E69F00",
    "failed": "#D55E00",
    "score_before": "#D55E00",
    "score_after": "#0072B2",
    # CAM methods (unknown methods get the fallback cycle)
    "gradcam": "#0072B2",
    "gradcam++": "#D55E00",
    "layercam": "#009E73",
    "scorecam": "#CC79A7",
    "faster-scorecam": "#E69F00",
    "saliency": "#56B4E9",
    "smoothgrad": "#F0E442",
    "random": "#7f7f7f",
}

#: One marker per metric too, so coinciding points (e.g. equal accuracies) stay distinguishable.
MARKERS: dict[str, str] = {"accuracy": "o", "robust_accuracy": "s", "item_recall": "^", "pointing_game": "D",
                           "fpr": "v", "miss_rate": "P", "boxed_flagged": "X",
                           "alone_flagged": "*"}

_FALLBACK = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#882255", "#AA4499")

#: Readable names for metric keys, shared by tables and plots.
LABELS: dict[str, str] = {
    "accuracy": "accuracy", "robust_accuracy": "robust accuracy", "fpr": "false-positive rate",
    "miss_rate": "miss rate", "item_recall": "item recall", "pointing_game": "pointing game",
    "boxed_flagged": "flagged with every item boxed",
    "alone_flagged": "items flagged alone",
    "cam_erasure": "CAM erasure", "attention": "wrong attention", "adversarial": "adversarial (PGD)",
    "jacobian": "Jacobian / boundary", "pool": "pool mining", "hard": "hard cases",
}


def colour(key: str, index: int = 0) -> str:
    """The palette colour of ``key``; unknown keys cycle through a fallback list."""
    return PALETTE.get(key, _FALLBACK[index % len(_FALLBACK)])


@contextmanager
def figure(ncols: int = 1, width: float = 6.4, height: float = 3.6) -> Iterator[tuple[Any, list[Any]]]:
    """A matplotlib Figure (Agg canvas, not registered with pyplot) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    yield fig, axes


def plot_tag(fig: Any, alt: str) -> str:
    """Render ``fig`` to PNG and return an ``<img>`` element embedding it."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return img(data_uri(buf.getvalue(), "image/png"), alt, cls="plot")
