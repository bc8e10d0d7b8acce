"""Explain a classifier's decision as heatmaps: :class:`Explainer` and :func:`explain`.

Maps are computed at the model's input resolution and resized back (cv2, via
``hardenkit.imageio.resize``) to each original image's size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hardenkit.errors import UsageError
from hardenkit.imageio import resize

from .methods import DEFAULT_METHOD, get_method


class SensitiveScore:
    """Score = summed probability of the classes ``indices`` (a tf-keras-vis score function).

    With ``log_odds`` the model output it is given must be log-probabilities (what
    :class:`cam._tfkv.FastModel` hands the gradient methods), and the score is
    log(p(indices) / p(every other class)), computed as a difference of log-sum-exps. Gradient
    methods (Grad-CAM, Grad-CAM++, LayerCAM, saliency) need that: once a confident model's
    softmax saturates (p rounds to 1.0 in float32) the probability's gradient underflows to
    rounding noise, and a map normalised from noise points anywhere and changes with the batch
    it is computed in. The log-odds' gradient does not vanish; where the softmax is not
    saturated it is the probability's gradient times a per-image constant (two classes), which
    the per-image normalisation of the map removes. ``indices`` may also be one list per image.
    ``zero_value`` keeps the gradient but makes the value 0: Grad-CAM++ (tf-keras-vis) takes
    exp(score), which overflows for a confident model's log-odds, and the factor exp(score)
    is per image, so the normalised map does not change.

    Example:
        >>> round(float(SensitiveScore((1, 2))(np.array([[0.2, 0.5, 0.3]]))[0]), 4)
        0.8
        >>> round(float(SensitiveScore((1,), log_odds=True)(np.log([[0.2, 0.8]]))[0]), 4)  # log 4
        1.3863
    """

    def __init__(self, indices: Sequence[int] | Sequence[Sequence[int]], log_odds: bool = False,
                 zero_value: bool = False) -> None:
        self.indices: list[Any] = [list(i) if isinstance(i, (list, tuple, np.ndarray)) else int(i)  # type: ignore[arg-type]
                                   for i in indices]
        self.log_odds = log_odds
        self.zero_value = zero_value

    def _mask(self, k: int) -> np.ndarray:
        """(K,) or, with per-image indices, (N, K) bool mask of the scored classes."""
        if self.indices and isinstance(self.indices[0], list):
            m = np.zeros((len(self.indices), k), bool)
            for row, idx in enumerate(self.indices):
                m[row, idx] = True
            return m
        m1 = np.zeros(k, bool)
        m1[self.indices] = True
        return m1

    def __call__(self, output: Any) -> Any:
        import tensorflow as tf

        out = tf.convert_to_tensor(output, tf.float32)
        mask = tf.constant(self._mask(int(out.shape[-1])))
        if not self.log_odds:
            return tf.reduce_sum(tf.where(mask, out, 0.0), axis=-1)
        low = tf.constant(-np.inf, tf.float32)
        mine = tf.reduce_logsumexp(tf.where(mask, out, low), axis=-1)
        rest = tf.reduce_logsumexp(tf.where(mask, low, out), axis=-1)
        odds = mine - rest
        return odds - tf.stop_gradient(odds) if self.zero_value else odds


class Explainer:
    """A heatmap generator built once per (model, method, target, layer), reused for every batch.

    The model is split at the target layer once (weights shared, nothing copied) and the
    tf-keras-vis object is created once, so explaining 10,000 images costs no re-tracing.

    Args:
        bundle: The model and its class names (:class:`hardenkit.modelio.ModelBundle`).
        method: A key of :data:`cam.METHODS`. Defaults to :data:`cam.DEFAULT_METHOD`.
        target: ``"sensitive"`` (summed probability of the sensitive classes), ``"top"``
            (each image's top class) or a class name. Defaults to ``"sensitive"``.
        layer: Target layer name (nested models are searched too). Defaults to the last layer
            with a 4-D output.
        batch_size: Images per batch. Defaults to 32.

    Raises:
        UsageError: Unknown method, target class or layer; or a model that cannot be cut at
            the layer.

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import nested_model, dummy_image
        >>> ex = Explainer(bundle_from_model(nested_model(), ["normal", "sensitive"]), "gradcam")
        >>> ex.layer_name, ex([dummy_image()])[0].shape
        ('base_conv2', (8, 8))
    """

    def __init__(self, bundle: Any, method: str = DEFAULT_METHOD, target: str = "sensitive",
                 layer: str | None = None, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise UsageError(f"expected batch_size >= 1, got {batch_size}")
        if target not in ("sensitive", "top") and target not in bundle.class_names:
            raise UsageError(f"unknown target {target!r}; expected 'sensitive', 'top' or one of "
                             f"{list(bundle.class_names)}")
        self.bundle = bundle
        self.method = method
        self.target = target
        self.batch_size = batch_size
        self._impl = get_method(method)(bundle.prob_model, layer, batch_size)
        self.layer_name = self._impl.layer_name

    def score_fn(self, x: np.ndarray) -> Any:
        """The tf-keras-vis score function for the prepared batch ``x`` (log-odds for the
        gradient methods, see :class:`SensitiveScore`)."""
        kw = {"log_odds": self._impl.differentiates_score, "zero_value": self._impl.exponentiates_score}
        if self.target == "sensitive":
            return SensitiveScore(self.bundle.sensitive_indices, **kw)
        if self.target == "top":
            top = np.asarray(self._impl.fast(x)).argmax(axis=-1)
            return SensitiveScore([[int(i)] for i in top], **kw)
        return SensitiveScore((self.bundle.class_names.index(self.target),), **kw)

    def explain_prepared(self, x: np.ndarray) -> np.ndarray:
        """Maps (N, H, W) at the model's resolution for a batch already at the model's size."""
        step = min(self.batch_size, self._impl.chunk_size() or self.batch_size)
        out = [self._impl(self.score_fn(x[i:i + step]), x[i:i + step]) for i in range(0, len(x), step)]
        return np.concatenate(out) if out else np.zeros(x.shape[:3], np.float32)

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Heatmaps for RGB float32 [0, 1] images of any size.

        Returns:
            One float32 (H, W) map in [0, 1] per image, at that image's size.
        """
        maps: list[np.ndarray] = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i:i + self.batch_size]
            low = self.explain_prepared(self.bundle.prepare(chunk))
            for im, m in zip(chunk, low):
                size = tuple(np.shape(im)[:2])
                maps.append(np.clip(resize(m, size), 0.0, 1.0).astype(np.float32) if size != m.shape else m)
        return maps


