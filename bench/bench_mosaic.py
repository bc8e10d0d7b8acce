"""mosaic: throughput on real photos vs NudeNet, pipeline overhead, and censoring quality.

1. Real photos: the OpenCV sample images (Debian ``opencv-doc``: ``apt-get install opencv-doc``,
   files under ``/usr/share/doc/opencv-doc/examples/data``). Images/s of ``mosaic.blur_folder``
   (demo model, default config, one Explainer built beforehand like NudeNet's detector) versus
   NudeNet 3.4.2's ``NudeDetector.censor()`` on the same files in the same run; goal >= 2x.
   Also end-to-end time / (decode + forward + CAM) time, each part timed alone; goal <= 1.5x.
2. Demo data with masks (test split, sensitive images): share of ground-truth sensitive pixels
   censored (goal >= 95%), censored area / ground-truth area (goal <= 2.5x), and share of
   censored outputs (as written to disk, JPEG) still flagged (goal <= 1%).

    python -m bench.bench_mosaic [--quick]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _photos() -> list[Path]:
    try:
        listed = subprocess.run(["dpkg", "-L", "opencv-doc"], capture_output=True, text=True, check=False).stdout
        files = [Path(p) for p in listed.splitlines() if "examples/data" in p]
    except OSError:
        files = []
    if not files and OPENCV_DATA.exists():
        files = list(OPENCV_DATA.rglob("*"))
    return sorted(p for p in files if p.suffix.lower() in (".jpg", ".png") and p.is_file())


def _real_photos(bundle: Any, quick: bool, work: Path) -> dict[str, Any]:
    import numpy as np

    import mosaic
    from hardenkit.imageio import read_image

    photos = _photos()
    if not photos:
        return {"error": "no OpenCV sample images; run: apt-get install -y opencv-doc"}
    if quick:
        photos = photos[:30]
    src = work / "photos"
    src.mkdir()
    for p in photos:  # flat copy with unique names; both tools read the same files
        name = p.relative_to(OPENCV_DATA).as_posix().replace("/", "__") if p.is_relative_to(OPENCV_DATA) else p.name
        shutil.copyfile(p, src / name)
    files = sorted(src.iterdir())
    cfg = mosaic.MosaicConfig()
    explainer = mosaic.make_explainer(bundle, cfg)
    repeats = 2 if quick else 5

    # warm-up both (tracing, ONNX session) on two files
    warm = work / "warm"
    warm.mkdir()
    for f in files[:2]:
        shutil.copyfile(f, warm / f.name)
    mosaic.blur_folder(warm, work / "warm-out", cfg, bundle, explainer=explainer)
    from nudenet import NudeDetector

    detector = NudeDetector()
    for f in files[:2]:
        detector.censor(str(f), output_path=str(work / f"warm-{f.name}"))

    # Ours, the peer and the floor take turns, run by run (a slow spell of a noisy machine then
    # hits all three, not one of them); each figure is the best of its runs.
    # The floor: decode + forward + CAM (on the images that get censored), each alone, and the
    # forward pass through the same compiled call mosaic scores with (a plain Keras call costs
    # more Python per batch and would flatter us).
    from mosaic.censoring import sensitive_scores

    t_mosaic, t_nude, rep, nude_failed = [], [], None, 0
    t_decode = t_forward = t_cam = float("inf")
    for k in range(repeats):
        t = time.perf_counter()
        rep = mosaic.blur_folder(src, work / f"out-mosaic-{k}", cfg, bundle, explainer=explainer)
        t_mosaic.append(time.perf_counter() - t)
        out = work / f"out-nudenet-{k}"
        out.mkdir()
        t = time.perf_counter()
        for f in files:
            try:
                detector.censor(str(f), output_path=str(out / f.name))
            except Exception:  # noqa: BLE001 - count the peer's failures, keep timing the rest
                nude_failed += 1
        t_nude.append(time.perf_counter() - t)
        t = time.perf_counter()
        images = [read_image(f) for f in files]
        t_decode = min(t_decode, time.perf_counter() - t)
        t = time.perf_counter()
        scores = np.concatenate([sensitive_scores(bundle, images[i:i + cfg.batch_size])
                                 for i in range(0, len(images), cfg.batch_size)])
        t_forward = min(t_forward, time.perf_counter() - t)
        flagged = [im for im, s in zip(images, scores) if s >= cfg.threshold]
        t = time.perf_counter()
        for i in range(0, len(flagged), cfg.batch_size):
            explainer(flagged[i:i + cfg.batch_size])
        t_cam = min(t_cam, time.perf_counter() - t)
    assert rep is not None
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    e2e = min(t_mosaic)
    floor = t_decode + t_forward + t_cam
    n = len(files)
    return {
        "photos": n, "megapixels": round(pixels / 1e6, 2),
        "mosaic_images_per_s": n / e2e, "nudenet_images_per_s": n / min(t_nude),
        "speedup_vs_nudenet": min(t_nude) / e2e, "nudenet_failed": nude_failed // repeats,
        "speedup_per_run": [round(b / a, 3) for a, b in zip(t_mosaic, t_nude)],
        "mosaic_counts": rep.counts, "flagged": len(flagged),
        "e2e_s": e2e, "decode_s": t_decode, "forward_s": t_forward, "cam_s": t_cam,
        "e2e_over_floor": e2e / floor,
    }


def _demo_quality(bundle: Any, quick: bool, work: Path) -> dict[str, Any]:
    import numpy as np

    import mosaic
    from hardenkit.data import scan_split
    from hardenkit.imageio import read_image, read_mask
    from hardenkit.paths import ensure_demo_data
    from mosaic.tune import measure

    split = scan_split(ensure_demo_data(quiet=True), "test", bundle.class_names)
    samples = [s for s in split.samples if s.class_name == "sensitive" and s.mask_path is not None]
    if quick:
        samples = samples[:64]
    src = work / "demo"
    src.mkdir()
    for s in samples:
        shutil.copyfile(s.path, src / Path(s.path).name)
    cfg = mosaic.MosaicConfig()
    explainer = mosaic.make_explainer(bundle, cfg)
    rep = mosaic.blur_folder(src, work / "demo-out", cfg, bundle, explainer=explainer)
    done = [r for r in rep.rows if r.status in ("censored", "unresolved")]
    outs = [read_image(work / "demo-out" / r.path) for r in done]
    still = bundle.sensitive_score(outs) >= cfg.threshold if outs else np.zeros(0, bool)

    images = [read_image(s.path) for s in samples]
    gts = [read_mask(s.mask_path, im.shape[:2]) for s, im in zip(samples, images) if s.mask_path is not None]
    row = measure(bundle, images, gts, cfg, explainer, [Path(s.path).suffix.lower() for s in samples])
    return {
        "sensitive_images": len(samples), "counts": rep.counts,
        "coverage_flagged": row.coverage, "coverage_all": row.coverage_all, "area_over_gt": row.area_ratio,
        "still_flagged": float(still.mean()) if len(still) else 0.0,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the figures (``rows`` for ``bench/RESULTS.md``)."""
    from hardenkit.modelio import load_model
    from hardenkit.paths import ensure_demo_model

    bundle = load_model(ensure_demo_model(quiet=True))
    with tempfile.TemporaryDirectory(prefix="bench-mosaic-") as tmp:
        work = Path(tmp)
        photos = _real_photos(bundle, quick, work)
        demo = _demo_quality(bundle, quick, work)
    rows = []
    if "error" not in photos:
        sp, ov = photos["speedup_vs_nudenet"], photos["e2e_over_floor"]
        rows += [
            {"name": f"mosaic blur images/s / NudeNet censor() images/s ({photos['photos']} OpenCV photos, "
                     f"best of {len(photos['speedup_per_run'])} alternating runs each)",
             "value": sp, "goal": ">= 2", "met": sp >= 2},
            {"name": "the same ratio run by run (min / median / max)",
             "value": " / ".join(f"{v:.2f}" for v in (min(photos["speedup_per_run"]),
                                                     statistics.median(photos["speedup_per_run"]),
                                                     max(photos["speedup_per_run"]))),
             "goal": "", "met": None},
            {"name": "mosaic images/s", "value": photos["mosaic_images_per_s"], "goal": "", "met": None},
            {"name": "NudeNet censor() images/s", "value": photos["nudenet_images_per_s"], "goal": "", "met": None},
            {"name": "end-to-end time / (decode + forward + CAM) time", "value": ov, "goal": "<= 1.5",
             "met": ov <= 1.5},
        ]
    cov, area, still = demo["coverage_flagged"], demo["area_over_gt"], demo["still_flagged"]
    rows += [
        {"name": f"ground-truth sensitive pixels censored (flagged demo test images, n={demo['sensitive_images']})",
         "value": cov, "goal": ">= 0.95", "met": cov >= 0.95},
        {"name": "ground-truth sensitive pixels censored (all sensitive test images, incl. model misses)",
         "value": demo["coverage_all"], "goal": "", "met": None},
        {"name": "censored area / ground-truth area", "value": area, "goal": "<= 2.5", "met": area <= 2.5},
        {"name": "censored outputs still flagged (decoded from disk)", "value": still, "goal": "<= 0.01",
         "met": still <= 0.01},
    ]
    return {"photos": photos, "demo": demo, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
