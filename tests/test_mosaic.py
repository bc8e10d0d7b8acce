"""mosaic: styles touch exactly the regions, verify-and-escalate, batch safety, resume, shards, CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from click.testing import CliRunner

import mosaic
from cam import regions
from hardenkit.errors import ConfigError, UsageError
from hardenkit.imageio import read_image, write_image
from mosaic import MosaicConfig, blur_file, blur_folder, censor, censor_image, region_mask
from mosaic import batch as mbatch
from mosaic.batch import list_inputs, read_report
from mosaic.cli import main

SIZE = 24


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


# --- a fake model: the score is the share of the planted bright square still visible -----------

class FakeBundle:
    """Scores 'sensitive' = share of pixels still bright (> 0.85 in every channel) / share planted."""

    path = None

    def __init__(self, planted_pixels: int = 64) -> None:
        self.planted = planted_pixels
        self.scored = 0

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([np.asarray(im, np.float32) for im in images])

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.scored += len(images)
        return np.array([min(1.0, float((np.asarray(im) > 0.85).all(axis=2).sum()) / self.planted)
                         for im in images])


class FakeExplainer:
    """A planted CAM map: a narrow Gaussian at ``centre`` (so round 0 covers too little)."""

    def __init__(self, centre: tuple[int, int] | None = None, sigma: float = 1.5) -> None:
        self.centre, self.sigma, self.calls = centre, sigma, 0

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for im in images:
            self.calls += 1
            h, w = im.shape[:2]
            bright = (np.asarray(im) > 0.85).all(axis=2)
            cy, cx = self.centre or ((np.argwhere(bright).mean(axis=0)) if bright.any() else (h / 2, w / 2))
            yy, xx = np.mgrid[0:h, 0:w]
            out.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * self.sigma ** 2)).astype(np.float32))
        return out


def planted(seed: int = 0, size: int = SIZE, square: tuple[int, int, int] | None = (8, 8, 8)) -> np.ndarray:
    """Dark noise with an optional bright square (y, x, side)."""
    rng = np.random.default_rng(seed)
    img = (rng.random((size, size, 3)) * 0.5).astype(np.float32)
    if square is not None:
        y, x, s = square
        img[y:y + s, x:x + s] = 0.9 + 0.1 * rng.random((s, s, 3))
    return img


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --- styles --------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", sorted(mosaic.STYLES))
@pytest.mark.parametrize("shape", ["box", "ellipse", "mask"])
def test_styles_change_exactly_the_region_pixels(style: str, shape: str) -> None:
    img = np.random.default_rng(3).random((40, 48, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:40, 0:48]
    cam_map = np.where((yy - 12) ** 2 / 64 + (xx - 17) ** 2 / 121 <= 1, 1.0, 0.0).astype(np.float32)
    cam_map[(yy - 32) ** 2 + (xx - 39) ** 2 <= 16] = 0.7  # two discs: boxes, ellipses and masks differ
    regs = regions(cam_map, threshold=0.5)
    assert len(regs) == 2
    want = region_mask((40, 48), regs, shape)
    out = censor(img, regs, style=style, shape=shape)
    changed = (out != img).any(axis=2)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert not changed[~want].any(), "a pixel outside the regions changed"
    assert changed[want].mean() > 0.95, "the regions were not censored"
    if shape == "ellipse":  # inscribed ellipse: inside the box, corners spared, region pixels covered
        box = region_mask((40, 48), regs, "box")
        assert (want <= box).all() and want.sum() < box.sum()
        assert (region_mask((40, 48), regs, "mask") <= want).all()


def test_censor_accepts_a_mask_and_pixelate_scales_with_the_region() -> None:
    img = np.random.default_rng(0).random((120, 120, 3)).astype(np.float32)
    m = np.zeros((120, 120), bool)
    m[0:96, 0:96] = True
    out = censor(img, m, style="pixelate")
    assert len(np.unique(out[0:96, 0:96, 0])) <= 36  # 16-pixel blocks: 6 x 6 of them
    fixed = censor(img, m, style="pixelate", params=mosaic.StyleParams(block=48))
    assert len(np.unique(fixed[0:96, 0:96, 0])) == 4
    assert (out[96:] == img[96:]).all() and (out[:, 96:] == img[:, 96:]).all()
    with pytest.raises(ValueError, match="expected a mask of shape"):
        censor(img, np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="expected style in"):
        censor(img, m, style="sparkle")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_rounds": 0}, "expected max_rounds >= 1, got 0"),
    ({"style": "sparkle"}, "expected style in"),
    ({"shape": "star"}, "expected shape in"),
    ({"threshold": 1.5}, r"expected threshold in \[0, 1\], got 1.5"),
    ({"region_threshold": 0.0}, "expected region_threshold"),
    ({"color": "chartreuse-ish"}, "expected a colour name"),
    ({"block": 1}, "expected block >= 2"),
    ({"shard": (3, 3)}, "expected shard i/n"),
    ({"method": "nope"}, "expected method in"),
    ({"workers": 0}, "expected workers >= 1"),
])
def test_config_errors_say_expected_and_got(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MosaicConfig(**kwargs)


# --- verify and escalate -------------------------------------------------------------------------

def test_escalation_grows_regions_until_the_output_is_clean() -> None:
    img = planted(square=(7, 7, 10))
    cfg = MosaicConfig(style="solid", threshold=0.5, dilate=1, region_threshold=0.5)
    out, info = censor_image(FakeBundle(planted_pixels=100), img, cfg, explainer=FakeExplainer())
    assert info.status == "censored"
    assert info.rounds > 1, "round 0 (narrow map) should not have been enough"
    assert info.score_before >= 0.5 > info.score_after
    assert 0.0 < info.censored_fraction < 0.6
    changed = (out != img).any(axis=2)
    assert abs(changed.mean() - info.censored_fraction) < 1e-6
    assert not changed[0, :].any() or not changed[-1, :].any()  # not censored whole


def test_escalation_gives_up_unresolved_and_censors_the_whole_image() -> None:
    img = planted()
    cfg = MosaicConfig(style="solid", threshold=0.5, dilate=0)
    out, info = censor_image(FakeBundle(), img, cfg, explainer=FakeExplainer(centre=(22, 1), sigma=0.5))
    assert info.status == "unresolved" and info.censored_fraction == 1.0
    assert info.score_after < 0.5  # the whole-image fallback did clear it here
    assert (out == 0.0).all()


class TextureBundle(FakeBundle):
    """Flags any image that is not one flat colour: pixelating it whole still leaves blocks."""

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.scored += len(images)
        return np.array([1.0 if float(np.asarray(im, np.float32).reshape(-1, 3).std(axis=0).max()) > 1e-3 else 0.0
                         for im in images])


def test_unresolved_fallback_never_leaks_a_whole_image_the_style_leaves_flagged() -> None:
    img = planted()
    cfg = MosaicConfig(style="pixelate", threshold=0.5, dilate=0, max_rounds=2)
    out, info = censor_image(TextureBundle(), img, cfg, explainer=FakeExplainer(sigma=0.5))
    assert info.status == "unresolved" and info.censored_fraction == 1.0
    assert info.score_after < 0.5  # the pixelated whole image scored 1.0: filled flat instead
    assert np.allclose(out, 0.0)  # the configured colour (black)
    res = mosaic.censor_batch(TextureBundle(), [img], replace(cfg, color="mean"), FakeExplainer(sigma=0.5), [".jpg"])
    out2, info2 = res[0]
    assert info2.status == "unresolved" and info2.score_after < 0.5 and float(np.ptp(out2)) < 0.02  # flat: its mean colour


def test_clean_image_is_returned_unchanged_without_explaining() -> None:
    img = planted(square=None)
    ex = FakeExplainer()
    out, info = censor_image(FakeBundle(), img, MosaicConfig(), explainer=ex)
    assert info.status == "clean" and out is img and ex.calls == 0


def test_real_cam_on_a_tiny_model_censors_flagged_images(tiny16: Any) -> None:
    imgs = [planted(i, size=16, square=(4, 4, 6)) for i in range(3)]
    res = mosaic.censor_batch(tiny16, imgs, MosaicConfig(threshold=0.0, method="gradcam", max_rounds=2))
    for (out, info), img in zip(res, imgs):
        assert info.status == "unresolved"  # nothing scores below 0
        assert out is not None and out.shape == img.shape and (out != img).any()


# --- folders: bad inputs, safety, resume, shards ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny16(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from hardenkit.modelio import load_model, save_model
    from hardenkit.testkit import tiny_model

    p = tmp_path_factory.mktemp("tiny16") / "tiny16.keras"
    save_model(tiny_model(size=16), p, ["normal", "sensitive"])
    return load_model(p)


def make_tree(root: Path, bad: bool = True) -> Path:
    d = root / "in"
    write_image(d / "a_flagged.png", planted(1))
    write_image(d / "b_clean.png", planted(2, square=None))
    write_image(d / "sub" / "c_flagged.png", planted(3, square=(2, 10, 9)))
    write_image(d / "sub" / "deep" / "d_clean.jpg", planted(4, square=None))
    write_image(d / "e_flagged.png", planted(5, square=(12, 3, 8)))
    write_image(d / "f_clean.png", planted(6, square=None))
    if bad:
        (d / "zero.jpg").write_bytes(b"")
        big = planted(7, size=64)
        write_image(d / "whole.png", big)
        (d / "truncated.png").write_bytes((d / "whole.png").read_bytes()[:300])
        (d / "whole.png").unlink()
        (d / "notes.jpg").write_text("not an image\n")
        (d / "folder.jpg").mkdir()
    return d


def test_folder_mirrors_tree_reports_every_bad_input_and_keeps_going(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    dst = tmp_path / "out"
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    rep = blur_folder(src, dst, MosaicConfig(batch_size=3), FakeBundle(), explainer=FakeExplainer())
    assert rep.exit_code == 1
    rows = {r["path"]: r for r in _csv(dst / "mosaic-report.csv")}
    assert list(rows["a_flagged.png"]) == list(mosaic.batch.REPORT_COLUMNS)
    reasons = {p: rows[p]["error"] for p in rows if rows[p]["status"] == "failed"}
    assert set(reasons) == {"zero.jpg", "truncated.png", "notes.jpg", "folder.jpg"}
    assert "zero-byte" in reasons["zero.jpg"] and "truncated" in reasons["truncated.png"]
    assert "not an image" in reasons["notes.jpg"] and "directory" in reasons["folder.jpg"]
    assert {rows[p]["status"] for p in ("a_flagged.png", "sub/c_flagged.png", "e_flagged.png")} <= {"censored"}
    assert {rows[p]["status"] for p in ("b_clean.png", "f_clean.png", "sub/deep/d_clean.jpg")} == {"clean"}
    for p in ("b_clean.png", "sub/deep/d_clean.jpg"):  # clean: byte copies
        assert (dst / p).read_bytes() == (src / p).read_bytes()
    for p in ("a_flagged.png", "sub/c_flagged.png"):
        assert read_image(dst / p).shape == (SIZE, SIZE, 3)
        assert (dst / p).read_bytes() != (src / p).read_bytes()
        assert float(rows[p]["score_after"]) < 0.5 <= float(rows[p]["score_before"])
    assert not any((dst / p).exists() for p in reasons)
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}  # input untouched
    run = json.loads((dst / "mosaic-run.json").read_text())
    assert run["in"] == str(src.resolve()) and run["report"] == str((dst / "mosaic-report.csv").resolve())
    assert {"model", "method", "style", "threshold"} <= set(run)
    assert rep.counts == {"clean": 3, "censored": 3, "unresolved": 0, "failed": 4}


@pytest.mark.parametrize("inside", ["same", "child"])
def test_refuses_output_inside_input(tmp_path: Path, inside: str) -> None:
    src = make_tree(tmp_path, bad=False)
    dst = src if inside == "same" else src / "sub" / "out"
    with pytest.raises(UsageError, match="input"):
        blur_folder(src, dst, MosaicConfig(), FakeBundle(), explainer=FakeExplainer())
    res = _runner().invoke(main, ["blur", str(src), str(dst)])
    assert res.exit_code == 2 and res.stderr.startswith("Error: ") and "Traceback" not in res.stderr
    assert res.stdout == ""
    assert not (src / "mosaic-report.csv").exists() and not (src / "sub" / "out").exists()
    res = _runner().invoke(main, ["blur", str(src), str(tmp_path / "o"), "--report", str(src / "r.csv")])
    assert res.exit_code == 2 and not (src / "r.csv").exists()


def test_resume_after_a_kill_redoes_nothing_and_gives_identical_outputs(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path, bad=False)
    cfg = MosaicConfig(batch_size=2, style="noise")
    ref = blur_folder(src, tmp_path / "ref", cfg, FakeBundle(), explainer=FakeExplainer())
    assert ref.exit_code == 0

    real = mbatch.censor_batch
    seen: list[int] = []

    def dies_on_second_batch(bundle: Any, images: Sequence[np.ndarray], *a: Any, **k: Any) -> Any:
        if seen:
            raise RuntimeError("simulated kill")
        seen.append(len(images))
        return real(bundle, images, *a, **k)

    monkeypatch.setattr(mbatch, "censor_batch", dies_on_second_batch)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated kill"):
        blur_folder(src, out, cfg, FakeBundle(), explainer=FakeExplainer())
    partial = _csv(out / "mosaic-report.csv")
    assert len(partial) == 2  # the first batch is on record

    counted: list[int] = []

    def counting(bundle: Any, images: Sequence[np.ndarray], *a: Any, **k: Any) -> Any:
        counted.append(len(images))
        return real(bundle, images, *a, **k)

    monkeypatch.setattr(mbatch, "censor_batch", counting)
    rep = blur_folder(src, out, MosaicConfig(batch_size=2, style="noise", resume=True), FakeBundle(),
                      explainer=FakeExplainer())
    assert sum(counted) == 6 - 2 and rep.skipped == 2
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "mosaic-r" not in p.name)
    ref_files = sorted(p.relative_to(tmp_path / "ref").as_posix() for p in (tmp_path / "ref").rglob("*")
                       if p.is_file() and "mosaic-r" not in p.name)
    assert files == ref_files and len(files) == 6
    for f in files:
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
    assert _csv(out / "mosaic-report.csv") == _csv(tmp_path / "ref" / "mosaic-report.csv")


def test_a_batch_finished_in_another_lane_is_recorded_when_an_earlier_batch_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    src = make_tree(tmp_path, bad=False)
    real = mbatch.censor_batch

    def first_fails_late(bundle: Any, images: Sequence[np.ndarray], *a: Any, **k: Any) -> Any:
        if len(images) and float(np.asarray(images[0]).sum()) == first_sum:
            time.sleep(0.5)  # the second batch finishes in the other lane meanwhile
            raise RuntimeError("batch 0 broke")
        return real(bundle, images, *a, **k)

    from hardenkit.imageio import read_image

    first_sum = float(read_image(src / "a_flagged.png").sum())
    monkeypatch.setattr(mbatch, "censor_batch", first_fails_late)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="batch 0 broke"):
        blur_folder(src, out, MosaicConfig(batch_size=2, lanes=2), FakeBundle(), explainer=FakeExplainer())
    rows = _csv(out / "mosaic-report.csv")
    assert len(rows) >= 2 and all(not r["path"].startswith(("a_", "b_")) for r in rows)


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_give_the_same_outputs_and_report_as_one_lane(tmp_path: Path, lanes: int) -> None:
    import cv2

    src = make_tree(tmp_path)
    threads = cv2.getNumThreads()
    one = blur_folder(src, tmp_path / "one", MosaicConfig(batch_size=2, lanes=1), FakeBundle(), explainer=FakeExplainer())
    assert cv2.getNumThreads() == threads  # serial OpenCV inside a run only
    many = blur_folder(src, tmp_path / f"many{lanes}", MosaicConfig(batch_size=2, lanes=lanes), FakeBundle(),
                       explainer=FakeExplainer())
    assert sorted(one.rows, key=lambda r: r.path) == sorted(many.rows, key=lambda r: r.path)
    assert (tmp_path / "one" / "mosaic-report.csv").read_bytes() == (tmp_path / f"many{lanes}" / "mosaic-report.csv").read_bytes()
    outs = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()
                  and p.name != "mosaic-run.json")
    assert outs == sorted(p.relative_to(tmp_path / f"many{lanes}") for p in (tmp_path / f"many{lanes}").rglob("*")
                          if p.is_file() and p.name != "mosaic-run.json")
    for rel in outs:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / f"many{lanes}" / rel).read_bytes()
    with pytest.raises(Exception, match="lanes"):
        MosaicConfig(lanes=0)


def test_resume_redoes_rows_whose_output_vanished(tmp_path: Path) -> None:
    src = make_tree(tmp_path, bad=False)
    out = tmp_path / "out"
    blur_folder(src, out, MosaicConfig(reexplain=False), FakeBundle(), explainer=FakeExplainer())
    (out / "a_flagged.png").unlink()
    ex = FakeExplainer()  # counts images explained: one per redone flagged image without re-explaining
    rep = blur_folder(src, out, MosaicConfig(resume=True, reexplain=False), FakeBundle(), explainer=ex)
    assert rep.skipped == 5 and ex.calls == 1 and (out / "a_flagged.png").exists()
    assert len(read_report(out / "mosaic-report.csv")) == 6


def test_shards_cover_every_file_exactly_once(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    every = [rel for rel, _ in list_inputs(src)]
    parts = [[rel for rel, _ in list_inputs(src, (i, 3))] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(every) and len(set(sum(parts, []))) == len(every)
    assert all(parts)
    out = tmp_path / "out"
    for i in range(3):
        blur_folder(src, out, MosaicConfig(shard=(i, 3)), FakeBundle(), explainer=FakeExplainer())
    reported = sum((_csv(out / f"mosaic-report-{i}of3.csv") for i in range(3)), [])
    assert sorted(r["path"] for r in reported) == sorted(every)


def test_only_censored_writes_only_flagged_images(tmp_path: Path) -> None:
    src = make_tree(tmp_path, bad=False)
    out = tmp_path / "out"
    rep = blur_folder(src, out, MosaicConfig(only_censored=True), FakeBundle(), explainer=FakeExplainer())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*g"))
    assert written == ["a_flagged.png", "e_flagged.png", "sub/c_flagged.png"]
    assert rep.counts["clean"] == 3
    again = blur_folder(src, out, MosaicConfig(only_censored=True, resume=True), FakeBundle(),
                        explainer=FakeExplainer())
    assert again.skipped == 6


# --- CLI -------------------------------------------------------------------------------------------

@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    import mosaic.censoring as mcensor
    import mosaic.cli as mcli

    monkeypatch.setattr(mcli, "load_bundle", lambda *a, **k: FakeBundle())
    monkeypatch.setattr(mcensor, "make_explainer", lambda bundle, config: FakeExplainer())


def test_cli_folder_exit_code_and_json_summary(tmp_path: Path, fake_cli: None) -> None:
    src = make_tree(tmp_path)
    res = _runner().invoke(main, ["blur", str(src), str(tmp_path / "out"), "--json", "--batch-size", "4"])
    assert res.exit_code == 1
    summary = json.loads(res.stdout)
    assert summary["failed"] == 4 and summary["censored"] == 3 and summary["clean"] == 3
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 4 and any(ln.startswith("Error: zero.jpg: zero-byte") for ln in errors)
    assert "Traceback" not in res.stderr
    assert (tmp_path / "out" / "sub" / "deep" / "d_clean.jpg").exists()
    html = (tmp_path / "out" / "mosaic-report.html").read_text()
    assert "zero.jpg" in html  # the failed files are listed in the HTML report


def test_cli_warns_about_an_input_folder_without_images(tmp_path: Path, fake_cli: None) -> None:
    src = tmp_path / "uploads"
    src.mkdir()
    (src / "readme.txt").write_text("no images yet")
    res = _runner().invoke(main, ["blur", str(src), str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["inputs"] == 0
    assert f"warning: {src}: no images in this folder" in res.stderr


def test_cli_single_file_and_bad_options(tmp_path: Path, fake_cli: None) -> None:
    src = make_tree(tmp_path, bad=False) / "a_flagged.png"
    out = tmp_path / "single" / "a.png"
    res = _runner().invoke(main, ["blur", str(src), str(out), "--style", "gaussian"])
    assert res.exit_code == 0, res.stderr
    assert "1 censored" in res.stdout and out.exists() and not (out.parent / "mosaic-report.csv").exists()
    assert read_image(out).shape == (SIZE, SIZE, 3)
    res = _runner().invoke(main, ["blur", str(src), str(src)])
    assert res.exit_code == 2 and "input itself" in res.stderr
    res = _runner().invoke(main, ["blur", str(src), str(tmp_path / "x.png"), "--max-rounds", "0"])
    assert res.exit_code == 2 and "expected max_rounds >= 1, got 0" in res.stderr
    res = _runner().invoke(main, ["blur", str(src.parent), str(tmp_path / "o"), "--shard", "2/2"])
    assert res.exit_code == 2 and "expected a shard i/n" in res.stderr
    res = _runner().invoke(main, ["blur", str(src.parent), str(tmp_path / "o"), "--style", "sparkle"])
    assert res.exit_code == 2


def test_cli_real_tiny_model_end_to_end(tmp_path: Path, tiny16: Any) -> None:
    src = make_tree(tmp_path)
    out = tmp_path / "out"
    res = _runner().invoke(main, ["blur", str(src), str(out), "--model", str(tiny16.path), "--method", "gradcam",
                                  "--threshold", "0", "--max-rounds", "2", "--style", "pixelate"])
    assert res.exit_code == 1, res.stderr
    rows = _csv(out / "mosaic-report.csv")
    assert sum(r["status"] == "failed" for r in rows) == 4
    assert all(r["status"] == "unresolved" for r in rows if r["status"] != "failed")
    assert (out / "sub" / "c_flagged.png").read_bytes() != (src / "sub" / "c_flagged.png").read_bytes()
    assert json.loads((out / "mosaic-run.json").read_text())["model"] == str(Path(tiny16.path).resolve())


def test_keep_metadata_is_opt_in(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    Image.fromarray((planted(1) * 255).astype(np.uint8)).save(src / "a.jpg", exif=exif.tobytes())
    for keep in (False, True):
        out = tmp_path / f"out{keep}"
        rep = blur_folder(src, out, MosaicConfig(keep_metadata=keep), FakeBundle(), explainer=FakeExplainer())
        assert rep.rows[0].status == "censored"
        with Image.open(out / "a.jpg") as im:
            assert ("exif" in im.info) == keep


# --- tighter default regions: LayerCAM at the finer layer -------------------------------------------

def _two_scale_bundle() -> Any:
    import keras

    from hardenkit.modelio import bundle_from_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="fine")(inp)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="coarse")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    return bundle_from_model(keras.Model(inp, out), ["normal", "sensitive"])


def test_default_cam_is_layercam_at_the_finer_layer_unless_method_or_layer_given() -> None:
    from hardenkit.testkit import tiny_model
    from mosaic.censoring import fine_layer, make_explainer

    b = _two_scale_bundle()
    assert fine_layer(b.prob_model) == "fine" and fine_layer(tiny_model()) is None
    ex = make_explainer(b, MosaicConfig())
    assert (ex.method, ex.layer_name) == ("layercam", "fine")
    assert ex([planted(0, size=16)])[0].shape == (16, 16)
    assert make_explainer(b, MosaicConfig(method="gradcam")).layer_name == "coarse"
    assert make_explainer(b, MosaicConfig(layer="coarse")).layer_name == "coarse"
    d = MosaicConfig()
    assert (d.cam_method, d.region_threshold, d.margin) == ("layercam", 0.11, 0.015)


def test_cli_method_defaults_to_the_config_default_and_layer_is_passed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mosaic.cli as mcli

    seen: list[MosaicConfig] = []

    def fake_blur_file(src: Any, dst: Any, cfg: MosaicConfig, bundle: Any, report: Any = None) -> Any:
        seen.append(cfg)
        return mosaic.MosaicReport(Path(src), Path(dst), None, [mosaic.MosaicRow("a.png", "clean", 0.1, 0.1)])

    monkeypatch.setattr(mcli, "load_bundle", lambda *a, **k: FakeBundle())
    monkeypatch.setattr(mbatch, "blur_file", fake_blur_file)
    src = make_tree(tmp_path, bad=False) / "a_flagged.png"
    assert _runner().invoke(main, ["blur", str(src), str(tmp_path / "o.png")]).exit_code == 0
    assert _runner().invoke(main, ["blur", str(src), str(tmp_path / "o.png"), "--layer", "x"]).exit_code == 0
    assert seen[0].method is None and seen[0].layer is None and seen[1].layer == "x"


@pytest.mark.parametrize("shape", ["mask", "box", "ellipse"])
def test_region_pixels_equal_the_union_of_cam_regions(shape: str) -> None:
    from mosaic.censoring import region_pixels

    rng = np.random.default_rng(3)
    for k in range(6):
        m = rng.random((40, 50)).astype(np.float32) ** 3
        thr, dil, min_area = (0.3, 0.5, 0.7)[k % 3], k % 3, 1 + 3 * (k % 2)
        cfg = MosaicConfig(shape=shape, min_area=min_area)
        got, n = region_pixels(m, (40, 50), thr, dil, cfg)
        regs = regions(m, threshold=thr, dilate=dil, min_area=min_area)
        assert n == len(regs) and (got == region_mask((40, 50), regs, shape)).all()


def test_censor_with_a_mask_equals_censor_with_its_regions_and_uint8_matches_float() -> None:
    from hardenkit.imageio import pixels_to_float, to_uint8
    from mosaic.styles import as_regions

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    img = pixels_to_float(u8)
    m = np.zeros((40, 60), bool)
    m[2:12, 3:20] = True
    m[25:38, 30:55] = True  # two regions, boxes apart
    for style in sorted(mosaic.STYLES):
        via_mask = censor(img, m, style, "mask")
        assert (via_mask == censor(img, as_regions(m), style, "mask")).all()
        out8 = censor(u8, m, style, "mask")
        assert out8.dtype == np.uint8 and (out8[~m] == u8[~m]).all()
        # pixelate takes the 8-bit block means directly: at most one level off the float path
        diff = np.abs(out8.astype(int) - to_uint8(via_mask).astype(int))
        assert diff.max() <= (1 if style == "pixelate" else 0)


# --- previews, verification as decoded, full-size decode only where needed ---------------------------

def test_previews_and_pixels_decode_exactly_as_read_image(tmp_path: Path) -> None:
    import cv2
    from PIL import Image

    from hardenkit.imageio import (decode_image, encode_image, pixels_to_float, read_image, read_image_pixels,
                                   read_image_preview, write_bytes)

    rng = np.random.default_rng(1)
    base = cv2.resize(rng.random((8, 10, 3)).astype(np.float32), (700, 560))
    write_image(tmp_path / "big.jpg", base)
    write_image(tmp_path / "big.png", base)
    rgba = np.concatenate([(base * 255).astype(np.uint8), rng.integers(0, 256, (560, 700, 1), dtype=np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    for name in ("big.jpg", "big.png", "alpha.png"):
        full = read_image(tmp_path / name)
        preview, pixels = read_image_preview(tmp_path / name, 128)
        assert min(preview.shape[:2]) == 128 and preview.dtype == np.float32
        expected = cv2.resize(full, preview.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(preview - expected).max() < 0.03  # a JPEG's DCT-scaled preview is close too
        if name.endswith(".jpg"):
            assert pixels is None  # decoded at reduced size: read the full image when needed
        else:
            assert pixels is not None and pixels.dtype == np.uint8 and (pixels_to_float(pixels) == full).all()
        assert (pixels_to_float(read_image_pixels(tmp_path / name)) == full).all()
    small, same = read_image_preview(tmp_path / "big.png", 600)  # not larger than min_side: no shrink
    assert same is small and (small == read_image(tmp_path / "big.png")).all()
    data = encode_image(base, ".jpg", 90)
    write_image(tmp_path / "w.jpg", base, quality=90)
    assert data == (tmp_path / "w.jpg").read_bytes()  # the bytes write_image writes
    write_bytes(tmp_path / "b.jpg", data)
    assert (decode_image(data) == read_image(tmp_path / "b.jpg")).all()
    assert decode_image(data, min_side=100).shape == (100, 125, 3)
    assert (decode_image(encode_image(base, ".png")) == read_image(tmp_path / "big.png")).all()


class SizeBundle(FakeBundle):
    """FakeBundle whose scores depend on the image height too: ``low`` below ``full`` pixels."""

    def __init__(self, full: int, low: float, high: float = 1.0, planted_pixels: int = 36) -> None:
        super().__init__(planted_pixels)
        self.full, self.low, self.high, self.heights = full, low, high, []

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.heights += [np.shape(im)[0] for im in images]
        visible = super().sensitive_score(images)
        return np.array([v * (self.high if np.shape(im)[0] >= self.full else self.low)
                         for v, im in zip(visible, images)])


def test_verification_decides_near_the_target_on_the_full_decode() -> None:
    from mosaic.censoring import VERIFY_GUARD, verify_scores

    out = np.full((600, 600, 3), 0.95, np.float32)
    far = SizeBundle(600, low=0.1, high=0.9)
    scores, enc = verify_scores(far, [out], [".jpg"], 95, 0.5)
    assert scores[0] == pytest.approx(0.1) and far.heights == [256]  # reduced decode only
    near = SizeBundle(600, low=0.5 - VERIFY_GUARD / 2, high=0.9)
    scores, enc = verify_scores(near, [out], [".jpg"], 95, 0.5)
    assert scores[0] == pytest.approx(0.9) and near.heights == [256, 600]  # the full decode decided
    assert enc[0] is not None and enc[0][:2] == b"\xff\xd8"
    scores, enc = verify_scores(near, [out], [".png"], 95, 0.5)
    assert enc == [None] and near.heights[-1] == 600  # lossless: quantised in memory at full size


def test_full_images_are_loaded_only_near_the_threshold_or_above_and_decide() -> None:
    from hardenkit.errors import InvalidImageError
    from mosaic.censoring import VERIFY_GUARD

    full = [planted(i, size=48, square=(10, 10, 12)) for i in range(3)]
    previews = [f[::2, ::2] for f in full]
    asked: list[int] = []

    def loader(i: int) -> Any:
        asked.append(i)
        return InvalidImageError("x.jpg", "truncated image") if i == 2 else full[i]

    cfg = MosaicConfig(style="solid", threshold=0.5)
    res = mosaic.censor_batch(SizeBundle(48, low=0.5 - VERIFY_GUARD / 2), previews, cfg, FakeExplainer(),
                              full=loader)
    assert asked == [0, 1, 2]
    (out, info), (_, info1), (_, bad) = res
    assert info.status == "censored" and info.score_before == pytest.approx(1.0)  # rescored at full size
    assert out is not None and out.shape == full[0].shape and info.mask is not None
    assert bad.status == "failed" and "truncated" in bad.error
    asked.clear()
    res = mosaic.censor_batch(SizeBundle(48, low=0.1), previews, cfg, FakeExplainer(), full=loader)
    assert asked == [] and all(i.status == "clean" for _, i in res)  # far below: no full decode
    u8 = (full[0] * 255).round().astype(np.uint8)
    (out8, info8), = mosaic.censor_batch(SizeBundle(48, low=1.0), [previews[0]], cfg, FakeExplainer(),
                                         full=lambda i: u8)
    assert info8.status == "censored" and out8 is not None and out8.dtype == np.uint8 and out8.shape == u8.shape


class ShareBundle(FakeBundle):
    """FakeBundle scoring the bright *share* of the image (so any resolution scores alike)."""

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.scored += len(images)
        return np.array([min(1.0, float((np.asarray(im) > 0.85).all(axis=2).mean()) / 0.05) for im in images])


def test_folder_of_big_jpegs_censors_at_full_size_and_writes_the_verified_bytes(tmp_path: Path) -> None:
    import cv2

    src = tmp_path / "in"
    big = cv2.resize(planted(0), (768, 768), interpolation=cv2.INTER_NEAREST)
    write_image(src / "flagged.jpg", big)
    write_image(src / "clean.jpg", cv2.resize(planted(1, square=None), (768, 768)))
    bundle = ShareBundle()
    rep = blur_folder(src, tmp_path / "out", MosaicConfig(style="solid"), bundle, explainer=FakeExplainer(sigma=40))
    rows = {r.path: r for r in rep.rows}
    assert rows["clean.jpg"].status == "clean" and rows["flagged.jpg"].status == "censored"
    assert (tmp_path / "out" / "clean.jpg").read_bytes() == (src / "clean.jpg").read_bytes()
    written = read_image(tmp_path / "out" / "flagged.jpg")
    assert written.shape == big.shape
    assert float(bundle.sensitive_score([written])[0]) == pytest.approx(rows["flagged.jpg"].score_after)


# --- cheaper verification of lossless outputs, working-resolution trials for big images -------------

def test_lossless_outputs_are_verified_reduced_unless_near_the_target() -> None:
    from mosaic.censoring import VERIFY_GUARD, VERIFY_SIDE, verify_scores

    out = (np.full((600, 700, 3), 0.95, np.float32) * 255).round().astype(np.uint8)
    far = SizeBundle(600, low=0.1, high=0.9)
    scores, enc = verify_scores(far, [out], [".png"], 95, 0.5)
    assert enc == [None] and scores[0] == pytest.approx(0.1) and far.heights == [VERIFY_SIDE]
    near = SizeBundle(600, low=0.5 - VERIFY_GUARD / 2, high=0.9)
    scores, _ = verify_scores(near, [out], [".png"], 95, 0.5)
    assert scores[0] == pytest.approx(0.9) and near.heights == [VERIFY_SIDE, 600]  # full size decided


def test_styles_components_match_opencv_default() -> None:
    import cv2

    from mosaic.styles import components_with_stats

    m = (np.random.default_rng(4).random((90, 120)) > 0.6).astype(np.uint8)
    n, labels, stats, _ = components_with_stats(m)
    n2, labels2, stats2, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    assert n == n2 and (labels == labels2).all() and (stats == stats2).all()


class CountingBundle(ShareBundle):
    """ShareBundle that records the sizes of the images it scores."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def sensitive_score(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
        self.sizes += [tuple(np.shape(im)[:2]) for im in images]
        return super().sensitive_score(images)


