"""Score, explain, censor, verify and escalate: the per-image core of mosaic.

An image whose sensitive score reaches the threshold gets its CAM regions censored at full
resolution. The censored image is scored again *as it would be decoded* (quantised to 8 bits,
or re-encoded as JPEG with ``verify_encoded``); while it is still flagged the regions grow
(lower region threshold, more dilation) for up to ``max_rounds`` rounds, after which the
whole image is censored and marked ``unresolved``. Work is done in batches: one forward pass
and one CAM pass per batch, one forward pass per escalation round.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hardenkit.testkit import max_steps

from .config import MosaicConfig, parse_color
from .styles import StyleParams, censor, region_mask

#: Per escalation round the CAM region threshold is multiplied by this.
THRESHOLD_DECAY = 0.7

#: Regions are found on the CAM map resized to at most this many pixels on the long side (the map
#: is upsampled from the model's feature map anyway); the mask is then scaled back up.
WORK_SIDE = 512

#: An explainer maps a list of RGB [0, 1] images to (H, W) maps in [0, 1] at their sizes.
MapsFn = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class CensorInfo:
    """What happened to one image.

    Attributes:
        status: ``clean`` (below the threshold, unchanged), ``censored`` (regions censored,
            verified below the threshold) or ``unresolved`` (censored whole).
        score_before: Sensitive score of the input.
        score_after: Score of the output as decoded (equal to ``score_before`` when clean).
        regions: Number of regions censored (0 when clean or unresolved).
        censored_fraction: Share of the image's pixels censored.
        rounds: Censor-and-verify rounds used (0 when clean).
        mask: (H, W) bool, the censored pixels (None when clean).
    """

    status: str
    score_before: float
    score_after: float
    regions: int = 0
    censored_fraction: float = 0.0
    rounds: int = 0
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


def make_explainer(bundle: Any, config: MosaicConfig) -> MapsFn:
    """The one :class:`cam.Explainer` a run reuses for every batch.

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> ex = make_explainer(bundle_from_model(tiny_model(), ["normal", "sensitive"]),
        ...                     MosaicConfig(method="gradcam"))
        >>> ex([dummy_image()])[0].shape
        (8, 8)
    """
    from cam import Explainer

    return Explainer(bundle, config.cam_method, batch_size=max(1, config.batch_size))


class LazyExplainer:
    """Builds the run's :class:`cam.Explainer` on first use (a run with nothing flagged builds none).

    Example:
        >>> LazyExplainer(None, MosaicConfig())._explainer is None
        True
    """

    def __init__(self, bundle: Any, config: MosaicConfig) -> None:
        self.bundle, self.config = bundle, config
        self._explainer: MapsFn | None = None

    def get(self) -> MapsFn:
        """The explainer, built once."""
        if self._explainer is None:
            self._explainer = make_explainer(self.bundle, self.config)
        return self._explainer

    def __call__(self, images: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        return self.get()(images)


def _style_params(config: MosaicConfig) -> StyleParams:
    return StyleParams(block=config.block, strength=config.strength, color=parse_color(config.color),
                       seed=config.seed)


def round_settings(config: MosaicConfig, round_index: int, size: tuple[int, int]) -> tuple[float, int]:
    """(CAM region threshold, dilation in pixels) of escalation round ``round_index`` (0-based).

    Example:
        >>> round_settings(MosaicConfig(region_threshold=0.5, dilate=4), 0, (64, 64))
        (0.5, 4)
        >>> round_settings(MosaicConfig(region_threshold=0.5, dilate=4), 2, (64, 64))
        (0.245, 14)
    """
    base = config.base_dilate(*size)
    thr = round(config.region_threshold * THRESHOLD_DECAY ** round_index, 6)
    return thr, base * (1 + round_index) + round_index


def region_pixels(cam_map: np.ndarray, size: tuple[int, int], threshold: float, dilate: int,
                  config: MosaicConfig) -> tuple[np.ndarray, int]:
    """(censored-pixel mask at ``size``, number of regions) for one map and round's settings.

    Large images are handled at a working resolution of at most :data:`WORK_SIDE` pixels, so the
    cost does not grow with the photo's megapixels.

    Example:
        >>> m = np.zeros((1000, 2000), np.float32); m[100:300, 200:600] = 1.0
        >>> mask, n = region_pixels(m, (1000, 2000), 0.5, 0, MosaicConfig(shape="box"))
        >>> n, mask.shape, abs(int(mask.sum()) - 80000) < 100
        (1, (1000, 2000), True)
    """
    import cv2

    from cam import regions

    from hardenkit.imageio import resize

    h, w = size
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale < 1.0:
        wh, ww = max(1, round(h * scale)), max(1, round(w * scale))
        small = resize(np.asarray(cam_map, np.float32), (wh, ww))
        regs = regions(small, threshold=threshold, dilate=int(round(dilate * scale)),
                       min_area=max(1, int(config.min_area * scale * scale)))
        low = region_mask((wh, ww), regs, config.shape)
        return cv2.resize(low.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0, len(regs)
    m = cam_map if cam_map.shape == (h, w) else resize(np.asarray(cam_map, np.float32), (h, w))
    regs = regions(m, threshold=threshold, dilate=dilate, min_area=config.min_area)
    return region_mask((h, w), regs, config.shape), len(regs)


def as_decoded(image: np.ndarray, suffix: str = ".png", quality: int = 95) -> np.ndarray:
    """The image as a reader of the written file would see it.

    Lossless formats: 8-bit quantisation in memory. ``.jpg``/``.webp``: an encode/decode
    round trip through :mod:`hardenkit.imageio` (a temporary file).

    Example:
        >>> round(float(as_decoded(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0]), 4)
        0.502
    """
    from hardenkit.imageio import read_image, to_uint8, write_image

    if suffix.lower() in (".jpg", ".jpeg", ".webp"):
        fd, tmp = tempfile.mkstemp(suffix=suffix.lower())
        os.close(fd)
        try:
            write_image(tmp, image, quality=quality)
            return read_image(tmp)
        finally:
            os.unlink(tmp)
    return to_uint8(image).astype(np.float32) / np.float32(255.0)


def _maps(explainer: MapsFn, bundle: Any, images: Sequence[np.ndarray], prepared: np.ndarray | None) -> list[np.ndarray]:
    """CAM maps (any resolution, resized where used); reuses the resized batch for a cam.Explainer."""
    from cam.explainer import Explainer

    if prepared is None or not isinstance(explainer, Explainer):
        return [np.asarray(m, np.float32) for m in explainer(list(images))]
    return [np.asarray(m, np.float32) for m in explainer.explain_prepared(prepared)]  # resized per use


def censor_batch(
    bundle: Any,
    images: Sequence[np.ndarray],
    config: MosaicConfig,
    explainer: MapsFn | None = None,
    suffixes: Sequence[str] | None = None,
) -> list[tuple[np.ndarray | None, CensorInfo]]:
    """Censor a batch: one scoring pass, one CAM pass, one verification pass per round.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle` (anything with ``prepare`` and
            ``sensitive_score``).
        images: RGB float32 images in [0, 1], any sizes.
        config: The run's :class:`MosaicConfig`.
        explainer: Maps images to CAM maps; defaults to :func:`make_explainer` (build it once
            and pass it in when calling repeatedly).
        suffixes: Output file endings, for ``verify_encoded``. Defaults to ``.png`` for all.

    Returns:
        Per image, (censored image or None when clean, :class:`CensorInfo`).

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
        >>> out = censor_batch(b, [dummy_image()], MosaicConfig(threshold=1.0))
        >>> out[0][0] is None, out[0][1].status
        (True, 'clean')
    """
    n = len(images)
    if n == 0:
        return []
    sfx = list(suffixes) if suffixes is not None else [".png"] * n
    prepared = bundle.prepare(images)
    before = np.asarray(bundle.sensitive_score(prepared), np.float64)
    results: list[tuple[np.ndarray | None, CensorInfo]] = [
        (None, CensorInfo("clean", float(s), float(s))) for s in before]
    flagged = [i for i in range(n) if before[i] >= config.threshold]
    if not flagged:
        return results
    if explainer is None:
        explainer = make_explainer(bundle, config)
    if isinstance(explainer, LazyExplainer):
        explainer = explainer.get()
    maps = dict(zip(flagged, _maps(explainer, bundle, [images[i] for i in flagged], prepared[flagged])))
    params = _style_params(config)
    masks = {i: np.zeros(images[i].shape[:2], bool) for i in flagged}
    remaps: dict[int, np.ndarray] = {}
    pending = list(flagged)
    rounds = max_steps(config.max_rounds)
    target = config.clean_below
    for r in range(rounds):
        if not pending:
            break
        cands, counts = {}, {}
        for i in pending:
            size = images[i].shape[:2]
            thr, dil = round_settings(config, r, size)
            grown, counts[i] = region_pixels(maps[i], size, thr, dil, config)
            masks[i] |= grown  # grows monotonically round by round
            if i in remaps:  # what still drives the score once the first regions are hidden
                more, n_more = region_pixels(remaps[i], size, *round_settings(config, 0, size), config)
                masks[i] |= more
                counts[i] += n_more
            cands[i] = censor(images[i], masks[i], config.style, "mask", params)
        after = bundle.sensitive_score([as_decoded(cands[i], sfx[i], config.quality) for i in pending])
        still = []
        for i, s in zip(pending, np.asarray(after, np.float64)):
            if s < target and masks[i].any():
                results[i] = (cands[i], CensorInfo("censored", float(before[i]), float(s), counts[i],
                                                   float(masks[i].mean()), r + 1, masks[i]))
            else:
                still.append(i)
        pending = still
        if config.reexplain and pending and r + 1 < rounds:
            remaps = dict(zip(pending, _maps(explainer, bundle, [cands[i] for i in pending], None)))
    if pending:
        whole = {i: censor(images[i], np.ones(images[i].shape[:2], bool), config.style, "mask", params)
                 for i in pending}
        after = bundle.sensitive_score([as_decoded(whole[i], sfx[i], config.quality) for i in pending])
        for i, s in zip(pending, np.asarray(after, np.float64)):
            results[i] = (whole[i], CensorInfo("unresolved", float(before[i]), float(s), 0, 1.0, rounds,
                                               np.ones(images[i].shape[:2], bool)))
    return results


def censor_image(bundle: Any, image: np.ndarray, config: MosaicConfig | None = None,
                 explainer: MapsFn | None = None) -> tuple[np.ndarray, CensorInfo]:
    """Censor one image if the model flags it; verify and escalate as :func:`censor_batch`.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        image: (H, W, 3) RGB float32 in [0, 1].
        config: Defaults to :class:`MosaicConfig` ().
        explainer: Reusable CAM maps function; defaults to a new :class:`cam.Explainer`.

    Returns:
        (output image, :class:`CensorInfo`); the output is the input itself when clean.

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
        >>> img, info = censor_image(b, dummy_image(), MosaicConfig(threshold=0.0, method="gradcam"))
        >>> info.status in ("censored", "unresolved"), img.shape
        (True, (8, 8, 3))
    """
    out, info = censor_batch(bundle, [image], config or MosaicConfig(), explainer)[0]
    return (image if out is None else out), info
