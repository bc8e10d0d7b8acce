"""A fully compiled L-inf PGD in plain TensorFlow, for adversarial training.

The whole attack loop is one ``tf.function`` (a ``tf.while_loop``), with a stateless seeded
random start, so Madry-style training can call it every batch without Python overhead.

Example:
    >>> from attacks import pgd_tf
    >>> x_adv = pgd_tf(bundle, x, y, eps=8/255, steps=10)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardenkit.errors import ConfigError
from hardenkit.testkit import max_steps

from ._compiled import Compiled, attack_inputs

def linf_pgd_steps(grad_fn: Any, x0: Any, start: Any, eps: Any, step: Any, steps: Any) -> Any:
    """The L-inf PGD iteration itself, as TensorFlow ops (call it inside a ``tf.function``).

    Shared by :func:`pgd_tf` and the adversarial training step of ``hardening``: from
    ``start``, ``steps`` times take a signed-gradient step of size ``step`` and project back
    onto the ``eps``-ball around ``x0`` and onto [0, 1].

    Args:
        grad_fn: Maps a batch to the gradient of the loss to maximise, with respect to it.
        x0: The clean batch.
        start: The starting batch (``x0``, or ``x0`` plus random noise, clipped to [0, 1]).
        eps, step: Budget and per-step size (floats or scalar tensors).
        steps: Number of iterations (int or scalar tensor).

    Example:
        >>> import tensorflow as tf
        >>> x0 = tf.zeros((1, 2, 2, 1))
        >>> adv = linf_pgd_steps(lambda x: tf.ones_like(x), x0, x0, 0.1, 0.05, 3)
        >>> float(tf.reduce_max(adv))
        0.10000000149011612
    """
    import tensorflow as tf

    def one(x: Any) -> Any:
        x = tf.clip_by_value(x + step * tf.sign(grad_fn(x)), x0 - eps, x0 + eps)
        return tf.clip_by_value(x, 0.0, 1.0)

    if isinstance(steps, int):  # unrolled: what a training step with 1-3 steps wants
        x = start
        for _ in range(steps):
            x = one(x)
        return x
    x = start
    for _ in tf.range(steps):  # AutoGraph's loop (inside a tf.function): faster here than tf.while_loop
        x = one(x)
    return x


def _loop(comp: Compiled) -> Any:
    import tensorflow as tf

    if comp.pgd_loop is not None:
        return comp.pgd_loop
    h, w, c = comp.input_shape

    @tf.function(input_signature=[
        tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.bool), tf.TensorSpec([2], tf.int64),
    ])
    def pgd(x0: Any, y: Any, eps: Any, step: Any, steps: Any, random_start: Any, seed: Any) -> Any:
        noise = tf.random.stateless_uniform(tf.shape(x0), seed, -1.0, 1.0) * eps
        x = tf.clip_by_value(x0 + tf.where(random_start, noise, tf.zeros_like(noise)), 0.0, 1.0)
        return linf_pgd_steps(lambda xa: comp.loss_and_grad(xa, y)[1], x0, x, eps, step, steps)

    comp.pgd_loop = pgd
    return pgd


def pgd_tf(bundle_or_model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int = 10,
           step_size: float | None = None, random_start: bool = True, seed: int = 0,
           batch_size: int = 128) -> np.ndarray:
    """Untargeted L-inf PGD maximising the cross-entropy of the true label, fully compiled.

    Args:
        bundle_or_model: A :class:`~hardenkit.modelio.ModelBundle` or a Keras classifier.
        x: (N, H, W, C) float32 in [0, 1] at the model's input size.
        y: (N,) true class indices.
        eps: L-inf budget.
        steps: Iterations, capped by ``HARDENKIT_MAX_STEPS``. Defaults to 10.
        step_size: Per-step size; defaults to ``2.5 * eps / steps`` (Madry et al.).
        random_start: Start from a uniform point in the eps-ball. Defaults to True.
        seed: Seeds the random start (stateless: same seed, same result). Defaults to 0.
        batch_size: Images per compiled call. Defaults to 128.

    Returns:
        Adversarial images, float32, within ``eps`` of ``x`` and in [0, 1].

    Raises:
        ConfigError: Negative eps, steps < 1, batch_size < 1.

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> xb, yb, _ = planted_batch(4)
        >>> adv = pgd_tf(tiny_model(), xb, yb, eps=0.03, steps=3)
        >>> bool(np.abs(adv - xb).max() <= 0.03 + 1e-6)
        True
    """
    import tensorflow as tf

    if steps < 1:
        raise ConfigError(f"expected steps >= 1, got {steps}")
    comp, xs, ys, eps = attack_inputs(bundle_or_model, x, y, eps, batch_size)
    if eps == 0 or len(xs) == 0:
        return xs.copy()
    steps = max_steps(int(steps))
    step = float(step_size) if step_size is not None else 2.5 * float(eps) / steps
    fn = _loop(comp)
    out = np.empty_like(xs)
    for b, i in enumerate(range(0, len(xs), batch_size)):
        adv = fn(tf.constant(xs[i:i + batch_size]), tf.constant(ys[i:i + batch_size]), tf.constant(float(eps), tf.float32),
                 tf.constant(step, tf.float32), tf.constant(steps, tf.int32), tf.constant(bool(random_start)),
                 tf.constant([seed, b], tf.int64))
        out[i:i + batch_size] = adv.numpy()
    # float32 rounding in x0 +/- eps can overshoot by one ulp: make the bound exact
    return np.clip(np.clip(out, xs - eps, xs + eps), 0.0, 1.0).astype(np.float32)
