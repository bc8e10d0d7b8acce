"""The mosaic batch report (``OUT/mosaic-report.html``) from what ``mosaic`` saved.

Reads ``OUT/mosaic-report.csv`` (``path,status,score_before,score_after,regions,
censored_fraction,error``; ``path`` relative to the input root; ``status`` one of clean,
censored, unresolved, failed) and ``OUT/mosaic-run.json`` (``{"in": input root, "out": output
root, "report": csv path, ...}``). Outputs mirror the input tree: ``OUT/<path>``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hardenkit.errors import UsageError

from . import _html as h
from ._images import Embedder
from ._load import existing_dir, opt_float, read_csv, read_json
from ._plot import colour, figure, plot_tag

STATUSES = ("clean", "censored", "unresolved", "failed")
CSV_COLUMNS = ("path", "status", "score_before", "score_after", "regions", "censored_fraction", "error")
#: Censored rows sampled into the contact sheet (seeded, so re-rendering gives the same page).
CENSORED_SAMPLE = 24
#: Unresolved rows are all shown, up to this many (the rest stay listed in the CSV).
UNRESOLVED_LIMIT = 500


def load_mosaic_rows(csv_path: Path) -> list[dict[str, Any]]:
    """Parsed rows of a mosaic CSV (scores as float or None, regions as int or None).

    Raises:
        UsageError: Missing file or columns, a status outside :data:`STATUSES`, or a
            number that does not parse.

    Example:
        >>> load_mosaic_rows(Path("out/mosaic-report.csv"))[0]["status"]  # doctest: +SKIP
        'censored'
    """
    rows = []
    for i, r in enumerate(read_csv(csv_path, CSV_COLUMNS, " (expected the CSV written by `mosaic`)"), start=2):
        where = f"{csv_path}: line {i}"
        if r["status"] not in STATUSES:
            raise UsageError(f"{where}: expected status one of {', '.join(STATUSES)}, got {r['status']!r}")
        regions = opt_float(r["regions"], where)
        rows.append({"path": r["path"], "status": r["status"],
                     "score_before": opt_float(r["score_before"], where),
                     "score_after": opt_float(r["score_after"], where),
                     "regions": None if regions is None else int(regions),
                     "censored_fraction": opt_float(r["censored_fraction"], where),
                     "error": r["error"]})
    return rows


def _counts(rows: list[dict[str, Any]]) -> str:
    n = max(1, len(rows))
    table_rows = []
    for s in STATUSES:
        k = sum(r["status"] == s for r in rows)
        swatch = f'<span style="color:{colour(s)}">&#9632;</span> {s}'
        table_rows.append([swatch, str(k), h.pct(k / n)])
    table_rows.append(["<b>total</b>", f"<b>{len(rows)}</b>", ""])
    return h.table(["status", "images", "share"], table_rows, "status-counts")


def _histogram(rows: list[dict[str, Any]], threshold: float | None) -> str:
    before = [r["score_before"] for r in rows if r["score_before"] is not None]
    after = [r["score_after"] for r in rows if r["score_after"] is not None]
    if not before and not after:
        return h.note("No scores were recorded (every file failed).")
    bins = [i / 20 for i in range(21)]
    with figure() as (fig, (ax,)):
        # side-by-side bars per bin: overlapping translucent bars would blend into a third colour
        ax.hist([before, after], bins=bins, color=[colour("score_before"), colour("score_after")],
                label=[f"before ({len(before)} images)", f"after ({len(after)} images)"])
        if threshold is not None:
            ax.axvline(threshold, color="#333333", linestyle=":", label=f"threshold {threshold:.2f}")
        ax.set_title("Sensitive score before and after censoring")
        ax.set_xlabel("sensitive score (probability, 0-1)")
        ax.set_ylabel("images (count)")
        ax.set_xlim(0, 1)
        ax.legend(loc="best", fontsize="small")
        return plot_tag(fig, "score histogram")


def _source(in_root: Path | None, rel: str) -> Path | None:
    if in_root is None:
        return None
    return in_root if in_root.is_file() else in_root / rel


def _contact_sheet(rows: list[dict[str, Any]], in_root: Path | None, out: Path, emb: Embedder) -> str:
    censored = [r for r in rows if r["status"] == "censored"]
    unresolved = [r for r in rows if r["status"] == "unresolved"]
    pick = sorted(random.Random(0).sample(range(len(censored)), min(CENSORED_SAMPLE, len(censored))))
    shown = [censored[i] for i in pick] + unresolved[:UNRESOLVED_LIMIT]
    if not shown:
        return h.note("No censored or unresolved images to show.")
    parts = [f"<p>{len(pick)} of {len(censored)} censored image(s) (seeded sample) and "
             f"{min(len(unresolved), UNRESOLVED_LIMIT)} of {len(unresolved)} unresolved image(s): "
             "input on the left, output on the right.</p>"]
    if len(unresolved) > UNRESOLVED_LIMIT:
        parts.append(h.note(f"{len(unresolved) - UNRESOLVED_LIMIT} more unresolved image(s) are listed "
                            "in the CSV only."))
    if in_root is None:
        parts.append(h.note("mosaic-run.json does not name the input root; input images cannot be shown."))
    figs = []
    for r in shown:
        before = emb.tag(_source(in_root, r["path"]), f"{r['path']} before")
        after = emb.tag(out / r["path"], f"{r['path']} after")
        cap = (f"<b style=\"color:{colour(r['status'])}\">{r['status']}</b> {h.esc(r['path'])}<br>"
               f"score {h.num(r['score_before'])} &rarr; {h.num(r['score_after'])}, "
               f"{r['regions'] if r['regions'] is not None else '-'} region(s), "
               f"{h.pct(r['censored_fraction'])} censored")
        figs.append(f'<figure class="sheet-item"><div class="pair"><div>{before}<br>before</div>'
                    f"<div>{after}<br>after</div></div><figcaption>{cap}</figcaption></figure>")
    return "\n".join(parts) + '\n<div class="gallery" id="contact-sheet">\n' + "\n".join(figs) + "\n</div>"


def _failed(rows: list[dict[str, Any]]) -> str:
    failed = [r for r in rows if r["status"] == "failed"]
    if not failed:
        return "<p>No file failed.</p>"
    return h.table(["file", "reason"], [[h.esc(r["path"]), h.esc(r["error"] or "(no reason recorded)")]
                                         for r in failed], "failed-table", left=(0, 1))


def _run_info(out: Path) -> dict[str, Any]:
    """``mosaic-run.json`` (or the first shard's ``mosaic-run-IofN.json``); {} if absent."""
    single = out / "mosaic-run.json"
    found = [single] if single.is_file() else sorted(out.glob("mosaic-run-*of*.json"))
    if not found:
        return {}
    loaded = read_json(found[0])
    if not isinstance(loaded, dict):
        raise UsageError(f"{found[0]}: expected a JSON object, got {type(loaded).__name__}")
    return loaded


def _report_csvs(out: Path, run: dict[str, Any]) -> list[Path]:
    """``mosaic-report.csv``, else every shard's ``mosaic-report-IofN.csv``, else the one the run names."""
    if (out / "mosaic-report.csv").is_file():
        return [out / "mosaic-report.csv"]
    shards = sorted(out.glob("mosaic-report-*of*.csv"))
    if shards:
        return shards
    named = run.get("report")
    return [Path(named) if isinstance(named, str) else out / "mosaic-report.csv"]


def render_mosaic(out_dir: str | Path) -> Path:
    """Write ``OUT/mosaic-report.html`` from a mosaic output folder.

    Shows counts per status, a before/after score histogram, a contact sheet of before/after
    pairs (a seeded sample of up to 24 censored images and all unresolved ones) and the failed
    files with their reasons. Input images that can no longer be read show a placeholder.
    A sharded run (``mosaic-report-IofN.csv`` per shard, no combined CSV) is shown as one.

    Args:
        out_dir: The ``--out`` folder of a mosaic run.

    Returns:
        The path of the written HTML file.

    Raises:
        UsageError: The folder or its CSV is missing or corrupt.

    Example:
        >>> render_mosaic("censored/")  # doctest: +SKIP
        PosixPath('censored/mosaic-report.html')
    """
    out = existing_dir(out_dir, "mosaic output folder")
    run = _run_info(out)
    csvs = _report_csvs(out, run)
    rows = [row for c in csvs for row in load_mosaic_rows(c)]
    in_root = Path(run["in"]) if isinstance(run.get("in"), str) else None
    thr = run.get("threshold")
    threshold = float(thr) if isinstance(thr, (int, float)) else None
    with Embedder(max_side=200) as emb:
        sections = [
            ("counts", "Images per status", _counts(rows)),
            ("scores", "Scores before and after", _histogram(rows, threshold)),
            ("contact-sheet-section", "Contact sheet", _contact_sheet(rows, in_root, out, emb)),
            ("failed", "Failed files", _failed(rows)),
        ]
    if run:
        sections.append(("run", "Run settings", h.kv_table(run, "run-table")))
    sub = f"{len(rows)} image(s) from {run.get('in', '(input root unknown)')} written to {out.resolve()}."
    dst = out / "mosaic-report.html"
    h.write_page(dst, h.page("Mosaic report", sub, sections))
    return dst
