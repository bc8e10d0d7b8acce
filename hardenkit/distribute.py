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


def enable_mixed_precision_if_gpu() -> bool:
    """Turn on ``mixed_float16`` if a GPU is visible; return whether it did.

    Example:
        >>> enable_mixed_precision_if_gpu()  # doctest: +SKIP
        False
    """
    import keras
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
        return True
    return False
