"""Evasion attacks behind one call: the registry, the base class and :func:`generate`.

Each attack is a small class with one hook, ``_run(compiled, x, y, eps)``, registered by
name in :data:`ATTACKS` (which feeds ``harden eval --attack``). The public ``__call__``
validates inputs, batches, projects the result back into the eps-ball and into [0, 1]
(so the bounds hold exactly whatever the backend returns), and decides success itself:
an image is a success when the model's argmax on the adversarial differs from the given
label (for moderation: the image is no longer classified as its true class). An image
that the model already misclassifies counts as a success with no perturbation needed.

Gradient and minimisation attacks are foolbox 3 attacks over the model's logits (see
:mod:`attacks._compiled` for what "logits" means for a softmax model); ``eps`` is measured
in the attack's norm (``Attack.norm``): L-inf for fgsm, pgd, deepfool and hopskipjump, L2 for
pgd-l2 and cw-l2.

Example:
    >>> from attacks import generate
    >>> res = generate(bundle, x, y, attack="pgd", eps=8/255)  # doctest: +SKIP
    >>> res.success.mean()  # doctest: +SKIP
    0.75
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from hardenkit.errors import ConfigError, UsageError
from hardenkit.testkit import max_steps

from ._compiled import Compiled, attack_inputs

A = TypeVar("A", bound=type["Attack"])

ATTACKS: dict[str, type["Attack"]] = {}
"""Attack name -> class. ``generate(attack=name)`` and ``harden eval --attack`` choose from it."""


def register(cls: A) -> A:
    """Class decorator adding an :class:`Attack` subclass to :data:`ATTACKS` under ``cls.name``."""
    ATTACKS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class AttackResult:
    """Adversarial images and which of them fooled the model.

    Attributes:
        adversarial: float32, the input's shape, values in [0, 1], within ``eps`` of the
            input in the attack's norm.
        success: bool per image: the model's argmax on ``adversarial`` differs from the label.
        attack: The attack's registry name.
        eps: The perturbation budget, in the attack's norm.
        norm: ``"linf"`` or ``"l2"``.
        steps: The iterations actually run (after the ``HARDENKIT_MAX_STEPS`` cap).
    """

    adversarial: np.ndarray
    success: np.ndarray
    attack: str
    eps: float
    norm: str = "linf"
    steps: int = 0

    @property
    def success_rate(self) -> float:
        """Fraction of images that fooled the model (NaN for an empty batch)."""
        return float(self.success.mean()) if len(self.success) else float("nan")


def project(x: np.ndarray, adv: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Project ``adv`` into the ``eps``-ball around ``x`` (L-inf or L2, per image) and [0, 1].

    Example:
        >>> x = np.zeros((1, 2, 2, 1), np.float32)
        >>> round(float(project(x, x + 0.5, 0.1, "linf").max()), 6)
        0.1
    """
    delta = adv.astype(np.float32) - x
    if norm == "linf":
        delta = np.clip(delta, -eps, eps)
    else:
        norms = np.sqrt((delta.astype(np.float64) ** 2).reshape(len(delta), -1).sum(axis=1))
        # a hair under 1 so float32 rounding cannot push the norm past eps
        factor = np.minimum(1.0, eps * (1 - 1e-6) / np.maximum(norms, 1e-12))
        delta = delta * factor.reshape((-1,) + (1,) * (delta.ndim - 1)).astype(np.float32)
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


