"""Pick mosaic's style and CAM region threshold for a model, on a split with ground-truth masks.

The defaults (:class:`MosaicConfig`) were chosen for the demo model. Another model's maps
are sharper or blurrier, and some models still flag a pixelated image (its blocks look like
texture to them), so the best setting is per model: :func:`tune` censors the sensitive
images of a labelled split (normally ``val``) with each candidate setting, measures how much
of the ground truth is censored (coverage) and how much more than it (area ratio), and picks
the candidate with the smallest area among those that reach the coverage goal and leave
nothing flagged (else the one with the highest coverage).

Example:
    >>> res = tune(bundle, "scenes", MosaicConfig(threshold=0.3))  # doctest: +SKIP
    >>> res.best.style, res.best.region_threshold  # doctest: +SKIP
    ('solid', 0.03)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hardenkit.errors import DataError

from .config import MosaicConfig

#: Candidate CAM region thresholds (fractions of the map's maximum) tried by default.
REGION_THRESHOLDS = (0.03, 0.05, 0.08, 0.11, 0.16, 0.25)

#: Styles tried by default: the default look, and the one no texture detector can see through.
TUNE_STYLES = ("pixelate", "solid")


@dataclass(frozen=True)
class TuneRow:
    """One candidate's figures on the split.

    Attributes:
        style: The style tried.
        region_threshold: The region threshold tried.
        coverage: Censored ground-truth pixels / ground-truth pixels, over the flagged images.
        area_ratio: Censored pixels / ground-truth pixels, over the flagged images.
        unresolved: Share of flagged images censored whole.
        still_flagged: Share of flagged images whose output the model still flags.
        flagged: Images the model flagged (of the split's sensitive images with masks).
        coverage_all: Censored ground-truth pixels / ground-truth pixels over every image given,
            the ones the model did not flag included (their pixels count as missed).
    """

    style: str
    region_threshold: float
    coverage: float
    area_ratio: float
    unresolved: float
    still_flagged: float
    flagged: int
    coverage_all: float = float("nan")


@dataclass
class TuneResult:
    """All candidates, the pick, and the config to use.

    Attributes:
        rows: One :class:`TuneRow` per candidate, in the order tried.
        best: The chosen row.
        config: The input config with the chosen style and region threshold.
        coverage_goal: The coverage a candidate had to reach.
        images: Sensitive images with masks the candidates were measured on.
        notes: Warnings for the user (e.g. no candidate reached the coverage goal).
    """

    rows: list[TuneRow]
    best: TuneRow
    config: MosaicConfig
    coverage_goal: float
    images: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what ``mosaic tune --json`` prints)."""
        return {"images": self.images, "coverage_goal": self.coverage_goal, "best": asdict(self.best),
                "options": self.options(), "rows": [asdict(r) for r in self.rows], "notes": self.notes}

    def options(self) -> str:
        """The ``mosaic blur`` options that select the pick."""
        return f"--style {self.best.style} --region-threshold {self.best.region_threshold:g}"


def pick(rows: Sequence[TuneRow], coverage: float) -> TuneRow:
    """The smallest-area row reaching ``coverage`` with nothing still flagged; else the best-covering
    row (fewest still flagged first).

    Example:
        >>> a = TuneRow("pixelate", 0.1, 0.97, 2.0, 0.0, 0.0, 10)
        >>> b = TuneRow("solid", 0.1, 0.96, 1.5, 0.0, 0.0, 10)
        >>> pick([a, b], 0.95).style, pick([a, b], 0.99).style
        ('solid', 'pixelate')
    """
    if not rows:
        raise ValueError("no candidates")
    ok = [r for r in rows if r.coverage >= coverage and r.still_flagged == 0.0]
    if ok:
        return min(ok, key=lambda r: (r.area_ratio, -r.coverage))
    return min(rows, key=lambda r: (r.still_flagged, -r.coverage, r.area_ratio))


def measure(bundle: Any, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], config: MosaicConfig,
            explainer: Any = None, suffixes: Sequence[str] | None = None) -> TuneRow:
    """Censor ``images`` with ``config`` and measure the outputs against the ground-truth ``masks``.

    ``suffixes`` are the output formats verification encodes to (as ``mosaic blur`` would write
    each file); default ``.png`` (lossless) for all.

    Example:
        >>> row = measure(bundle, images, masks, MosaicConfig(threshold=0.3))  # doctest: +SKIP
        >>> 0.0 <= row.coverage <= 1.0  # doctest: +SKIP
        True
    """
    from .censoring import censor_batch

    res = censor_batch(bundle, list(images), config, explainer,
                       list(suffixes) if suffixes is not None else [".png"] * len(images))
    inter = area = gt_px = flagged = unresolved = still = gt_all = 0
    for (_, info), gt in zip(res, masks):
        gt_all += int(gt.sum())
        if info.mask is None:
            continue
        flagged += 1
        inter += int((info.mask & gt).sum())
        area += int(info.mask.sum())
        gt_px += int(gt.sum())
        unresolved += int(info.status == "unresolved")
        still += int(info.score_after >= config.clean_below)
    n = max(1, flagged)
    return TuneRow(config.style, config.region_threshold, inter / max(1, gt_px), area / max(1, gt_px),
                   unresolved / n, still / n, flagged, inter / max(1, gt_all))


