"""The foolbox side of the attacks: a compiled model wrapper and compiled-gradient subclasses.

Imported lazily (it imports foolbox and TensorFlow). Two speed-ups over plain foolbox:

* the model handed to :class:`foolbox.TensorFlowModel` is the ``tf.function`` logits of
  :mod:`attacks._compiled`, so every forward pass runs as a graph;
* the gradient attacks (FGSM, PGD) override foolbox's documented ``value_and_grad`` hook with
  one compiled function computing loss and input gradient together, so each step is a single
  graph call instead of an eager tape around a graph call. This keeps the foolbox PGD within a
  few percent of a hand-written ``tf.function`` PGD loop (see ``bench/bench_pgd.py``).
"""

from __future__ import annotations

from typing import Any, Callable

import eagerpy as ep
import foolbox as fb
import numpy as np

from ._compiled import Compiled


class CompiledModel(fb.TensorFlowModel):
    """A :class:`foolbox.TensorFlowModel` over compiled logits, bounds (0, 1).

    Attributes:
        compiled: The :class:`~attacks._compiled.Compiled` view it wraps.
    """

    def __init__(self, compiled: Compiled) -> None:
        super().__init__(compiled.logits, bounds=(0, 1), device="/GPU:0" if _has_gpu() else "/CPU:0")
        self.compiled = compiled


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class _CrossEntropy:
    """The cross-entropy loss foolbox would build, plus what the compiled gradient needs."""

    def __init__(self, model: Any, labels: ep.Tensor) -> None:
        self.model = model
        self.labels = labels

    def __call__(self, inputs: ep.Tensor) -> ep.Tensor:
        return ep.crossentropy(self.model(inputs), self.labels).sum()


class CompiledGradientMixin:
    """Replace foolbox's eager ``value_and_grad`` by the model's compiled loss-and-gradient.

    Falls back to foolbox's own path for any model that is not a :class:`CompiledModel`.
    """

    def get_loss_fn(self, model: Any, labels: ep.Tensor) -> Callable[[ep.Tensor], ep.Tensor]:
        return _CrossEntropy(model, labels)

    def value_and_grad(self, loss_fn: Callable[[ep.Tensor], ep.Tensor], x: ep.Tensor) -> tuple[ep.Tensor, ep.Tensor]:
        if isinstance(loss_fn, _CrossEntropy) and isinstance(loss_fn.model, CompiledModel):
            loss, grad = loss_fn.model.compiled.loss_and_grad(x.raw, loss_fn.labels.raw)
            return ep.astensor(loss), ep.astensor(grad)
        return ep.value_and_grad(loss_fn, x)


class LinfPGD(CompiledGradientMixin, fb.attacks.LinfPGD):
    """foolbox LinfPGD with a compiled gradient."""


class L2PGD(CompiledGradientMixin, fb.attacks.L2PGD):
    """foolbox L2PGD with a compiled gradient."""


class FGSM(CompiledGradientMixin, fb.attacks.LinfFastGradientAttack):
    """foolbox FGSM with a compiled gradient."""


def run(attack: Any, compiled: Compiled, x: np.ndarray, y: np.ndarray, eps: float, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run a foolbox attack on one batch; returns (clipped adversarials, success) as NumPy."""
    import tensorflow as tf

    model = CompiledModel(compiled)
    # foolbox mixes its arguments with the inputs' tensor type: NumPy extras must become TF too
    kwargs = {k: tf.constant(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    _, clipped, success = attack(model, tf.constant(x), tf.constant(y), epsilons=eps, **kwargs)
    return np.asarray(clipped, np.float32), np.asarray(success, bool)
