"""Compiled (``tf.function``) views of a classifier, built once per Keras model and cached.

Every attack, boundary walk and embedding goes through :func:`compiled`, so a model is traced
once per input size and then runs as a graph: foolbox calls the model eagerly, and an eager
Keras forward/backward pass costs about twice a compiled one on CPU.

Logits. DeepFool, Carlini-Wagner and the cross-entropy of PGD want logits, but hardenkit models
usually end in a softmax. The logits used here are, in order of preference:

1. the model's own output, if it does not end in softmax (the bundle's ``prob_model`` then
   appends the softmax);
2. the pre-activation of the final layer: ``features @ kernel + bias`` for a ``Dense`` layer
   with a softmax activation, or the input of a final ``Softmax`` layer;
3. otherwise the log-probabilities ``log(p)``, which equal the logits up to a per-image
   constant and so give the same softmax, cross-entropy and argmax.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardenkit.modelio import logits_function

# labels are int64 everywhere a tensor is built: tf.argmax returns int64, and eagerpy 0.30
# compares tensors of different dtypes through np.find_common_type, which NumPy 2 removed.
LABEL_DTYPE = np.int64

_CACHE: "weakref.WeakKeyDictionary[Any, Compiled]" = weakref.WeakKeyDictionary()


@dataclass(eq=False)  # identity hash: used as a weak cache key
class Compiled:
    """Graph-compiled functions of one classifier (inputs float32 ``(N, H, W, C)`` in [0, 1]).

    Attributes:
        input_shape: ``(H, W, C)``.
        n_classes: Number of outputs.
        logits: ``x -> (N, K)`` logits (see the module docstring for what "logits" means).
        features: ``x -> (N, D)`` penultimate features (input of the last Dense layer), or
            the logits when the model has no Dense layer.
        loss_and_grad: ``(x, y) -> (summed cross-entropy, d loss / d x)``.
        prob_and_grad: ``(x, y) -> (p_y, d p_y / d x)``, the softmax probability of class y.
        logits_kind: ``"model"``, ``"pre-softmax"`` or ``"log-probabilities"``.
        pgd_loop: The compiled PGD loop of :mod:`attacks.pgd`, built on first use.
    """

    input_shape: tuple[int, int, int]
    n_classes: int
    logits: Any
    features: Any
    loss_and_grad: Any
    prob_and_grad: Any
    logits_kind: str
    pgd_loop: Any = None

    def predict_labels(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Argmax class per image, int64, computed in batches."""
        out = [np.asarray(self.logits(np.asarray(x[i:i + batch_size], np.float32))).argmax(axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(LABEL_DTYPE) if out else np.zeros(0, LABEL_DTYPE)


def keras_model_of(bundle_or_model: Any) -> Any:
    """The Keras model inside a :class:`~hardenkit.modelio.ModelBundle`, or the model itself."""
    return getattr(bundle_or_model, "model", bundle_or_model)


def _last_dense(model: Any) -> Any:
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer
    return None


def _build_features(model: Any, logits: Any) -> Any:
    import keras

    dense = _last_dense(model)
    if dense is None:
        return logits
    feats = keras.Model(model.inputs, dense.input)
    return lambda x: feats(x, training=False)


def compiled(bundle_or_model: Any) -> Compiled:
    """The cached :class:`Compiled` view of a bundle's (or a bare Keras model's) classifier.

    A :class:`Compiled` passed in is returned as is.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> c = compiled(tiny_model())
        >>> c.logits_kind, c.predict_labels(np.zeros((2, 8, 8, 3), np.float32)).dtype
        ('pre-softmax', dtype('int64'))
    """
    import tensorflow as tf

    if isinstance(bundle_or_model, Compiled):
        return bundle_or_model
    model = keras_model_of(bundle_or_model)
    hit = _CACHE.get(model)
    if hit is not None:
        return hit
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    h, w, c = (int(s) for s in shape[1:4])
    k = int(model.output_shape[-1])
    raw_logits, kind = logits_function(model)
    raw_features = _build_features(model, raw_logits)
    xs = tf.TensorSpec([None, h, w, c], tf.float32)
    ys = tf.TensorSpec([None], tf.int64)

    @tf.function(input_signature=[xs])
    def logits(x: Any) -> Any:
        return raw_logits(x)

    @tf.function(input_signature=[xs])
    def features(x: Any) -> Any:
        return raw_features(x)

    @tf.function(input_signature=[xs, ys])
    def loss_and_grad(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, raw_logits(x)))
        return loss, tape.gradient(loss, x)

    @tf.function(input_signature=[xs, ys])
    def prob_and_grad(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            p = tf.gather(tf.nn.softmax(raw_logits(x)), y, axis=1, batch_dims=1)
        return p, tape.gradient(p, x)

    out = Compiled((h, w, c), k, logits, features, loss_and_grad, prob_and_grad, kind)
    _CACHE[model] = out
    return out


def as_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    """Validate class indices and return them as int64 (see ``LABEL_DTYPE``).

    Raises:
        UsageError: Wrong length, not integers, or out of range.

    Example:
        >>> as_labels(np.array([0, 1], np.int32), 2, 2).dtype
        dtype('int64')
    """
    from hardenkit.errors import UsageError

    y = np.asarray(labels)
    if y.shape != (n,):
        raise UsageError(f"expected {n} labels (one per image), got shape {y.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"expected integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise UsageError(f"expected labels in [0, {n_classes - 1}], got {int(y.min())}..{int(y.max())}")
    return y.astype(LABEL_DTYPE)


def as_images(images: Any, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Validate a batch at the model's input size and return it as float32.

    Raises:
        UsageError: Wrong shape or values outside [0, 1].

    Example:
        >>> as_images(np.zeros((1, 8, 8, 3)), (8, 8, 3)).dtype
        dtype('float32')
    """
    from hardenkit.errors import UsageError

    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise UsageError(f"expected images of shape (N, {', '.join(map(str, input_shape))}) at the model's "
                         f"input size, got {x.shape}; resize them with bundle.prepare()")
    if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise UsageError(f"expected pixel values in [0, 1], got {float(x.min()):.3g}..{float(x.max()):.3g}")
    return x


def attack_inputs(bundle_or_model: Any, images: Any, labels: Any, eps: float,
                  batch_size: int) -> tuple[Compiled, np.ndarray, np.ndarray, float]:
    """Validate what every attack takes; return (compiled model, images, int64 labels, eps).

    Raises:
        ConfigError: ``eps`` negative or not finite, ``batch_size`` < 1.
        UsageError: See :func:`as_images` and :func:`as_labels`.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> attack_inputs(tiny_model(), np.zeros((1, 8, 8, 3)), [1], 0.1, 8)[2].dtype
        dtype('int64')
    """
    import math

    from hardenkit.errors import ConfigError

    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"expected eps >= 0, got {eps}")
    if batch_size < 1:
        raise ConfigError(f"expected batch_size >= 1, got {batch_size}")
    comp = compiled(bundle_or_model)
    x = as_images(images, comp.input_shape)
    return comp, x, as_labels(labels, len(x), comp.n_classes), eps
