"""HTML reports rendered from the files hardenkit runs save (no model is run here).

* :func:`render_hardening` -> ``RUN_DIR/report.html`` (metrics per round, plots, CAM drift,
  top-loss gallery, configuration).
* :func:`render_mosaic` -> ``OUT/mosaic-report.html`` (status counts, score histogram,
  before/after contact sheet, failed files).
* :func:`render_cam_eval` -> ``cam-eval.html`` next to ``cam-eval.json``.
* :func:`format_rounds_table`: the plain-text per-round table ``harden run`` prints.

Every page is one self-contained file (embedded images, inline CSS, no scripts or external
links). This package imports none of the tool packages and never TensorFlow; matplotlib is
imported only when a plot is drawn.

Example:
    >>> from reports import format_rounds_table
    >>> format_rounds_table([]).split()[0]
    'round'
"""

from __future__ import annotations

from ._plot import PALETTE as PALETTE
from .cam_eval import render_cam_eval as render_cam_eval
from .hardening import format_rounds_table as format_rounds_table
from .hardening import load_metrics as load_metrics
from .hardening import render_hardening as render_hardening
from .mosaic import render_mosaic as render_mosaic

__all__ = ["PALETTE", "format_rounds_table", "load_metrics", "render_cam_eval", "render_hardening",
           "render_mosaic"]