def load_masked(data_dir: str | os.PathLike[str], split: str, bundle: Any,
                limit: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """(images, ground-truth masks, file endings) of the split's sensitive images that have a mask.

    Raises:
        DataError: The split has no sensitive image with a mask.

    Example:
        >>> images, masks, suffixes = load_masked("demo-data", "val", bundle)  # doctest: +SKIP
    """
    from hardenkit.data import scan_split
    from hardenkit.imageio import read_image, read_mask

    sp = scan_split(data_dir, split, bundle.class_names)
    sens = set(bundle.sensitive_indices)
    samples = [s for s in sp.samples if s.label in sens and s.mask_path is not None]
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise DataError(f"{Path(data_dir) / split}: no sensitive image with a mask (expected masks under "
                        f"{Path(data_dir) / 'masks' / split}/<class>/); tuning needs ground truth")
    images = [read_image(s.path) for s in samples]
    masks = [read_mask(s.mask_path, im.shape[:2]) for s, im in zip(samples, images) if s.mask_path is not None]
    return images, masks, [s.path.suffix.lower() for s in samples]


def tune(
    bundle: Any,
    data_dir: str | os.PathLike[str],
    config: MosaicConfig | None = None,
    split: str = "val",
    coverage: float = 0.95,
    styles: Sequence[str] = TUNE_STYLES,
    region_thresholds: Sequence[float] = REGION_THRESHOLDS,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Try every (style, region threshold) on a split's masked sensitive images and pick one.

    Args:
        bundle: The model (:class:`hardenkit.modelio.ModelBundle`).
        data_dir: Dataset folder in the hardenkit layout, with ``masks/<split>/<class>/``.
        config: The run's other settings (threshold, method, margin...). Defaults to
            :class:`MosaicConfig` ().
        split: Which split to tune on. Defaults to ``val`` (never tune on the test split).
        coverage: Coverage a candidate must reach. Defaults to 0.95.
        styles: Styles to try. Defaults to :data:`TUNE_STYLES`.
        region_thresholds: Region thresholds to try. Defaults to :data:`REGION_THRESHOLDS`.
        limit: Use at most this many images. Defaults to all.
        progress: Called with 1 after each candidate.

    Returns:
        A :class:`TuneResult`.

    Raises:
        DataError: No masked sensitive image in the split.

    Example:
        >>> tune(bundle, "demo-data").options()  # doctest: +SKIP
        '--style pixelate --region-threshold 0.11'
    """
    from .censoring import make_explainer

    base = config or MosaicConfig()
    images, masks, suffixes = load_masked(data_dir, split, bundle, limit)
    explainer = make_explainer(bundle, base)
    rows = []
    for style in styles:
        for thr in region_thresholds:
            rows.append(measure(bundle, images, masks, replace(base, style=style, region_threshold=float(thr)),
                                explainer, suffixes))
            if progress is not None:
                progress(1)
    best = pick(rows, coverage)
    notes = [] if best.coverage >= coverage else [
        f"no candidate reached coverage {coverage:g}; picked the best-covering one ({best.coverage:.3f})"]
    return TuneResult(rows, best, replace(base, style=best.style, region_threshold=best.region_threshold),
                      coverage, len(images), notes)