def test_big_images_escalate_on_working_resolution_trials_and_verify_at_full_size() -> None:
    import cv2

    from mosaic.censoring import PROXY_SIDE, VERIFY_SIDE, WORK_SIDE

    side = PROXY_SIDE + 200
    big = np.zeros((side, side, 3), np.float32)
    big[300:700, 300:700] = 1.0  # the bright block the model "sees"
    u8 = (big * 255).astype(np.uint8)
    preview = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)
    bundle = CountingBundle()
    # a map narrower than the block: the first rounds hide too little and escalate
    cfg = MosaicConfig(style="solid", max_rounds=6, region_threshold=0.8)
    (out, info), = mosaic.censor_batch(bundle, [preview], cfg, FakeExplainer(sigma=5), [".png"], full=lambda i: u8)
    assert info.status == "censored" and out is not None and out.dtype == np.uint8 and out.shape == u8.shape
    assert info.rounds > 1 and info.mask is not None and info.mask[420:580, 420:580].all()
    sizes = list(bundle.sizes)
    assert len([s for s in sizes if s == (WORK_SIDE, WORK_SIDE)]) == info.rounds  # a trial per round ...
    assert sizes[-1] == (VERIFY_SIDE, VERIFY_SIDE)  # ... and one (reduced) check of the rendered output
    assert (side, side) not in sizes and len(sizes) == 1 + info.rounds + 1
    assert float(bundle.sensitive_score([out])[0]) < cfg.threshold  # the full-size output passes
    assert (out[~info.mask] == u8[~info.mask]).all()  # nothing outside the mask changed


