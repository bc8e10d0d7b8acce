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


#: /proc/cpuinfo flags of x86 CPUs that compute bfloat16 in hardware (Intel AMX, AVX512-BF16).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware: one of :data:`BF16_CPU_FLAGS` among
    the ``flags`` of ``/proc/cpuinfo`` (or of the text given). False where that file does
    not exist (macOS, Windows) or cannot be read.

    Example:
        >>> cpu_has_bf16("processor : 0\\nflags : fpu avx2 avx512f amx_bf16 amx_tile\\n")
        True
        >>> cpu_has_bf16("processor : 0\\nflags : fpu avx2 fma\\n")
        False
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(flag in value.split() for flag in BF16_CPU_FLAGS)
    return False


def training_policy(mixed_precision: bool | str = "auto") -> str:
    """The Keras dtype policy to train under.

    - ``"auto"`` (the default): ``"mixed_bfloat16"`` on a CPU that computes bfloat16 in
      hardware (:func:`cpu_has_bf16`) when no GPU is visible, else ``"float32"``. On an
      AMX CPU an adversarial training step of the demo CNN took 0.70x the time of float32
      (``bench/bench_cpu.py``); CPUs without bfloat16 units only emulate it, slower than
      float32, so they stay float32.
    - ``True``: ``"mixed_float16"`` on a GPU, else what ``"auto"`` picks.
    - ``False``: ``"float32"`` everywhere.

    It is applied to the model being trained only (:func:`with_dtype_policy`), never as
    Keras' global policy: a global one also changes the models tf-keras-vis builds for CAM,
    whose bfloat16/float16 outputs then fail its float32 score functions.

    Example:
        >>> training_policy(False)
        'float32'
    """
    if mixed_precision is False:
        return "float32"
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16" if mixed_precision is True else "float32"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


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
