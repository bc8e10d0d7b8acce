"""Batched Grad-CAM time over a plain forward pass, demo model, 64 demo images.

Goal (issue: cam): ``cam_over_forward`` <= 3, where the forward pass is the compiled
``model(x, training=False)`` (a ``tf.function``), the fastest way to run the model, and Grad-CAM
is ``cam.Explainer(bundle, "gradcam").explain_prepared(x)`` on the same batch (maps at model
resolution, normalised). Median of several repeats after warm-up.

    python -m bench.bench_cam [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any, Callable

N_IMAGES = 64
GOAL = 3.0


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (first call builds/traces)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _demo_batch(bundle: Any, n: int) -> Any:
    import numpy as np

    from hardenkit.data import load_split, scan_split
    from hardenkit.paths import ensure_demo_data

    split = scan_split(ensure_demo_data(quiet=True), "test", bundle.class_names)
    idx = np.random.default_rng(0).permutation(len(split.samples))[:n]
    import dataclasses

    split = dataclasses.replace(split, samples=tuple(split.samples[i] for i in sorted(idx)))
    return load_split(split, bundle.image_size, with_masks=False).x


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return ``{"cam_over_forward": ratio, "goal": 3.0, "rows": [...], ...}``."""
    import numpy as np
    import tensorflow as tf

    import cam
    from hardenkit.modelio import load_model
    from hardenkit.paths import ensure_demo_model

    bundle = load_model(ensure_demo_model(quiet=True))
    x = _demo_batch(bundle, N_IMAGES)
    repeats = 7 if quick else 25
    model = bundle.prob_model
    forward = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    t_fwd = _median_seconds(lambda: np.asarray(forward(xt)), repeats)
    t_eager = _median_seconds(lambda: bundle.predict(x, batch_size=N_IMAGES), repeats)
    times = {}
    for method in ("gradcam", "gradcam++"):
        ex = cam.Explainer(bundle, method, batch_size=N_IMAGES)
        times[method] = _median_seconds(lambda: ex.explain_prepared(x), repeats)
    ratio = times["gradcam"] / t_fwd
    return {
        "cam_over_forward": ratio,
        "goal": GOAL,
        "met": ratio <= GOAL,
        "gradcampp_over_forward": times["gradcam++"] / t_fwd,
        "cam_over_bundle_predict": times["gradcam"] / t_eager,
        "forward_ms": t_fwd * 1e3,
        "bundle_predict_ms": t_eager * 1e3,
        "gradcam_ms": times["gradcam"] * 1e3,
        "gradcampp_ms": times["gradcam++"] * 1e3,
        "images": int(len(x)),
        "repeats": repeats,
        "rows": [
            {"name": f"batched Grad-CAM / compiled forward pass ({len(x)} demo images)", "value": ratio,
             "goal": f"<= {GOAL:g}", "met": ratio <= GOAL},
            {"name": "batched Grad-CAM++ / compiled forward pass", "value": times["gradcam++"] / t_fwd,
             "goal": "", "met": None},
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