@pytest.mark.parametrize("size", [(1200, 1599), (777, 1033), (513, 300), (64, 64)])
def test_full_size_components_come_from_the_working_resolution_labels(size: tuple[int, int]) -> None:
    import cv2

    from mosaic.censoring import _full_parts, _work_size
    from mosaic.styles import StyleParams, _censor_parts, _components

    rng = np.random.default_rng(size[0])
    low = cv2.GaussianBlur(rng.random(_work_size(size)).astype(np.float32), (0, 0), 3) > 0.53
    upscaled = cv2.resize(low.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    mask, parts = _full_parts(low, size)
    assert mask.shape == size and (mask == upscaled).all()  # the mask region_pixels gives

    def key(ps: Sequence[tuple[tuple[int, int, int, int], np.ndarray]]) -> list[tuple[Any, bytes]]:
        return sorted((box, m.tobytes()) for box, m in ps)

    assert len(parts) > 5 and key(parts) == key(_components(upscaled))  # labelling it again: the same
    img = (rng.random((*size, 3)) * 255).astype(np.uint8)
    rendered = _censor_parts(img, parts, "pixelate", "mask", StyleParams())
    assert (rendered == censor(img, upscaled, "pixelate", "mask")).all()
    assert _full_parts(np.zeros(_work_size(size), bool), size)[1] == []


def test_censor_batch_output_is_censor_of_its_mask_on_a_big_image() -> None:
    from mosaic.censoring import WORK_SIDE

    side = WORK_SIDE * 2 + 37  # rendered at full size from working-resolution components
    rng = np.random.default_rng(3)
    big = (rng.random((side, side + 11, 3)) * 0.5).astype(np.float32)
    yy, xx = np.mgrid[200:520, 300:640]
    big[200:520, 300:640] = np.where((yy + xx) % 2 == 0, 1.0, 0.5)[..., None]  # pixelated: dark enough
    cfg = MosaicConfig(style="pixelate", region_threshold=0.3)
    (out, info), = mosaic.censor_batch(ShareBundle(), [big], cfg, FakeExplainer(centre=(360, 470), sigma=90))
    assert info.status == "censored" and out is not None and info.mask is not None and info.regions >= 1
    assert (out == censor(big, info.mask, "pixelate", "mask")).all()