class Attack(ABC):
    """Base class: subclasses set ``name``, ``norm``, ``default_steps`` and implement ``_run``.

    Args:
        steps: Iterations; defaults to ``default_steps``, capped by ``HARDENKIT_MAX_STEPS``.

    Example:
        >>> PGD(steps=10).steps <= 10
        True
    """

    name: ClassVar[str] = ""
    norm: ClassVar[str] = "linf"
    default_steps: ClassVar[int] = 1

    def __init__(self, steps: int | None = None) -> None:
        if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ConfigError(f"expected steps >= 1, got {steps!r}")
        self.steps = max_steps(int(steps) if steps is not None else self.default_steps)

    def __call__(self, bundle: Any, images: np.ndarray, labels: np.ndarray, eps: float = 8 / 255,
                 batch_size: int = 64) -> AttackResult:
        """Attack ``images`` (at the model's input size, float32 [0, 1]) with true ``labels``.

        Raises:
            ConfigError: ``eps`` negative or not finite, ``batch_size`` < 1.
            UsageError: Images of the wrong shape or range, labels of the wrong length.
        """
        comp, x, y, eps = attack_inputs(bundle, images, labels, eps, batch_size)
        adv = x.copy()
        success = np.zeros(len(x), bool)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            if eps == 0:
                ab = xb
            else:
                ab, _ = self._run(comp, xb, yb, eps)
                ab = project(xb, ab, eps, self.norm)
            adv[i:i + batch_size] = ab
            success[i:i + batch_size] = comp.predict_labels(ab, batch_size) != yb
        return AttackResult(adv, success, self.name, eps, self.norm, self.steps)

    @abstractmethod
    def _run(self, compiled: Compiled, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Attack one batch (``y`` int64); return (adversarials, success as the backend saw it)."""


class _Foolbox(Attack):
    """An attack that is one foolbox attack object, built by ``_make``."""

    def _run(self, compiled: Compiled, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        from . import _foolbox

        return _foolbox.run(self._make(compiled), compiled, x, y, eps)

    @abstractmethod
    def _make(self, compiled: Compiled) -> Any:
        """The configured foolbox attack."""


@register
class FGSM(_Foolbox):
    """Fast gradient sign method (Goodfellow et al. 2015), one L-inf step of size eps."""

    name = "fgsm"

    def _make(self, compiled: Compiled) -> Any:
        from . import _foolbox

        return _foolbox.FGSM()


class _ProjectedGradient(_Foolbox):
    """PGD with a random start and step ``2.5 * eps / steps`` (Madry et al. 2018)."""

    default_steps = 40

    def _make(self, compiled: Compiled) -> Any:
        from . import _foolbox

        cls = _foolbox.LinfPGD if self.norm == "linf" else _foolbox.L2PGD
        return cls(rel_stepsize=2.5 / self.steps, steps=self.steps, random_start=True)


@register
class PGD(_ProjectedGradient):
    """L-inf projected gradient descent (Madry et al. 2018)."""

    name = "pgd"


@register
class PGDL2(_ProjectedGradient):
    """L2 projected gradient descent; ``eps`` is the per-image L2 radius."""

    name = "pgd-l2"
    norm = "l2"


@register
class DeepFool(_Foolbox):
    """L-inf DeepFool (Moosavi-Dezfooli et al. 2016) on logits, clipped to eps."""

    name = "deepfool"
    default_steps = 50

    def _make(self, compiled: Compiled) -> Any:
        import foolbox as fb

        return fb.attacks.LinfDeepFoolAttack(steps=self.steps, candidates=min(10, compiled.n_classes),
                                             overshoot=0.02, loss="logits")


@register
class CarliniWagnerL2(_Foolbox):
    """Carlini-Wagner L2 (2017): Adam in tanh space, 5 binary-search steps over the constant from 1.0."""

    name = "cw-l2"
    norm = "l2"
    default_steps = 100

    def _make(self, compiled: Compiled) -> Any:
        import foolbox as fb

        # the paper's 0.01 Adam step for long runs; larger when the step count is capped short
        return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=self.steps,
                                                stepsize=max(0.01, 0.5 / self.steps), initial_const=1.0,
                                                abort_early=True)


@register
class HopSkipJump(Attack):
    """HopSkipJump (Chen et al. 2020): decision-based, only queries the predicted class.

    L-inf variant. Starting points are the nearest images of the same batch that the model
    assigns to another class, else blends with uniform noise; images for which neither is
    found are returned unchanged (not a success).
    """

    name = "hopskipjump"
    default_steps = 10

    def _run(self, compiled: Compiled, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        import foolbox as fb

        from . import _foolbox

        starts, ok = _starting_points(compiled, x, y)
        adv = x.copy()
        success = np.zeros(len(x), bool)
        if ok.any():
            attack = fb.attacks.HopSkipJumpAttack(steps=self.steps, initial_gradient_eval_steps=50,
                                                  max_gradient_eval_steps=200, constraint="linf")
            adv[ok], success[ok] = _foolbox.run(attack, compiled, x[ok], y[ok], eps, starting_points=starts[ok])
        return adv, success


def _starting_points(compiled: Compiled, x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per image, some input the model does not assign to its label (and whether one was found)."""
    pred = compiled.predict_labels(x)
    starts = x.copy()
    ok = pred != y
    flat = x.reshape(len(x), -1)
    for i in np.flatnonzero(~ok):
        other = np.flatnonzero(pred != y[i])
        if len(other):
            j = other[np.argmin(((flat[other] - flat[i]) ** 2).sum(axis=1))]
            starts[i], ok[i] = x[j], True
    rest = np.flatnonzero(~ok)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        if not len(rest):
            break
        noise = rng.random((len(rest), *x.shape[1:]), dtype=np.float32)
        hit = compiled.predict_labels(noise) != y[rest]
        starts[rest[hit]], ok[rest[hit]] = noise[hit], True
        rest = rest[~hit]
    return starts, ok


def generate(bundle: Any, images: np.ndarray, labels: np.ndarray, attack: str = "pgd", eps: float = 8 / 255,
             steps: int | None = None, batch_size: int = 64) -> AttackResult:
    """Run attack ``attack`` from :data:`ATTACKS` on a batch.

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle` (or a bare Keras classifier).
        images: (N, H, W, C) float32 in [0, 1] at the model's input size
            (``bundle.prepare(images)`` resizes).
        labels: (N,) true class indices (any integer dtype).
        attack: Registry name: fgsm, pgd, pgd-l2, deepfool, cw-l2, hopskipjump. Defaults to pgd.
        eps: Budget in the attack's norm. Defaults to 8/255.
        steps: Iterations (attack default if None), capped by ``HARDENKIT_MAX_STEPS``.
        batch_size: Images per attack batch. Defaults to 64.

    Returns:
        An :class:`AttackResult`.

    Raises:
        UsageError: Unknown attack, bad images or labels.
        ConfigError: Bad eps, steps or batch size.

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> x, y, _ = planted_batch(4)
        >>> r = generate(tiny_model(), x, y, attack="fgsm")
        >>> r.adversarial.shape, bool(np.abs(r.adversarial - x).max() <= 8 / 255 + 1e-6)
        ((4, 8, 8, 3), True)
    """
    cls = ATTACKS.get(attack)
    if cls is None:
        raise UsageError(f"unknown attack {attack!r}; expected one of {sorted(ATTACKS)}")
    return cls(steps=steps)(bundle, images, labels, eps=eps, batch_size=batch_size)
