"""reports: HTML pages rendered from saved run files (fake runs written here, no model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hardenkit.errors import UsageError
from hardenkit.imageio import read_image, write_image
from reports import format_rounds_table, render_cam_eval, render_hardening, render_mosaic

CHROMIUM = Path("/usr/bin/chromium")
KINDS = ("cam_erasure", "attention", "adversarial", "jacobian", "pool")
DRIFT = ("00-sens_001.png", "01-sens_007.png", "02-normal_003.png")


def _png(path: Path, seed: int, size: int = 12) -> None:
    write_image(path, np.random.default_rng(seed).random((size, size, 3)))


def _round(r: int, item_recall: float | None = 0.5) -> dict:
    return {"round": r, "accuracy": 0.80 + 0.05 * r, "fpr": 0.20 - 0.05 * r, "miss_rate": 0.15 - 0.03 * r,
            "robust_accuracy": 0.30 + 0.1 * r, "pointing_game": None if item_recall is None else 0.6,
            "item_recall": item_recall, "boxed_flagged": None if item_recall is None else 0.1,
            "alone_flagged": None if item_recall is None else 0.7, "threshold": 0.5,
            "samples_added": {k: (0 if r == 0 else 3 * r + i) for i, k in enumerate(KINDS)},
            "robust_by_eps": {"0.0157": 0.5 + 0.05 * r, "0.0314": 0.3 + 0.1 * r, "0.0627": 0.1 + 0.1 * r},
            "confusion": [[40 + r, 10 - r], [6 - r, 44 + r]], "seconds": 12.5, "val_score": 0.8}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A fake 3-round hardening run: metrics, drift overlays, top-loss CSVs, config."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps([{**_round(r), "start_round": (None, 0, 0)[r], "overfit_fallback": r == 1,
                                                   "train_eps": None if r == 0 else 8 / 255} for r in range(3)],
                                                 indent=2))
    (run / "config.json").write_text(json.dumps({"rounds": 2, "eps": 0.0314, "weights": {"pool": 1.0}}))
    for r in range(3):
        for j, name in enumerate(DRIFT):
            _png(run / f"round-{r}" / "drift" / name, 10 * r + j)
        lines = ["file,true_label,score,loss,overlay"]
        for j in range(4):
            rel = f"round-{r}/top-loss/{j:02d}-x{j}.png"
            _png(run / rel, 100 + 10 * r + j)
            lines.append(f"/data/test/sensitive/x{j}.jpg,sensitive,{0.1 * j:.4f},{2.0 - 0.3 * j:.4f},{rel}")
        (run / f"round-{r}" / "top-loss.csv").write_text("\n".join(lines) + "\n")
    return run


def _check_self_contained(page: Path) -> list[str]:
    """Every <img> is a data: URI or an existing relative file; no web URLs. Returns the srcs."""
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"https?://", text), "the page must not reference the web"
    assert "<script" not in text and "<link" not in text
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    for s in srcs:
        if not s.startswith("data:image/"):
            assert not re.match(r"^[a-z]+:", s) and (page.parent / s).is_file(), f"broken image link {s[:60]}"
    return srcs


def _table(text: str, table_id: str) -> str:
    m = re.search(rf'<table id="{re.escape(table_id)}">(.*?)</table>', text, re.S)
    assert m, f"table {table_id} missing"
    return m.group(1)


def _body_rows(text: str, table_id: str) -> int:
    body = _table(text, table_id).split("<tbody>", 1)[1]
    return body.count("<tr>")


def test_hardening_report_contents(run_dir: Path) -> None:
    out = render_hardening(run_dir)
    assert out == run_dir / "report.html"
    srcs = _check_self_contained(out)
    text = out.read_text()
    assert _body_rows(text, "metrics-table") == 3
    assert _body_rows(text, "drift-table") == len(DRIFT)
    assert _body_rows(text, "top-loss-table") == 4
    assert _body_rows(text, "confusion-round-0") == 2 and "confusion-round-2" in text
    assert "confusion-round-1" not in text  # only the baseline and the last round
    assert _body_rows(text, "config-table") == 3
    # 3 plots (rounds, robust vs eps, samples) + drift 3 x 2 rounds + 4 top-loss overlays
    assert len(srcs) == 3 + 2 * len(DRIFT) + 4
    assert all(s.startswith("data:image/") for s in srcs)
    drift = _table(text, "drift-table")
    assert "round 0 (baseline)" in drift and "round 2" in drift and "round 1" not in drift
    assert "85.0%" in _table(text, "metrics-table")  # round 1 accuracy as a percentage
    assert "2 (from round 0)" in _table(text, "metrics-table") and "1 (from" not in text  # round 2 restarted
    assert "1 (overfit: retrained at 8/255)" in _table(text, "metrics-table")  # round 1's training overfit
    assert text.count("overfit: retrained") == 1
    assert "Not measured" not in text
    assert out.stat().st_mode & 0o044, "a report is shared: not private like the atomic temp file"


def test_hardening_report_degrades_gracefully(tmp_path: Path) -> None:
    """Baseline only, no masks, no drift images, no gallery, no config: notes, not a crash."""
    run = tmp_path / "run"
    run.mkdir()
    m = _round(0, item_recall=None)
    m["robust_accuracy"] = float("nan")
    del m["confusion"]
    (run / "metrics.json").write_text(json.dumps([m]))  # json writes NaN; the report shows "-"
    text = render_hardening(run).read_text()
    assert _body_rows(text, "metrics-table") == 1
    assert ("Not measured in this run: robust accuracy, item recall, pointing game, items flagged alone, "
            "flagged with every item boxed (" in text)
    assert "No CAM drift images were saved" in text
    assert "No top-loss gallery saved" in text
    assert "No confusion matrix recorded" in text
    assert "No config.json" in text
    assert "No samples were added yet" in text
    assert len(re.findall(r"<img ", text)) == 2  # metrics + robustness plots; no empty samples plot
    assert "drift-table" not in text
    _check_self_contained(run / "report.html")


def test_hardening_report_placeholder_for_unreadable_overlay(run_dir: Path) -> None:
    (run_dir / "round-2" / "drift" / DRIFT[0]).write_bytes(b"")  # zero-byte overlay
    (run_dir / "round-2" / "top-loss" / "01-x1.png").unlink()
    text = render_hardening(run_dir).read_text()
    assert text.count('class="missing"') == 2
    assert "zero-byte file" in text and "no such file" in text
    assert len(re.findall(r"<img ", text)) == 3 + 2 * len(DRIFT) + 4 - 2


@pytest.mark.parametrize("content, match", [
    (None, r"metrics\.json: no such file"),
    ("{not json", r"metrics\.json: not valid JSON"),
    ('{"round": 0}', r"metrics\.json: expected a JSON list of rounds, got dict"),
    ("[]", r"metrics\.json: holds no rounds"),
    ('[{"accuracy": 0.5}]', r"metrics\.json: entry 0 is not a round object"),
])
def test_hardening_report_bad_metrics(tmp_path: Path, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / "metrics.json").write_text(content)
    with pytest.raises(UsageError, match=match):
        render_hardening(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_hardening_report_missing_folder_and_bad_csv(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        render_hardening(tmp_path / "nope")
    (run_dir / "round-2" / "top-loss.csv").write_text("file,score\na.jpg,0.5\n")
    with pytest.raises(UsageError, match=r"top-loss\.csv: missing column\(s\) true_label, loss, overlay"):
        render_hardening(run_dir)


def test_format_rounds_table() -> None:
    text = format_rounds_table([_round(0), _round(1, item_recall=None)])
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["round", "acc", "fpr"]
    assert lines[1].split()[:2] == ["0", "80.0%"]
    assert lines[2].split()[0] == "1" and lines[2].split()[-2] == str(sum(3 + i for i in range(5)))
    assert lines[2].count(" - ") >= 1  # missing item recall / pointing game


# ---- mosaic --------------------------------------------------------------------------------

def _mosaic_out(tmp_path: Path, n_censored: int = 30) -> Path:
    src, out = tmp_path / "in", tmp_path / "out"
    rows = ["path,status,score_before,score_after,regions,censored_fraction,error"]
    for i in range(n_censored):
        rel = f"sub/c{i:02d}.png"
        _png(src / rel, i)
        _png(out / rel, 1000 + i)
        rows.append(f"{rel},censored,0.9,0.1,1,0.12,")
    for i in range(3):
        rel = f"u{i}.jpg"
        write_image(src / rel, np.full((40, 30, 3), 0.2 * i))
        write_image(out / rel, np.full((40, 30, 3), 0.3))
        rows.append(f"{rel},unresolved,0.95,0.7,2,0.3,")
    for i in range(2):
        rel = f"clean{i}.png"
        _png(src / rel, 500 + i)
        _png(out / rel, 500 + i)
        rows.append(f"{rel},clean,0.05,0.05,0,0.0,")
    (src / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    rows.append('bad.jpg,failed,,,,,"bad.jpg: corrupt image (cannot identify, really)"')
    rows.append("gone.png,failed,,,,,no such file")
    (out / "mosaic-report.csv").write_text("\n".join(rows) + "\n")
    (out / "mosaic-run.json").write_text(json.dumps({"in": str(src), "out": str(out),
                                                      "report": str(out / "mosaic-report.csv"),
                                                      "threshold": 0.5}))
    return out


def test_mosaic_report_contents(tmp_path: Path) -> None:
    out = _mosaic_out(tmp_path)
    (tmp_path / "in" / "u1.jpg").write_bytes(b"")  # input no longer readable -> placeholder
    csv_before = (out / "mosaic-report.csv").read_bytes()
    page = render_mosaic(out)
    assert page == out / "mosaic-report.html"
    assert (out / "mosaic-report.csv").read_bytes() == csv_before
    srcs = _check_self_contained(page)
    text = page.read_text()
    counts = _table(text, "status-counts")
    for status, n in (("clean", 2), ("censored", 30), ("unresolved", 3), ("failed", 2)):
        assert re.search(rf"{status}</td><td>{n}</td>", counts), status
    assert _body_rows(text, "failed-table") == 2
    assert "cannot identify, really" in text and "gone.png" in text
    sheet = text.split('id="contact-sheet"', 1)[1]
    assert sheet.count('class="sheet-item"') == 24 + 3
    assert sum(f"u{i}.jpg" in sheet for i in range(3)) == 3
    assert sheet.count('class="missing"') == 1 and "zero-byte file" in sheet
    assert len(srcs) == 1 + 2 * 27 - 1  # histogram + pairs - placeholder


def test_mosaic_report_without_run_json_and_bad_csv(tmp_path: Path) -> None:
    out = _mosaic_out(tmp_path, n_censored=2)
    (out / "mosaic-run.json").unlink()
    text = render_mosaic(out).read_text()
    assert "does not name the input root" in text
    assert text.split('id="contact-sheet"', 1)[1].count('class="missing"') == 5  # every "before"
    (out / "mosaic-report.csv").write_text("path,status,score_before,score_after,regions,censored_fraction,error\n"
                                           "a.png,weird,0.1,0.1,0,0,\n")
    with pytest.raises(UsageError, match=r"line 2: expected status one of clean, censored"):
        render_mosaic(out)
    (out / "mosaic-report.csv").unlink()
    with pytest.raises(UsageError, match=r"mosaic-report\.csv: no such file"):
        render_mosaic(out)


def test_mosaic_report_combines_shards(tmp_path: Path) -> None:
    out = _mosaic_out(tmp_path, n_censored=4)
    lines = (out / "mosaic-report.csv").read_text().splitlines()
    (out / "mosaic-report.csv").unlink()
    (out / "mosaic-run.json").rename(out / "mosaic-run-1of2.json")
    (out / "mosaic-report-1of2.csv").write_text("\n".join(lines[:5]) + "\n")  # header + 4 censored
    (out / "mosaic-report-2of2.csv").write_text("\n".join([lines[0], *lines[5:]]) + "\n")
    text = render_mosaic(out).read_text()
    assert re.search(r"<b>total</b></td><td><b>11</b>", text)
    assert text.split('id="contact-sheet"', 1)[1].count('class="sheet-item"') == 4 + 3
    assert "does not name the input root" not in text


def test_mosaic_report_command(tmp_path: Path) -> None:
    from mosaic._report_cmd import report_cmd

    out = _mosaic_out(tmp_path, n_censored=3)
    res = CliRunner().invoke(report_cmd, [str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out / "mosaic-report.html")
    assert (out / "mosaic-report.html").is_file()
    bad = CliRunner().invoke(report_cmd, [str(tmp_path / "nope")])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: ") and "no such folder" in bad.stderr
    assert "Traceback" not in bad.output
    (out / "mosaic-report.csv").write_text("path,status\n")
    bad = CliRunner().invoke(report_cmd, [str(out)])
    assert bad.exit_code == 2 and "missing column(s) score_before" in bad.stderr


# ---- cam eval ------------------------------------------------------------------------------

def _cam_eval_json(tmp_path: Path) -> Path:
    def res(d: float, i: float, pg: float | None) -> dict:
        return {"deletion_auc": d, "insertion_auc": i, "pointing_game": pg, "item_recall": pg,
                "mprt_spearman": None, "seconds": 1.5, "n_images": 8}

    curve = [1 - k / 16 for k in range(17)]
    data = {"gradcam": res(0.2, 0.7, 0.8), "gradcam++": res(0.25, 0.75, 0.7), "random": res(0.5, 0.5, None),
            "curves": {m: {"deletion": curve, "insertion": curve[::-1]} for m in ("gradcam", "gradcam++", "random")},
            "model": "m.keras", "data": "/d", "split": "test"}
    p = tmp_path / "cam-eval.json"
    p.write_text(json.dumps(data))
    return p


def test_cam_eval_report(tmp_path: Path) -> None:
    page = render_cam_eval(_cam_eval_json(tmp_path))
    assert page == tmp_path / "cam-eval.html"
    srcs = _check_self_contained(page)
    assert len(srcs) == 1  # deletion + insertion panels in one figure
    text = page.read_text()
    table = _table(text, "cam-eval-table")
    assert table.split("<tbody>")[1].count("<tr>") == 3
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    assert "random" in rows[-1] and "(baseline)" in rows[-1]
    assert "<b>0.200</b>" in rows[0] and "<b>0.750</b>" in rows[1]  # best deletion / insertion
    assert "m.keras" in _table(text, "run-table")
    assert render_cam_eval(tmp_path) == page  # the folder works too


def test_cam_eval_report_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cam-eval\.json: no such file"):
        render_cam_eval(tmp_path)
    (tmp_path / "cam-eval.json").write_text('{"model": "x"}')
    with pytest.raises(UsageError, match="holds no method results"):
        render_cam_eval(tmp_path / "cam-eval.json")


def test_reports_import_no_tool_packages() -> None:
    code = ("import sys, reports; bad = [m for m in ('tensorflow', 'keras', 'cam', 'attacks', 'hardening', "
            "'mosaic', 'matplotlib') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ---- headless browser ----------------------------------------------------------------------

def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian chromium; "
                                                  "`make test` installs it via scripts/system-deps.sh)")
def test_hardening_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    page = render_hardening(run_dir)
    url = page.resolve().as_uri()
    shot = tmp_path / "shot.png"
    res = _chromium(["--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,2000", url], tmp_path)
    assert shot.is_file(), f"no screenshot: {res.stderr[-800:]}"
    pixels = read_image(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 0.05, "the screenshot is blank"
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-800:]
    assert 'id="metrics-table"' in dom.stdout and 'id="drift-table"' in dom.stdout
    assert dom.stdout.count("<img") == 3 + 2 * len(DRIFT) + 4
