"""The project's foolbox PGD-40 against a plain ``tf.function`` PGD-40 loop.

Same model (the cached 64x64 demo model, or an untrained ``build_classifier(64, 2)`` when it
is missing: timing does not depend on the weights), same batch of 64, same run; the figure is
the ratio of median wall times, measured interleaved so machine load hits both alike.
Goal: ``generate(..., attack="pgd", steps=40)`` <= 1.1x the compiled loop (plain eager
foolbox measured ~2x).

    python bench/bench_pgd.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

STEPS = 40
BATCH = 64
EPS = 8 / 255
GOAL = 1.1


def _model() -> tuple[Any, str]:
    from hardenkit.modelio import bundle_from_model, load_model
    from hardenkit.paths import demo_model_path
    from hardenkit.train import build_classifier

    path = demo_model_path()
    if path.exists():
        return load_model(path), str(path)
    return bundle_from_model(build_classifier(64, 2), ["normal", "sensitive"]), "build_classifier(64, 2), untrained"


def plain_pgd(model: Any) -> Callable[[Any, Any], Any]:
    """A hand-written PGD-40 (L-inf, random start, step 2.5 * eps / 40) as one ``tf.function``."""
    import keras
    import tensorflow as tf

    @tf.function
    def pgd(x0: Any, y: Any) -> Any:
        step = 2.5 * EPS / STEPS
        x = tf.clip_by_value(x0 + tf.random.uniform(tf.shape(x0), -EPS, EPS), 0.0, 1.0)
        for _ in tf.range(STEPS):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, model(x, training=False)))
            g = tape.gradient(loss, x)
            x = tf.clip_by_value(tf.clip_by_value(x + step * tf.sign(g), x0 - EPS, x0 + EPS), 0.0, 1.0)
        return x

    return pgd


def _median_times(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for f in fns.values():  # warm-up: tracing and first-call costs are not what is compared
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the ratio; ``quick`` uses 3 repeats instead of 7 and skips the eager-foolbox peer."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved_cap = os.environ.pop("HARDENKIT_MAX_STEPS", None)  # the cap would shorten the attack
    try:
        import tensorflow as tf

        from attacks import generate, pgd_tf

        bundle, source = _model()
        h, w = bundle.image_size
        rng = np.random.default_rng(0)
        x = rng.random((BATCH, h, w, 3), dtype=np.float32)
        y = (np.arange(BATCH) % len(bundle.class_names)).astype(np.int64)
        xt, yt = tf.constant(x), tf.constant(y)
        plain = plain_pgd(bundle.prob_model)
        fns: dict[str, Callable[[], Any]] = {
            "compiled_loop": lambda: plain(xt, yt).numpy(),
            "foolbox_pgd": lambda: generate(bundle, x, y, attack="pgd", eps=EPS, steps=STEPS, batch_size=BATCH),
            "pgd_tf": lambda: pgd_tf(bundle, x, y, eps=EPS, steps=STEPS, batch_size=BATCH),
        }
        if not quick:
            fns["eager_foolbox_pgd"] = lambda: _eager_foolbox(bundle.prob_model, xt, yt)
        med = _median_times(fns, 3 if quick else 7)
    finally:
        if saved_cap is not None:
            os.environ["HARDENKIT_MAX_STEPS"] = saved_cap
    ratio = med["foolbox_pgd"] / med["compiled_loop"]
    rows = [
        {"name": "foolbox PGD-40 (generate) / tf.function PGD-40, batch 64", "value": ratio,
         "goal": f"<= {GOAL}", "met": ratio <= GOAL},
        {"name": "pgd_tf PGD-40 / tf.function PGD-40", "value": med["pgd_tf"] / med["compiled_loop"]},
    ]
    out: dict[str, Any] = {
        "pgd_over_compiled": ratio,
        "goal": GOAL,
        "pgd_tf_over_compiled": med["pgd_tf"] / med["compiled_loop"],
        "seconds": med,
        "model": source,
        "batch": BATCH,
        "steps": STEPS,
    }
    if "eager_foolbox_pgd" in med:
        out["eager_foolbox_over_compiled"] = med["eager_foolbox_pgd"] / med["compiled_loop"]
        rows.append({"name": "plain eager foolbox LinfPGD-40 / tf.function PGD-40 (peer)",
                     "value": out["eager_foolbox_over_compiled"]})
    out["rows"] = rows
    return out


def _eager_foolbox(prob_model: Any, x: Any, y: Any) -> Any:
    """Foolbox as documented: the Keras model called eagerly (probabilities used as logits)."""
    import foolbox as fb

    fmodel = fb.TensorFlowModel(prob_model, bounds=(0, 1), device="/CPU:0")
    return fb.attacks.LinfPGD(rel_stepsize=2.5 / STEPS, steps=STEPS)(fmodel, x, y, epsilons=EPS)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = run(quick="--quick" in sys.argv[1:])
    print(json.dumps(res, indent=1, default=str))
