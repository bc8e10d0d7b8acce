"""The hardening-run report (``RUN_DIR/report.html``) and the plain-text rounds table.

Reads only what ``harden run`` saved; no model is loaded or run:

* ``RUN_DIR/metrics.json``: a list, one object per round (round 0 = baseline) with
  ``round, accuracy, fpr, miss_rate, robust_accuracy, pointing_game, item_recall, boxed_flagged,
  alone_flagged, threshold,
  samples_added{kind: n}, robust_by_eps{"eps": acc}, confusion [[tn, fp], [fn, tp]], seconds``,
  ``start_round`` (the round it retrained from, shown when not the one before) and ``train_eps``
  (the training attack's budget), ``train_steps`` (its PGD steps), ``overfit_fallback`` (true
  for the round whose training overfit and was redone at ``eps`` or with more steps).
* ``RUN_DIR/round-K/drift/*.png``: CAM overlays of the same test images every round.
* ``RUN_DIR/round-K/top-loss.csv``: ``file,true_label,score,loss,overlay`` (overlay relative
  to RUN_DIR).
* ``RUN_DIR/config.json``: the run's configuration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from hardenkit.cli import format_budget
from hardenkit.errors import UsageError

from . import _html as h
from ._images import Embedder
from ._load import existing_dir, opt_float, read_csv, read_json
from ._plot import LABELS, MARKERS, colour, figure, plot_tag

#: Metrics drawn across rounds, in legend order: higher is better, then lower is better.
QUALITY_METRICS = ("accuracy", "robust_accuracy", "item_recall", "pointing_game", "alone_flagged")
ERROR_METRICS = ("fpr", "miss_rate", "boxed_flagged")
ROUND_METRICS = QUALITY_METRICS + ERROR_METRICS
#: Kinds of samples a round adds, in stacking order (unknown kinds are appended).
SAMPLE_KINDS = ("cam_erasure", "attention", "adversarial", "jacobian", "pool", "hard")
TOP_LOSS_COLUMNS = ("file", "true_label", "score", "loss", "overlay")

_TABLE_COLUMNS = (("accuracy", "acc"), ("fpr", "fpr"), ("miss_rate", "miss"), ("robust_accuracy", "robust"),
                  ("pointing_game", "pointing"), ("item_recall", "item rec"), ("boxed_flagged", "boxed"),
                  ("alone_flagged", "alone"))


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds of ``RUN_DIR/metrics.json``, sorted by round.

    Raises:
        UsageError: The folder or file is missing, or the file is not a list of rounds.

    Example:
        >>> load_metrics("runs/demo")[0]["round"]  # doctest: +SKIP
        0
    """
    path = existing_dir(run_dir, "hardening run folder") / "metrics.json"
    data = read_json(path, " (is this a hardening run folder? `harden run --out DIR` writes it)")
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of rounds, got {type(data).__name__}")
    if not data:
        raise UsageError(f"{path}: holds no rounds yet")
    for i, m in enumerate(data):
        if not isinstance(m, dict) or not isinstance(m.get("round"), int):
            raise UsageError(f"{path}: entry {i} is not a round object with an integer \"round\"")
    return sorted(data, key=lambda m: m["round"])


def _metric(m: dict[str, Any], key: str) -> float | None:
    v = m.get(key)
    return v if isinstance(v, (int, float)) and not math.isnan(v) else None


def _added(m: dict[str, Any]) -> dict[str, int]:
    raw = m.get("samples_added")
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, (int, float))}


