"""Baseline training: a compact CNN classifier trained from scratch.

Example:
    >>> from hardenkit.train import TrainConfig, train_baseline
    >>> result = train_baseline(TrainConfig(data="demo-data", out="model.keras"))  # doctest: +SKIP
    >>> round(result.val_accuracy, 2)  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, DataError


def _jit_wanted() -> bool | str:
    """``jit_compile`` for training: Keras' ``"auto"`` on GPU, False (no XLA) on CPU.

    ``"auto"`` turns XLA on for TensorFlow unless op determinism is enabled; on CPU the XLA
    train step of the compact CNN ran at 0.77x the speed of the default oneDNN graph
    (adversarial step, batch 32, 64x64), and its losses changed from run to run.
    """
    import tensorflow as tf

    return "auto" if tf.config.list_physical_devices("GPU") else False


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``harden train``.

    Attributes:
        data: Dataset folder (``train``/``val`` splits).
        out: Where to save the model (``.keras``); the class names go next to it.
        epochs: Maximum epochs. Defaults to 30.
        image_size: Square input side the images are resized to. Defaults to 64.
        batch_size: Defaults to 64.
        learning_rate: Adam learning rate. Defaults to 2e-3.
        seed: Seeds weights, shuffling and augmentation. Defaults to 0.
        sensitive: Sensitive class names; defaults to the class named ``sensitive``.
        patience: Stop after this many epochs without a better validation loss. Defaults to 6.
    """

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    epochs: int = 30
    image_size: int = 64
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    sensitive: tuple[str, ...] = ()
    patience: int = 6

    def __post_init__(self) -> None:
        for name in ("epochs", "image_size", "batch_size", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"expected {name} >= 1, got {v!r}")
        if self.image_size < 8:
            raise ConfigError(f"expected image_size >= 8, got {self.image_size}")
        if not (0 < self.learning_rate < 1):
            raise ConfigError(f"expected 0 < learning_rate < 1, got {self.learning_rate}")
        if Path(self.out).suffix.lower() not in (".keras", ".h5"):
            raise ConfigError(f"expected --out to end in .keras or .h5, got {self.out}")


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    path: Path
    val_accuracy: float
    val_loss: float
    epochs_run: int
    seconds: float
    skipped_files: list[str] = field(default_factory=list)


