"""Device placement: one strategy for training, chosen from what TensorFlow sees.

Several GPUs -> ``MirroredStrategy`` over them; one GPU -> that GPU; none -> the CPU.
``HARDENKIT_LOGICAL_CPUS=N`` (set before TensorFlow starts) splits the CPU into N logical
devices and mirrors over them, which is how multi-device training is tested without GPUs.

Example:
    >>> from hardenkit.distribute import get_strategy
    >>> get_strategy().num_replicas_in_sync >= 1  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from typing import Any

_configured = False


def _configure_logical_cpus() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    n = int(os.environ.get("HARDENKIT_LOGICAL_CPUS", "0") or 0)
    if n > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def get_strategy() -> Any:
    """The ``tf.distribute`` strategy to build and train models under.

    Returns:
        ``MirroredStrategy`` over all GPUs (or logical CPUs when
        ``HARDENKIT_LOGICAL_CPUS`` > 1), else the default strategy.
    """
    _configure_logical_cpus()
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([c.name for c in cpus])
    return tf.distribute.get_strategy()


def training_policy(mixed_precision: bool) -> str:
    """The Keras dtype policy to train under: ``"mixed_float16"`` if asked for and a GPU is
    visible, else ``"float32"`` (CPUs gain little or nothing from either 16-bit type).

    It is applied to the model being trained only (:func:`with_dtype_policy`), never as
    Keras' global policy: a global one also changes the models tf-keras-vis builds for CAM,
    whose bfloat16/float16 outputs then fail its float32 score functions.

    Example:
        >>> training_policy(False)
        'float32'
    """
    import tensorflow as tf

    return "mixed_float16" if mixed_precision and tf.config.list_logical_devices("GPU") else "float32"


def with_dtype_policy(model: Any, policy: str) -> Any:
    """A copy of ``model`` (same weights) whose layers compute under ``policy``.

    A loaded model keeps the dtype policy it was saved with, so setting Keras' global
    policy (``mixed_float16``) does not make it train in mixed precision: this rebuilds it
    with ``policy`` on every layer but the output layer(s), which stay ``float32`` for a
    numerically stable softmax (Keras' mixed-precision guide). Passing ``"float32"`` turns
    a mixed model back into a plain one, which is how trained models are saved. A model
    ``keras.models.clone_model`` cannot rebuild (a subclassed one) is returned unchanged.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> m = with_dtype_policy(tiny_model(), "mixed_bfloat16")
        >>> m.get_layer("conv").compute_dtype, m.layers[-1].compute_dtype
        ('bfloat16', 'float32')
    """
    import keras

    outputs = {t._keras_history[0].name for t in getattr(model, "outputs", None) or []}

    def rebuild(layer: Any) -> Any:
        conf = layer.get_config()
        conf["dtype"] = "float32" if layer.name in outputs else policy
        return layer.__class__.from_config(conf)

    try:
        clone = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
    except (ValueError, TypeError, NotImplementedError):
        return model
    clone.set_weights(model.get_weights())
    clone.dtype_policy = policy  # compile() wraps the optimizer in loss scaling for mixed_float16
    return clone
