"""mosaic tune: candidates measured against ground truth, the pick rule, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mosaic import MosaicConfig
from mosaic.tune import TuneRow, measure, pick
from test_mosaic import FakeBundle, FakeExplainer, planted


@pytest.fixture(scope="module")
def tiny16_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hardenkit.modelio import save_model
    from hardenkit.testkit import tiny_model

    p = tmp_path_factory.mktemp("tune16") / "tiny16.keras"
    save_model(tiny_model(size=16), p, ["normal", "sensitive"])
    return p


def test_measure_counts_coverage_and_area_against_the_ground_truth() -> None:
    images = [planted(i) for i in range(3)]
    masks = [(im > 0.85).all(axis=2) for im in images]  # the planted squares are the ground truth
    cfg = MosaicConfig(style="solid", threshold=0.5, dilate=0, region_threshold=0.5)
    row = measure(FakeBundle(), images, masks, cfg, FakeExplainer(sigma=6.0))
    assert row.flagged == 3 and row.still_flagged == 0.0
    # recompute from censor_batch's own masks
    import mosaic

    res = mosaic.censor_batch(FakeBundle(), images, cfg, FakeExplainer(sigma=6.0), [".png"] * 3)
    inter = sum(int((info.mask & gt).sum()) for (_, info), gt in zip(res, masks))
    area = sum(int(info.mask.sum()) for _, info in res)
    gt_px = sum(int(m.sum()) for m in masks)
    assert row.coverage == pytest.approx(inter / gt_px) and row.area_ratio == pytest.approx(area / gt_px)
    assert 0.9 <= row.coverage <= 1.0 and row.area_ratio >= row.coverage


def test_pick_prefers_smallest_area_meeting_the_goal_and_never_a_leaking_candidate() -> None:
    leaky = TuneRow("pixelate", 0.2, 0.99, 1.1, 0.0, 0.1, 10)
    big = TuneRow("pixelate", 0.05, 0.97, 4.0, 0.0, 0.0, 10)
    small = TuneRow("solid", 0.05, 0.96, 2.0, 0.0, 0.0, 10)
    short = TuneRow("solid", 0.3, 0.80, 1.0, 0.0, 0.0, 10)
    assert pick([leaky, big, small, short], 0.95) == small
    assert pick([leaky, short], 0.95) == short  # nothing meets the goal: no leak first, then coverage
    with pytest.raises(ValueError):
        pick([], 0.95)


def test_cli_tune_prints_every_candidate_and_a_pick(tiny_data: Path, tiny16_path: Path) -> None:
    from mosaic.cli import main

    r = CliRunner().invoke(main, ["tune", "--data", str(tiny_data), "--model", str(tiny16_path), "--threshold", "0.3",
                                  "--styles", "pixelate,solid", "--region-thresholds", "0.2,0.5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["rows"]) == 4 and out["best"] in out["rows"] and out["images"] > 0
    assert out["options"] == f"--style {out['best']['style']} --region-threshold {out['best']['region_threshold']:g}"
    text = CliRunner().invoke(main, ["tune", "--data", str(tiny_data), "--model", str(tiny16_path),
                                     "--styles", "solid", "--region-thresholds", "0.5"])
    assert text.exit_code == 0 and "<- pick" in text.stdout and "use: mosaic blur IN OUT" in text.stdout


def test_cli_tune_errors_are_one_line(tiny_data: Path, tiny16_path: Path, tmp_path: Path) -> None:
    from mosaic.cli import main

    bad = CliRunner().invoke(main, ["tune", "--data", str(tiny_data), "--model", str(tiny16_path), "--styles", "blurry"])
    assert bad.exit_code != 0 and "--styles" in bad.stderr
    nums = CliRunner().invoke(main, ["tune", "--data", str(tiny_data), "--model", str(tiny16_path),
                                     "--region-thresholds", "0.1,x"])
    assert nums.exit_code != 0 and "--region-thresholds" in nums.stderr
    nomask = tmp_path / "nomask"
    shutil.copytree(tiny_data, nomask)
    shutil.rmtree(nomask / "masks")
    r = CliRunner().invoke(main, ["tune", "--data", str(nomask), "--model", str(tiny16_path)])
    assert r.exit_code != 0 and "no sensitive image with a mask" in r.stderr and len(r.stderr.strip().splitlines()) == 1




def test_measure_coverage_all_counts_unflagged_images_as_missed() -> None:
    images = [planted(i) for i in range(2)] + [planted(9, square=None)]  # the last one is never flagged
    masks = [(im > 0.85).all(axis=2) for im in images[:2]] + [np.zeros(images[2].shape[:2], bool)]
    masks[2][:8, :8] = True  # ground truth the model misses entirely
    cfg = MosaicConfig(style="solid", threshold=0.5, dilate=0, region_threshold=0.5)
    row = measure(FakeBundle(), images, masks, cfg, FakeExplainer(sigma=6.0))
    assert row.flagged == 2
    flagged_gt = int(masks[0].sum() + masks[1].sum())
    assert row.coverage_all == pytest.approx(row.coverage * flagged_gt / (flagged_gt + 64))