def format_rounds_table(metrics: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one line per round (printed at the end of ``harden run``).

    Args:
        metrics: The rounds as saved in ``metrics.json``.

    Returns:
        The table, header first, without a trailing newline. Missing metrics show ``-``.

    Example:
        >>> print(format_rounds_table([{"round": 0, "accuracy": 0.9, "fpr": 0.1, "miss_rate": 0.05,
        ...     "robust_accuracy": 0.4, "pointing_game": None, "item_recall": None,
        ...     "samples_added": {"pool": 0}, "seconds": 3.2}]))
        round     acc     fpr    miss  robust pointing item rec   boxed   alone  added  seconds
            0   90.0%   10.0%    5.0%   40.0%        -        -       -       -      0        3
    """
    widths = [5] + [7, 7, 7, 7, 8, 8, 7, 7] + [6, 8]
    head = ["round"] + [label for _, label in _TABLE_COLUMNS] + ["added", "seconds"]
    lines = [" ".join(f"{c:>{w}}" for c, w in zip(head, widths))]
    for m in metrics:
        secs = _metric(m, "seconds")
        cells = ([str(m.get("round", "?"))] + [h.pct(_metric(m, k)) for k, _ in _TABLE_COLUMNS]
                 + [str(sum(_added(m).values())), "-" if secs is None else f"{secs:.0f}"])
        lines.append(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def format_round_line(m: dict[str, Any]) -> str:
    """The one-line summary ``harden run`` prints as each round ends (the table's columns).

    Example:
        >>> format_round_line({"round": 2, "accuracy": 0.9, "fpr": 0.1, "samples_added": {"pool": 3},
        ...                    "seconds": 12.0, "start_round": 0})
        'round 2: acc 90.0%  fpr 10.0%  miss -  robust -  pointing -  item rec -  boxed -  alone -  +3 samples  12s (from round 0)'
    """
    notes = round_notes(m)
    secs = _metric(m, "seconds")
    cells = "  ".join(f"{label} {h.pct(_metric(m, k))}" for k, label in _TABLE_COLUMNS)
    return (f"round {m.get('round', '?')}: {cells}  +{sum(_added(m).values())} samples  "
            f"{'-' if secs is None else f'{secs:.0f}'}s" + (f" ({'; '.join(notes)})" if notes else ""))


# ---- sections -------------------------------------------------------------------------------

def _added_cell(added: dict[str, int]) -> str:
    parts = ", ".join(f"{LABELS.get(k, k)} {n}" for k, n in added.items() if n)
    return f"{sum(added.values())}" + (f' <small title="{h.esc(parts)}">({h.esc(parts)})</small>' if parts else "")


def restarted_from(m: dict[str, Any]) -> int | None:
    """The earlier round a round retrained from when that is not the one before it, else None.

    Example:
        >>> restarted_from({"round": 3, "start_round": 1}), restarted_from({"round": 3, "start_round": 2})
        (1, None)
    """
    src = m.get("start_round")
    return src if isinstance(src, int) and m["round"] > 0 and src != m["round"] - 1 else None


def round_notes(m: dict[str, Any]) -> list[str]:
    """What set a round apart: "from round k" if it restarted from an earlier round (see
    :func:`restarted_from`), "overfit: retrained at e/255" if its training overfit and was redone
    at the measured budget (``overfit_fallback`` in ``metrics.json``), with ", PGD-k" when that
    training attack took k > 1 steps (``train_steps``).

    Example:
        >>> round_notes({"round": 3, "start_round": 1, "overfit_fallback": True, "train_eps": 8 / 255})
        ['from round 1', 'overfit: retrained at 8/255']
        >>> round_notes({"round": 2, "start_round": 1, "overfit_fallback": True, "train_eps": 8 / 255, "train_steps": 2})
        ['overfit: retrained at 8/255, PGD-2']
        >>> round_notes({"round": 3, "start_round": 2})
        []
    """
    notes = []
    src = restarted_from(m)
    if src is not None:
        notes.append(f"from round {src}")
    eps = _metric(m, "train_eps")
    if m.get("overfit_fallback") and eps is not None:
        note = f"overfit: retrained at {format_budget(eps)}"
        steps = m.get("train_steps")
        if isinstance(steps, int) and steps > 1:
            note += f", PGD-{steps}"
        notes.append(note)
    return notes


def _round_cell(m: dict[str, Any]) -> str:
    """The round number; "(baseline)" for round 0, else with its :func:`round_notes`."""
    if m["round"] == 0:
        return "0 (baseline)"
    notes = round_notes(m)
    return f"{m['round']} ({'; '.join(notes)})" if notes else str(m["round"])


def _metrics_table(metrics: list[dict[str, Any]]) -> str:
    header = (["round"] + [LABELS[k] for k, _ in _TABLE_COLUMNS] + ["threshold", "samples added", "seconds"])
    rows = []
    for m in metrics:
        added = _added(m)
        rows.append([_round_cell(m)]
                    + [h.pct(_metric(m, k)) for k, _ in _TABLE_COLUMNS]
                    + [h.num(_metric(m, "threshold"))]
                    + [_added_cell(added)]
                    + [h.num(_metric(m, "seconds"), 1)])
    return h.table(header, rows, "metrics-table")


def _rounds_plot(metrics: list[dict[str, Any]]) -> str:
    rounds = [m["round"] for m in metrics]
    panels = (("Quality per round (higher is better)", QUALITY_METRICS),
              ("Errors per round (lower is better)", ERROR_METRICS))
    absent = [LABELS[k] for k in ROUND_METRICS if all(_metric(m, k) is None for m in metrics)]
    with figure(ncols=2) as (fig, axes):
        for ax, (title, keys) in zip(axes, panels):
            for k in keys:
                ys = [_metric(m, k) for m in metrics]
                if all(y is None for y in ys):
                    continue
                ax.plot(rounds, [math.nan if y is None else 100 * y for y in ys], marker=MARKERS[k],
                        markersize=7, color=colour(k), label=LABELS[k], alpha=0.9)
            ax.set_title(title)
            ax.set_xlabel("round (0 = baseline)")
            ax.set_ylabel("percent of test images (%)")
            ax.set_xticks(rounds)
            if keys == ERROR_METRICS:  # error rates are small: zoom in, but keep 0 in view
                top = max([100 * y for k in keys for m in metrics if (y := _metric(m, k)) is not None] + [5.0])
                ax.set_ylim(0, min(102, 1.15 * top))
            else:
                ax.set_ylim(-2, 102)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", fontsize="small")
        tag = plot_tag(fig, "metrics across rounds")
    extra = h.note(f"Not measured in this run: {', '.join(absent)} "
                   "(item recall, pointing game and the boxed and alone item checks need ground-truth masks; "
                   "the alone check, images holding two or more items).") if absent else ""
    return tag + extra


def _robust_plot(first: dict[str, Any], last: dict[str, Any]) -> str:
    def curve(m: dict[str, Any]) -> list[tuple[float, float]]:
        raw = m.get("robust_by_eps")
        pts = []
        if isinstance(raw, dict):
            for k, v in raw.items():
                try:
                    e = float(k)
                except ValueError:
                    continue
                if isinstance(v, (int, float)) and not math.isnan(v):
                    pts.append((e, float(v)))
        return sorted(pts)

    rounds = [first] if first is last else [first, last]
    curves = [(m["round"], curve(m)) for m in rounds]
    if not any(pts for _, pts in curves):
        return h.note("No robust accuracy per epsilon was recorded in this run.")
    with figure() as (fig, (ax,)):
        for (r, pts), style in zip(curves, ("--", "-")):
            if pts:
                ax.plot([255 * e for e, _ in pts], [100 * a for _, a in pts], style, marker="o",
                        color=colour("robust_accuracy"), alpha=0.55 if style == "--" else 1.0,
                        label=f"round {r}" + (" (baseline)" if r == 0 else ""))
        ax.set_title("Robust accuracy under PGD vs attack budget")
        ax.set_xlabel("epsilon, L-inf budget (x 1/255)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(loc="best", fontsize="small")
        return plot_tag(fig, "robust accuracy versus epsilon")


def _confusion(m: dict[str, Any]) -> str:
    c = m.get("confusion")
    title = f"<p><b>round {m['round']}</b>{' (baseline)' if m['round'] == 0 else ''}</p>"
    try:
        (tn, fp), (fn, tp) = [[int(v) for v in row] for row in c]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return title + h.note("No confusion matrix recorded for this round.")
    neg, pos = max(1, tn + fp), max(1, fn + tp)
    rows = [["true: not sensitive", f"{tn} ({h.pct(tn / neg)})", f"{fp} ({h.pct(fp / neg)})"],
            ["true: sensitive", f"{fn} ({h.pct(fn / pos)})", f"{tp} ({h.pct(tp / pos)})"]]
    return title + h.table(["", "predicted: not sensitive", "predicted: sensitive"], rows,
                           f"confusion-round-{m['round']}")


def _samples_plot(metrics: list[dict[str, Any]]) -> str:
    rounds = [m["round"] for m in metrics]
    kinds = list(SAMPLE_KINDS) + sorted({k for m in metrics for k in _added(m)} - set(SAMPLE_KINDS))
    if not any(sum(_added(m).values()) for m in metrics):
        return h.note("No samples were added yet (only the baseline round has run, or every kind is off).")
    with figure() as (fig, (ax,)):
        bottom = [0] * len(rounds)
        for i, k in enumerate(kinds):
            vals = [_added(m).get(k, 0) for m in metrics]
            ax.bar(rounds, vals, bottom=bottom, color=colour(k, i), label=LABELS.get(k, k))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title("Training samples added per round, by kind")
        ax.set_xlabel("round (0 = baseline)")
        ax.set_ylabel("samples added (count)")
        ax.set_xticks(rounds)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize="small")
        return plot_tag(fig, "samples added per round")


def _drift(run: Path, first: int, last: int, emb: Embedder) -> str:
    rounds = [first] if first == last else [first, last]
    files = {r: {p.name: p for p in sorted((run / f"round-{r}" / "drift").glob("*.png"))} for r in rounds}
    names = sorted(set().union(*files.values()))
    if not names:
        return h.note("No CAM drift images were saved (drift_images = 0, or the run has not saved any).")
    header = ["test image"] + [f"round {r}" + (" (baseline)" if r == 0 else "") for r in rounds]
    rows = [[h.esc(n)] + [emb.tag(files[r].get(n), f"{n} round {r}") for r in rounds] for n in names]
    intro = ("<p>The same test images, with the CAM heatmap of the baseline and of the last round "
             "side by side: did the model move its attention to the right region?</p>")
    extra = h.note("Only the baseline round has run; the last-round column appears after round 1.") \
        if first == last else ""
    return intro + extra + h.table(header, rows, "drift-table")


def _top_loss(run: Path, last: int, emb: Embedder) -> str:
    path = run / f"round-{last}" / "top-loss.csv"
    if not path.is_file():
        return h.note(f"No top-loss gallery saved for round {last}.")
    rows_in = read_csv(path, TOP_LOSS_COLUMNS)
    if not rows_in:
        return h.note(f"The top-loss gallery of round {last} is empty.")
    rows = []
    for i, r in enumerate(rows_in, start=2):
        score = opt_float(r["score"], f"{path}: line {i}")
        loss = opt_float(r["loss"], f"{path}: line {i}")
        ov = run / r["overlay"] if r["overlay"] else None
        rows.append([emb.tag(ov, Path(r["file"]).name), h.esc(r["file"]), h.esc(r["true_label"]),
                     h.num(score), h.num(loss)])
    return (f"<p>Round {last}: the test images the model is most wrong about (highest loss), with "
            f"its CAM overlay and sensitive score.</p>"
            + h.table(["CAM overlay", "file", "true label", "sensitive score", "loss"], rows,
                      "top-loss-table", left=(0, 1, 2)))


def _config(run: Path) -> str:
    path = run / "config.json"
    if not path.is_file():
        return h.note("No config.json in this run folder.")
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return h.kv_table(cfg, "config-table")


def render_hardening(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` from the files a hardening run saved.

    The page is self-contained (plots and images embedded as data URIs, inline CSS) and opens
    from disk without a server. Missing optional pieces (masks, drift images, top-loss
    gallery, config) show a short note instead.

    Args:
        run_dir: The run folder written by ``harden run --out``.

    Returns:
        The path of the written ``report.html``.

    Raises:
        UsageError: The folder or ``metrics.json`` is missing or corrupt, or a saved CSV
            lacks its columns.

    Example:
        >>> render_hardening("runs/demo")  # doctest: +SKIP
        PosixPath('runs/demo/report.html')
    """
    run = Path(run_dir)
    metrics = load_metrics(run)
    first, last = metrics[0], metrics[-1]
    with Embedder(max_side=240) as emb:
        sections = [
            ("metrics", "Metrics per round", _metrics_table(metrics) + _rounds_plot(metrics)),
            ("robustness", "Robust accuracy vs epsilon", _robust_plot(first, last)),
            ("confusion", "Confusion matrices",
             _confusion(first) + ("" if first is last else _confusion(last))),
            ("samples", "Samples added", _samples_plot(metrics)),
            ("drift", "CAM drift", _drift(run, first["round"], last["round"], emb)),
            ("top-loss", f"Top-loss gallery (round {last['round']})", _top_loss(run, last["round"], emb)),
            ("config", "Configuration", _config(run)),
        ]
    sub = (f"{run.resolve()}: {len(metrics)} round(s), baseline round {first['round']} "
           f"to round {last['round']}.")
    out = run / "report.html"
    h.write_page(out, h.page("Hardening report", sub, sections))
    return out
