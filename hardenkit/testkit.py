"""The tiny test kit: an 8x8x3 one-conv model, a nested variant, deterministic images.

Used by hardenkit's own tests and handy for anyone testing code built on it. Loops that
iterate (attacks, escalation, training epochs) honour ``HARDENKIT_MAX_STEPS`` via
:func:`max_steps`, like tf-keras-vis's ``TF_KERAS_VIS_MAX_STEPS``.

Example:
    >>> from hardenkit.testkit import tiny_model, dummy_image
    >>> tiny_model().output_shape, dummy_image().shape
    ((None, 2), (8, 8, 3))
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def seed_everything(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and TensorFlow/Keras; return a NumPy generator with that seed.

    Example:
        >>> float(seed_everything(1).random()) == float(np.random.default_rng(1).random())
        True
    """
    import random

    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    return np.random.default_rng(seed)


def max_steps(default: int) -> int:
    """``default``, capped by the ``HARDENKIT_MAX_STEPS`` environment variable if set.

    Example:
        >>> max_steps(40) >= 1
        True
    """
    cap = os.environ.get("HARDENKIT_MAX_STEPS")
    if cap:
        return max(1, min(default, int(cap)))
    return default


def tiny_model(size: int = 8, n_classes: int = 2, seed: int = 0, name: str = "tiny") -> Any:
    """A one-conv classifier: Conv(4, 3x3) -> GAP -> Dense softmax, input (size, size, 3).

    Example:
        >>> tiny_model().count_params()
        122
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name)


def nested_model(size: int = 8, n_classes: int = 2, seed: int = 0) -> Any:
    """The transfer-learning shape: a base model used as one layer inside another.

    Example:
        >>> [l.name for l in nested_model().layers][1]
        'base'
    """
    import keras

    keras.utils.set_random_seed(seed)
    b_in = keras.Input((size, size, 3))
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="base_conv")(b_in)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="base_conv2")(b)
    base = keras.Model(b_in, b, name="base")
    inp = keras.Input((size, size, 3), name="image")
    x = base(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="nested")


def lambda_model(size: int = 8) -> Any:
    """A model with a Lambda layer (refused by safe mode).

    Example:
        >>> any(type(l).__name__ == "Lambda" for l in lambda_model().layers)
        True
    """
    import keras

    inp = keras.Input((size, size, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out)


def dummy_image(size: int = 8, seed: int = 0) -> np.ndarray:
    """A deterministic RGB float32 image in [0, 1].

    Example:
        >>> dummy_image().dtype
        dtype('float32')
    """
    return np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)


def planted_batch(n: int = 32, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiny images where class 1 has a bright 3x3 square planted on a dark background.

    Returns:
        (images (n, size, size, 3), labels (n,), masks (n, size, size) bool).

    Example:
        >>> x, y, m = planted_batch(4); x.shape, int(m[y == 1].sum() > 0)
        ((4, 8, 8, 3), 1)
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32) * 0.3
    y = (np.arange(n) % 2).astype(np.int32)
    m = np.zeros((n, size, size), bool)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, size - 3, 2)
        x[i, r:r + 3, c:c + 3] = 0.9 + 0.1 * rng.random((3, 3, 3))
        m[i, r:r + 3, c:c + 3] = True
    return x, y, m
