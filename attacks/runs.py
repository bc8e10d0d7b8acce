"""The library calls behind ``harden eval`` and ``harden mine``: a frozen config in, a report out.

Example:
    >>> from attacks.runs import EvalConfig, run_eval
    >>> report = run_eval(EvalConfig(data="DATA", attacks=("fgsm", "pgd")), bundle)  # doctest: +SKIP
    >>> report.metrics["robust_accuracy"]  # doctest: +SKIP
    0.58
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hardenkit.errors import ConfigError, DataError, InvalidImageError, UsageError

from .base import ATTACKS
from .mining import MineResult


def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"expected {name} >= 1, got {value!r}")


def _subset(split: Any, n: int | None, seed: int) -> Any:
    """At most ``n`` samples of a split, a seeded random choice kept in file order."""
    if n is None or len(split.samples) <= n:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split.samples), n, replace=False))
    return dataclasses.replace(split, samples=tuple(split.samples[i] for i in keep))


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``harden eval``.

    Attributes:
        data: Dataset folder ``DATA/<split>/<class>/``.
        split: Which split to evaluate. Defaults to ``test``.
        attacks: Names from :data:`~attacks.ATTACKS`. Defaults to ``("pgd",)``.
        eps: Attack budget (each attack's norm). Defaults to 8/255.
        threshold: Sensitive-score threshold. Defaults to 0.5 unless ``recall`` is given.
        recall: Instead of a threshold: the highest one keeping this recall on the split.
        max_images: Evaluate a seeded random subset of at most this many images.
        steps: Attack iterations (each attack's default if None).
        batch_size: Defaults to 64.
        seed: Seeds the subset choice. Defaults to 0.
    """

    data: str | os.PathLike[str]
    split: str = "test"
    attacks: tuple[str, ...] = ("pgd",)
    eps: float = 8 / 255
    threshold: float | None = None
    recall: float | None = None
    max_images: int | None = None
    steps: int | None = None
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.attacks:
            raise ConfigError("expected at least one attack, got none")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"expected attacks among {sorted(ATTACKS)}, got {unknown}")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"expected eps >= 0, got {self.eps}")
        if self.threshold is not None and self.recall is not None:
            raise ConfigError("expected --threshold or --recall, got both")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"expected 0 <= threshold <= 1, got {self.threshold}")
        if self.recall is not None and not 0 < self.recall <= 1:
            raise ConfigError(f"expected 0 < recall <= 1, got {self.recall}")
        _check_positive_int("max_images", self.max_images, allow_none=True)
        _check_positive_int("steps", self.steps, allow_none=True)
        _check_positive_int("batch_size", self.batch_size)


@dataclass
class EvalReport:
    """What ``harden eval`` measured, and the files it could not read."""

    metrics: dict[str, Any]
    errors: list[InvalidImageError] = field(default_factory=list)


def run_eval(cfg: EvalConfig, bundle: Any) -> EvalReport:
    """Load the split at the model's input size and measure :func:`~attacks.robustness` on it.

    Unreadable image files are skipped and returned in ``errors``; the rest is evaluated.

    Raises:
        DataError: Missing split, or no readable image in it.

    Example:
        >>> run_eval(EvalConfig(data="DATA", max_images=100), bundle).metrics["n"]  # doctest: +SKIP
        100
    """
    from hardenkit.data import load_split, scan_split

    from .metrics import robustness, threshold_at_recall

    split = _subset(scan_split(cfg.data, cfg.split, class_names=bundle.class_names), cfg.max_images, cfg.seed)
    ds = load_split(split, bundle.image_size, with_masks=False)
    if not len(ds.x):
        raise DataError(f"{split.root / split.name}: no readable images ({len(ds.errors)} failed)")
    if cfg.recall is not None:
        threshold = threshold_at_recall(bundle.sensitive_score(ds.x, cfg.batch_size), bundle.labels_binary(ds.y),
                                        cfg.recall)
    else:
        threshold = 0.5 if cfg.threshold is None else cfg.threshold
    metrics = robustness(bundle, ds.x, ds.y, attacks=cfg.attacks, eps=cfg.eps, threshold=threshold,
                         batch_size=cfg.batch_size, steps=cfg.steps)
    metrics["split"] = cfg.split
    metrics["recall_target"] = cfg.recall
    metrics["skipped"] = len(ds.errors)
    return EvalReport(metrics, list(ds.errors))


