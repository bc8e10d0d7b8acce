"""Moderation metrics and robustness under attack.

Example:
    >>> from attacks import robustness
    >>> robustness(bundle, x, y, attacks=("fgsm", "pgd"))["robust_accuracy"]  # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from hardenkit.errors import ConfigError, DataError

from .base import generate


def _as_binary(scores: Any, y_binary: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(y_binary).reshape(-1)
    if s.shape != y.shape:
        raise ConfigError(f"expected one binary label per score, got {len(s)} scores and {len(y)} labels")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ConfigError("expected binary labels (0 = normal, 1 = sensitive)")
    return s, y.astype(bool)


def binary_metrics(scores: Any, y_binary: Any, threshold: float) -> dict[str, Any]:
    """Confusion figures of "flag when sensitive score >= threshold".

    Args:
        scores: (N,) sensitive scores in [0, 1].
        y_binary: (N,) 1 = sensitive, 0 = normal.
        threshold: Flag at or above this score.

    Returns:
        ``fpr`` (flagged normals / normals), ``miss_rate`` (unflagged sensitives /
        sensitives), ``recall``, ``precision``, ``tp``, ``fp``, ``tn``, ``fn``, ``threshold``.
        Rates with an empty denominator are NaN.

    Example:
        >>> m = binary_metrics([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], 0.5)
        >>> m["fpr"], m["miss_rate"]
        (0.5, 0.5)
    """
    s, y = _as_binary(scores, y_binary)
    flag = s >= threshold
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int((~flag & y).sum()), int((~flag & ~y).sum())

    def rate(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"fpr": rate(fp, fp + tn), "miss_rate": rate(fn, fn + tp), "recall": rate(tp, tp + fn),
            "precision": rate(tp, tp + fp), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "threshold": float(threshold)}


def threshold_at_recall(scores: Any, y_binary: Any, recall: float = 0.95) -> float:
    """The highest threshold whose recall (``score >= threshold`` among sensitives) is >= ``recall``.

    That is the k-th highest sensitive score, k = ceil(recall * number of sensitives).

    Raises:
        ConfigError: ``recall`` not in (0, 1].
        DataError: No sensitive sample to measure recall on.

    Example:
        >>> threshold_at_recall([0.9, 0.8, 0.3, 0.7, 0.1], [1, 1, 1, 0, 0], recall=0.6)
        0.8
    """
    if not 0 < recall <= 1:
        raise ConfigError(f"expected 0 < recall <= 1, got {recall}")
    s, y = _as_binary(scores, y_binary)
    pos = np.sort(s[y])[::-1]
    if not len(pos):
        raise DataError("cannot set a threshold at a recall: no sensitive samples")
    k = max(1, math.ceil(recall * len(pos) - 1e-9))
    return float(pos[k - 1])


def robustness(bundle: Any, x: np.ndarray, y: np.ndarray, attacks: Sequence[str] = ("pgd",), eps: float = 8 / 255,
               threshold: float = 0.5, batch_size: int = 64, steps: int | None = None) -> dict[str, Any]:
    """Clean and adversarial figures of a moderation classifier.

    An image counts as robust only if the model gets it right clean *and* under every listed
    attack (the worst case per image, like AutoAttack's ensemble). "Right" is argmax == label.

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle`.
        x: (N, H, W, C) float32 [0, 1] at the model's input size.
        y: (N,) class indices.
        attacks: Names from :data:`~attacks.ATTACKS`. Defaults to ("pgd",).
        eps: Budget, in each attack's own norm. Defaults to 8/255.
        threshold: Sensitive-score threshold for ``fpr`` / ``miss_rate``. Defaults to 0.5.
        batch_size: Defaults to 64.
        steps: Attack iterations (each attack's default if None).

    Returns:
        ``n``, ``accuracy``, ``fpr``, ``miss_rate``, ``threshold``, ``eps``,
        ``robust_accuracy``, ``robust_accuracy_per_attack`` ({name: accuracy}),
        ``attack_success_rate`` ({name: fraction fooled}).

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> from hardenkit.modelio import bundle_from_model
        >>> x, y, _ = planted_batch(4)
        >>> r = robustness(bundle_from_model(tiny_model(), ["normal", "sensitive"]), x, y, attacks=("fgsm",))
        >>> r["robust_accuracy"] <= r["accuracy"]
        True
    """
    if not attacks:
        raise ConfigError("expected at least one attack, got none")
    probs = bundle.predict(x, batch_size)
    y = np.asarray(y)
    correct = probs.argmax(axis=1) == y
    bm = binary_metrics(probs[:, list(bundle.sensitive_indices)].sum(axis=1), bundle.labels_binary(y), threshold)
    robust = correct.copy()
    per_attack: dict[str, float] = {}
    fooled: dict[str, float] = {}
    nan = float("nan")
    for name in attacks:
        res = generate(bundle, x, y, attack=name, eps=eps, steps=steps, batch_size=batch_size)
        ok = ~res.success
        per_attack[name] = float(ok.mean()) if len(y) else nan
        fooled[name] = res.success_rate
        robust &= ok
    return {
        "n": int(len(y)),
        "accuracy": float(correct.mean()) if len(y) else nan,
        "fpr": bm["fpr"],
        "miss_rate": bm["miss_rate"],
        "threshold": float(threshold),
        "eps": float(eps),
        "robust_accuracy": float(robust.mean()) if len(y) else nan,
        "robust_accuracy_per_attack": per_attack,
        "attack_success_rate": fooled,
    }
