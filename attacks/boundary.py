"""Samples at the decision boundary: Jacobian walks and bisection between twins.

Example:
    >>> from attacks import jacobian_boundary, bisect_boundary
    >>> near = jacobian_boundary(bundle, x, y)  # doctest: +SKIP
    >>> flip = bisect_boundary(bundle, x, generate(bundle, x, y).adversarial)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardenkit.errors import ConfigError, UsageError
from hardenkit.testkit import max_steps

from ._compiled import as_images, as_labels, compiled


def jacobian_boundary(bundle: Any, images: np.ndarray, labels: np.ndarray, lam: float = 0.05, steps: int = 5,
                      batch_size: int = 64, refine: bool = True) -> np.ndarray:
    """Walk seed images toward the decision boundary of their label (Jacobian augmentation).

    Papernot et al. (2017) grow a substitute's training set with
    ``x' = clip(x + lam * sign(dF_y/dx))``. Here the step is chosen to approach the boundary
    of the label's region: for a seed the model assigns to its label ``y``, the step is
    ``-lam * sign(d p_y / dx)`` (lowering the label's softmax probability); for a seed
    already outside it, ``+lam * sign(d p_y / dx)``. A seed stops moving as soon as the
    model's decision about "is it class y" changes. With ``refine`` (the default), that last
    step is then bisected (:func:`bisect_boundary`), so a seed that crossed is returned just
    past the boundary (within 1e-3 of the step) instead of up to ``lam`` beyond it: on the
    64x64 demo model one 0.05 step lands at a mean |p - 0.5| of 0.44, the refined points at
    0.002, and pool mining against them finds uncertain images. Seeds that never crossed in
    ``steps`` steps are returned where the walk ended. Images stay in [0, 1].

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle` or Keras classifier.
        images: (N, H, W, C) float32 in [0, 1] at the model's input size.
        labels: (N,) class indices.
        lam: L-inf size of each step. Defaults to 0.05.
        steps: Maximum steps, capped by ``HARDENKIT_MAX_STEPS``. Defaults to 5.
        batch_size: Defaults to 64.
        refine: Bisect the crossing step. Defaults to True.

    Returns:
        (N, H, W, C) float32 boundary samples.

    Raises:
        ConfigError: ``lam`` <= 0 or ``steps`` < 1.

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> x, y, _ = planted_batch(4)
        >>> jacobian_boundary(tiny_model(), x, y, lam=0.05, steps=2).shape
        (4, 8, 8, 3)
    """
    if not lam > 0:
        raise ConfigError(f"expected lam > 0, got {lam}")
    if steps < 1:
        raise ConfigError(f"expected steps >= 1, got {steps}")
    comp = compiled(bundle)
    x = as_images(images, comp.input_shape).copy()
    y = as_labels(labels, len(x), comp.n_classes)
    n_steps = max_steps(int(steps))
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        inside0 = comp.predict_labels(xb) == yb
        direction = np.where(inside0, -1.0, 1.0).astype(np.float32).reshape(-1, 1, 1, 1)
        active = np.ones(len(xb), bool)
        before = xb
        for _ in range(n_steps):
            _, g = comp.prob_and_grad(xb, yb)
            moved = np.clip(xb + lam * direction * np.sign(np.asarray(g)), 0.0, 1.0).astype(np.float32)
            before = np.where(active.reshape(-1, 1, 1, 1), xb, before)
            xb = np.where(active.reshape(-1, 1, 1, 1), moved, xb)
            active &= (comp.predict_labels(xb) == yb) == inside0
            if not active.any():
                break
        crossed = ~active
        if refine and crossed.any():
            xb[crossed] = bisect_boundary(comp, before[crossed], xb[crossed], batch_size=batch_size)
        x[i:i + batch_size] = xb
    return x


def bisect_boundary(bundle: Any, x: np.ndarray, x_adv: np.ndarray, tol: float = 1e-3, max_iter: int = 20,
                    batch_size: int = 256, return_t: bool = False) -> Any:
    """Per pair, the point on the segment ``x -> x_adv`` where the model's decision flips.

    Bisection on ``t`` in ``x + t * (x_adv - x)``, keeping ``t_lo`` classified like ``x`` and
    ``t_hi`` classified otherwise, until ``t_hi - t_lo <= tol`` (or ``max_iter``). The point
    returned is the one at ``t_hi``: it is on the far side of the boundary (classified
    differently from ``x``) and within ``tol`` (in ``t``) of a point classified like ``x``.
    Pairs whose ends get the same class have no flip to find: ``x_adv`` is returned for
    them (``t = 1``).

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle` or Keras classifier.
        x: (N, H, W, C) originals, float32 [0, 1].
        x_adv: (N, H, W, C) their adversarial twins.
        tol: Tolerance on the interpolation parameter. Defaults to 1e-3.
        max_iter: Maximum bisection steps. Defaults to 20.
        batch_size: Defaults to 256.
        return_t: Also return ``t_hi`` per pair. Defaults to False.

    Returns:
        (N, H, W, C) float32 points, or ``(points, t)`` with ``return_t``.

    Raises:
        UsageError: ``x`` and ``x_adv`` differ in shape.
        ConfigError: ``tol`` not in (0, 1) or ``max_iter`` < 1.

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> x, y, _ = planted_batch(2)
        >>> bisect_boundary(tiny_model(), x, 1 - x).shape
        (2, 8, 8, 3)
    """
    if not 0 < tol < 1:
        raise ConfigError(f"expected 0 < tol < 1, got {tol}")
    if max_iter < 1:
        raise ConfigError(f"expected max_iter >= 1, got {max_iter}")
    comp = compiled(bundle)
    a = as_images(x, comp.input_shape)
    b = as_images(x_adv, comp.input_shape)
    if a.shape != b.shape:
        raise UsageError(f"expected x and x_adv of the same shape, got {a.shape} and {b.shape}")
    c0 = comp.predict_labels(a, batch_size)
    lo = np.zeros(len(a))
    hi = np.ones(len(a))
    todo = comp.predict_labels(b, batch_size) != c0
    d = b - a
    for _ in range(max_iter):
        todo &= (hi - lo) > tol
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        mid = (lo[idx] + hi[idx]) / 2
        pts = (a[idx] + mid.reshape(-1, 1, 1, 1).astype(np.float32) * d[idx]).astype(np.float32)
        same = comp.predict_labels(pts, batch_size) == c0[idx]
        lo[idx] = np.where(same, mid, lo[idx])
        hi[idx] = np.where(same, hi[idx], mid)
    out = np.clip(a + hi.reshape(-1, 1, 1, 1).astype(np.float32) * d, 0.0, 1.0).astype(np.float32)
    return (out, hi) if return_t else out