def explain(bundle: Any, images: Sequence[np.ndarray] | np.ndarray, method: str = DEFAULT_METHOD,
            target: str = "sensitive", layer: str | None = None, batch_size: int = 32) -> list[np.ndarray]:
    """Heatmaps of what drives ``bundle``'s score, one per image, at each image's size.

    A convenience wrapper around :class:`Explainer` (build an ``Explainer`` yourself to reuse it
    across many calls; repeated ``explain`` calls on the same model still reuse its compiled
    split).

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        images: RGB float32 arrays in [0, 1], any sizes (or one (N, H, W, 3) array).
        method: A key of :data:`cam.METHODS`. Defaults to :data:`cam.DEFAULT_METHOD`.
        target: ``"sensitive"``, ``"top"`` or a class name. Defaults to ``"sensitive"``.
        layer: Target layer name. Defaults to the last 4-D layer (nested models searched).
        batch_size: Images per batch. Defaults to 32.

    Returns:
        float32 (H, W) maps in [0, 1].

    Raises:
        UsageError: Unknown method, target or layer.

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model
        >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
        >>> [m.shape for m in explain(b, [np.zeros((20, 30, 3), np.float32)], method="gradcam")]
        [(20, 30)]
    """
    return Explainer(bundle, method, target, layer, batch_size)(images)