@dataclass(frozen=True)
class MineConfig:
    """Options of ``harden mine``.

    Attributes:
        pool: Folder (or file) of unlabelled images.
        seeds: Labelled dataset whose ``split`` seeds the Jacobian boundary walk.
        out: The CSV to write (``rank,path,distance``).
        split: Seed split. Defaults to ``train``.
        top: Items to keep. Defaults to 500.
        max_seeds: Seeded random subset of the seed split. Defaults to 200.
        lam: Jacobian step size. Defaults to 0.05.
        jacobian_steps: Jacobian walk steps. Defaults to 5.
        batch_size: Defaults to 64.
        seed: Defaults to 0.
    """

    pool: str | os.PathLike[str]
    seeds: str | os.PathLike[str]
    out: str | os.PathLike[str]
    split: str = "train"
    top: int = 500
    max_seeds: int = 200
    lam: float = 0.05
    jacobian_steps: int = 5
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("top", "max_seeds", "jacobian_steps", "batch_size"):
            _check_positive_int(name, getattr(self, name))
        if not (math.isfinite(self.lam) and self.lam > 0):
            raise ConfigError(f"expected lam > 0, got {self.lam}")
        if not Path(self.pool).exists():
            raise UsageError(f"{self.pool}: no such pool folder")
        if Path(self.out).is_dir():
            raise UsageError(f"{self.out}: expected a file path for the CSV, got a folder")


@dataclass
class MineReport:
    """The mined ranking, where it was written, and the unreadable files (seeds and pool)."""

    result: MineResult
    out: Path
    n_seeds: int
    errors: list[InvalidImageError] = field(default_factory=list)


def ranking_csv(result: MineResult) -> str:
    """The ``rank,path,distance`` CSV text of a mining result.

    Example:
        >>> from attacks.mining import MinedItem
        >>> ranking_csv(MineResult([MinedItem(1, 0.25, 0, Path("a.jpg"))])).splitlines()
        ['rank,path,distance', '1,a.jpg,0.250000']
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "path", "distance"])
    for it in result:
        w.writerow([it.rank, str(it.path) if it.path is not None else it.index, f"{it.distance:.6f}"])
    return buf.getvalue()


def run_mine(cfg: MineConfig, bundle: Any) -> MineReport:
    """Jacobian boundary samples from the seed split, then :func:`~attacks.mine_pool`; writes the CSV.

    Raises:
        DataError: Missing seed split or no readable seed image.

    Example:
        >>> run_mine(MineConfig(pool="DATA/pool", seeds="DATA", out="mined.csv"), bundle).out  # doctest: +SKIP
        PosixPath('mined.csv')
    """
    from hardenkit.data import load_split, scan_split
    from hardenkit.imageio import atomic_write_text

    from .boundary import jacobian_boundary
    from .mining import mine_pool

    split = _subset(scan_split(cfg.seeds, cfg.split, class_names=bundle.class_names), cfg.max_seeds, cfg.seed)
    ds = load_split(split, bundle.image_size, with_masks=False)
    if not len(ds.x):
        raise DataError(f"{split.root / split.name}: no readable seed images ({len(ds.errors)} failed)")
    boundary = jacobian_boundary(bundle, ds.x, ds.y, lam=cfg.lam, steps=cfg.jacobian_steps, batch_size=cfg.batch_size)
    result = mine_pool(bundle, cfg.pool, boundary, top=cfg.top, batch_size=cfg.batch_size)
    out = Path(cfg.out)
    atomic_write_text(out, ranking_csv(result))
    return MineReport(result, out, len(ds.x), list(ds.errors) + list(result.errors))
