"""The CAM-evaluation report (``cam-eval.html``) from ``cam eval --out DIR``'s ``cam-eval.json``.

The JSON holds ``{method: {deletion_auc, insertion_auc, pointing_game, item_recall,
mprt_spearman, seconds, ...}, ..., "random": {...}, "curves": {method: {"deletion": [...],
"insertion": [...]}}}`` plus plain entries (``model``, ``data``, ``split``) that are not methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hardenkit.errors import UsageError

from . import _html as h
from ._load import read_json
from ._plot import colour, figure, plot_tag

#: (key, column title, better): ``better`` is "low"/"high" for the best-value highlight.
METRIC_COLUMNS = (("deletion_auc", "deletion AUC (lower is better)", "low"),
                  ("insertion_auc", "insertion AUC (higher is better)", "high"),
                  ("pointing_game", "pointing game (higher is better)", "high"),
                  ("item_recall", "item recall (higher is better)", "high"),
                  ("mprt_spearman", "MPRT Spearman rho (lower is better)", "low"),
                  ("seconds", "seconds", ""))


def load_cam_eval(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Split a cam-eval.json into (methods with ``random`` last, curves, other entries).

    Raises:
        UsageError: Missing, not JSON, not an object, or holds no method.

    Example:
        >>> methods, curves, meta = load_cam_eval("out/cam-eval.json")  # doctest: +SKIP
    """
    p = Path(path)
    data = read_json(p, " (`cam eval --out DIR` writes DIR/cam-eval.json)")
    if not isinstance(data, dict):
        raise UsageError(f"{p}: expected a JSON object, got {type(data).__name__}")
    raw_curves = data.get("curves")
    curves: dict[str, Any] = raw_curves if isinstance(raw_curves, dict) else {}
    methods = {k: v for k, v in data.items() if k != "curves" and isinstance(v, dict)}
    if not methods:
        raise UsageError(f"{p}: holds no method results")
    ordered = {k: v for k, v in methods.items() if k != "random"}
    if "random" in methods:
        ordered["random"] = methods["random"]
    meta = {k: v for k, v in data.items() if k != "curves" and not isinstance(v, dict)}
    return ordered, curves, meta


def _best(methods: dict[str, dict[str, Any]], key: str, better: str) -> float | None:
    vals = [float(m[key]) for name, m in methods.items()
            if name != "random" and isinstance(m.get(key), (int, float)) and not h.is_missing(m[key])]
    if not vals or not better:
        return None
    return min(vals) if better == "low" else max(vals)


def _table(methods: dict[str, dict[str, Any]]) -> str:
    best = {k: _best(methods, k, b) for k, _, b in METRIC_COLUMNS}
    rows: list[list[str]] = []
    for name, m in methods.items():
        cells = [f'<span style="color:{colour(name, len(rows))}">&#9632;</span> {h.esc(name)}'
                 + (" (baseline)" if name == "random" else "")]
        for k, _, _ in METRIC_COLUMNS:
            v = m.get(k)
            text = h.num(v, 2 if k == "seconds" else 3)
            # compare as shown, so a tie at the displayed precision is bold in every row
            if name != "random" and best[k] is not None and text == h.num(best[k], 3):
                text = f"<b>{text}</b>"
            cells.append(text)
        rows.append(cells)
    return (h.table(["method"] + [t for _, t, _ in METRIC_COLUMNS], rows, "cam-eval-table")
            + "<p>Bold: the best method per column (the random-map baseline is the reference a "
              "method must beat). <code>-</code>: not measurable (e.g. no masks).</p>")


def _curves(methods: dict[str, dict[str, Any]], curves: dict[str, Any]) -> str:
    names = [n for n in methods if isinstance(curves.get(n), dict)]
    names += [n for n in curves if n not in names and isinstance(curves[n], dict)]
    if not names:
        return h.note("No deletion/insertion curves were saved.")
    index = {n: i for i, n in enumerate(methods)}
    with figure(ncols=2) as (fig, axes):
        for ax, mode in zip(axes, ("deletion", "insertion")):
            for n in names:
                ys = curves[n].get(mode)
                if not isinstance(ys, list) or len(ys) < 2:
                    continue
                xs = [i / (len(ys) - 1) for i in range(len(ys))]
                ax.plot([100 * x for x in xs], ys, color=colour(n, index.get(n, len(index))),
                        linestyle="--" if n == "random" else "-", label=n)
            verb = "removed" if mode == "deletion" else "inserted"
            hint = "lower area is better" if mode == "deletion" else "higher area is better"
            ax.set_title(f"{mode.capitalize()} curve ({hint})")
            ax.set_xlabel(f"pixels {verb}, most salient first (%)")
            ax.set_ylabel("sensitive score (probability, 0-1)")
            ax.set_xlim(0, 100)
            ax.set_ylim(-0.02, 1.02)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", fontsize="small")
        return plot_tag(fig, "deletion and insertion curves")


def render_cam_eval(path: str | Path) -> Path:
    """Write ``cam-eval.html`` next to a ``cam-eval.json``.

    Args:
        path: The JSON file, or the folder holding ``cam-eval.json``.

    Returns:
        The path of the written HTML file.

    Raises:
        UsageError: The JSON is missing or corrupt.

    Example:
        >>> render_cam_eval("out/cam-eval.json")  # doctest: +SKIP
        PosixPath('out/cam-eval.html')
    """
    p = Path(path)
    if p.is_dir():
        p = p / "cam-eval.json"
    methods, curves, meta = load_cam_eval(p)
    sections = [("methods", "Methods x metrics", _table(methods)),
                ("curves", "Deletion and insertion curves", _curves(methods, curves))]
    if meta:
        sections.append(("run", "Evaluation settings", h.kv_table(meta, "run-table")))
    dst = p.with_name("cam-eval.html")
    h.write_page(dst, h.page("CAM evaluation", f"{len(methods)} method(s) from {p.resolve()}.", sections))
    return dst