def build_classifier(image_size: int | tuple[int, int], n_classes: int, name: str = "hardenkit_cnn") -> Any:
    """The compact CNN: a strided stem, three conv blocks (24-48-64-96), global average pooling, softmax.

    The stem (3x3, stride 2) halves the resolution at once: full-resolution feature maps cost
    memory traffic on CPU out of proportion to what they add on 64x64 inputs, and the
    capacity goes into two convolutions at 1/4 resolution instead, where adversarial training
    needs it. The last conv layer (``last_conv``) keeps a 1/4-resolution map, which is what CAM
    reads; ``relu2`` (1/2 resolution) is the finer map mosaic reads.

    Example:
        >>> build_classifier(64, 2).output_shape
        (None, 2)
    """
    import keras
    from keras import layers

    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    inp = keras.Input((h, w, 3), name="image")
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False, name="conv1")(inp)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(48, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv3")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.Conv2D(96, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name)


def fit_arrays(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    epochs: int,
    batch_size: int = 64,
    optimizer: Any = "adam",
    learning_rate: float = 1e-3,
    sample_weight: np.ndarray | None = None,
    seed: int = 0,
    callbacks: Sequence[Any] = (),
    description: str = "train",
    monitor: str = "val_loss",
    final_learning_rate: float | None = None,
    ema_momentum: float | None = None,
) -> dict[str, list[float]]:
    """Fit ``model`` on in-memory arrays, keeping the weights of the best epoch by ``monitor``.

    Class-balanced (per-sample weights), horizontally flipped at random, seeded.
    With ``final_learning_rate`` the rate follows a cosine from ``learning_rate`` down to it
    over the ``epochs`` (per step); else it stays constant. With ``ema_momentum`` the
    optimizer keeps an exponential moving average of the weights (Polyak averaging), and
    validation, the best-epoch checkpoint and the result use the averaged weights
    (``keras.callbacks.SwapEMAWeights``). The model is (re)compiled here. ``callbacks`` run
    before the checkpoint, so one of them may add the ``monitor`` value to the epoch logs.

    Returns:
        The Keras history dict.

    Example:
        >>> fit_arrays(model, x, y, xv, yv, epochs=3)  # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    from .data import class_weights
    from .progress import keras_progress

    n_classes = int(model.output_shape[-1])
    cw = class_weights(y, n_classes)
    w = np.array([cw[int(c)] for c in y], np.float32)
    if sample_weight is not None:
        w = w * sample_weight.astype(np.float32)
    lr: Any = learning_rate
    if final_learning_rate is not None and final_learning_rate != learning_rate:
        steps = epochs * -(-len(x) // batch_size)
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps,
                                                    alpha=final_learning_rate / learning_rate)
    conf: dict[str, Any] = {"learning_rate": lr}
    if ema_momentum is not None:
        conf.update(use_ema=True, ema_momentum=float(ema_momentum))
    opt = keras.optimizers.get({"class_name": optimizer, "config": conf}) if isinstance(optimizer, str) else optimizer
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=_jit_wanted())
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).shuffle(len(x), seed=seed)
    ds = ds.map(lambda a, b, c: (tf.image.random_flip_left_right(a, seed=seed), b, c),
                num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "best.weights.h5")
        mode = "min" if "loss" in monitor else "max"
        ema = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if getattr(opt, "use_ema", False) else []
        cbs = [*ema, *callbacks, keras.callbacks.ModelCheckpoint(ckpt, monitor=monitor, mode=mode, save_best_only=True,
                                                           save_weights_only=True),
               keras_progress(epochs, description)]
        hist = model.fit(ds, validation_data=(x_val, y_val), epochs=epochs, verbose=0, callbacks=cbs,
                         shuffle=False)  # ds is shuffled (seeded) above
        if os.path.exists(ckpt):
            model.load_weights(ckpt)
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def train_baseline(config: TrainConfig) -> TrainResult:
    """Train the compact CNN on ``config.data`` and save it with its class names.

    Streams the training split through ``tf.data`` (parallel decode, prefetch),
    balances classes, keeps only the best epoch by validation loss.

    Raises:
        DataError: The dataset is missing, empty, or every file in a split is bad.

    Example:
        >>> train_baseline(TrainConfig(data="demo-data", out="m.keras", epochs=2))  # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    from .data import class_weights, load_split, scan_split, tf_dataset
    from .distribute import get_strategy
    from .errors import InvalidImageError
    from .modelio import resolve_sensitive, save_model
    from .progress import keras_progress
    from .testkit import seed_everything

    t0 = time.perf_counter()
    seed_everything(config.seed)
    train = scan_split(config.data, "train")
    names = train.class_names
    sens = resolve_sensitive(names, list(config.sensitive) or None)
    val = scan_split(config.data, "val", names)
    size = (config.image_size, config.image_size)
    errors: list[InvalidImageError] = []
    val_arr = load_split(val, size, with_masks=False)
    errors.extend(val_arr.errors)
    if len(val_arr.x) == 0:
        raise DataError(f"{config.data}/val: no readable images")
    cw = class_weights(train.labels, len(names))
    ds = tf_dataset(train, size, config.batch_size, shuffle=True, seed=config.seed, errors=errors, cache=True)
    ds = ds.map(lambda a, b: (tf.image.random_flip_left_right(a, seed=config.seed), b))
    strategy = get_strategy()
    with strategy.scope():
        model = build_classifier(size, len(names))
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=_jit_wanted())
    out = Path(config.out)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "best.weights.h5")
        cbs = [
            keras.callbacks.ModelCheckpoint(ckpt, monitor="val_loss", save_best_only=True, save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
            keras_progress(config.epochs, "train"),
        ]
        with warnings.catch_warnings():
            # tf_dataset skips undecodable files, so its length is unknown until the first
            # epoch ends, which Keras reports as "Your input ran out of data" every time
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
            hist = model.fit(ds, validation_data=(val_arr.x, val_arr.y), epochs=config.epochs,
                             class_weight=cw, verbose=0, callbacks=cbs, shuffle=False)  # tf_dataset shuffles
        if not os.path.exists(ckpt):
            raise DataError(f"{config.data}/train: no readable images")
        model.load_weights(ckpt)
    loss, acc = model.evaluate(val_arr.x, val_arr.y, verbose=0)
    # dedupe: the same bad file is met once per epoch
    seen: dict[str, str] = {}
    for err in errors:
        seen.setdefault(err.path, str(err))
    save_model(model, out, names, sens, extra={"image_size": list(size), "val_accuracy": float(acc),
                                               "trained_on": str(config.data)})
    return TrainResult(out, float(acc), float(loss), len(hist.history["loss"]),
                       time.perf_counter() - t0, list(seen.values()))
