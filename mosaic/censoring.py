"""Score, explain, censor, verify and escalate: the per-image core of mosaic.

An image whose sensitive score reaches the threshold gets its CAM regions censored at full
resolution. The censored image is scored again *as it would be decoded* (quantised to 8 bits;
a JPEG/WebP output is encoded once, in memory, and those bytes are scored and then written, see
:func:`verify_scores`); while it is still flagged the regions grow
(lower region threshold, more dilation) for up to ``max_rounds`` rounds, after which the
whole image is censored (in the style; in one flat colour if the model still flags that) and
marked ``unresolved``. Work is done in batches: one forward pass
and one CAM pass per batch, one forward pass per escalation round. Big images (long side over
:data:`PROXY_SIDE`) are tried at the working resolution first each round, so only a round likely
to pass is rendered and verified at full size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hardenkit.testkit import max_steps

from .config import MosaicConfig, parse_color
from .styles import Part, StyleParams, _censor_parts, censor, components_with_stats, region_mask

#: Per escalation round the CAM region threshold is multiplied by this.
THRESHOLD_DECAY = 0.7

#: Regions are found on the CAM map resized to at most this many pixels on the long side (the map
#: is upsampled from the model's feature map anyway); the mask is then scaled back up.
WORK_SIDE = 512

#: Verification decodes a JPEG output at reduced size (libjpeg DCT scaling) while its short
#: side stays at least this many pixels: the model sees the image resized to its input anyway.
VERIFY_SIDE = 256

#: A reduced-size verification score this close to the target (or above it) is re-checked on the
#: full decode, so "clean" is always decided as a reader of the file would decode it.
VERIFY_GUARD = 0.05

#: Images whose long side exceeds this are, each escalation round, first censored and scored as
#: a copy at the working resolution (:data:`WORK_SIDE`); a round whose copy still scores at least
#: :data:`VERIFY_GUARD` above the target escalates without rendering, encoding and verifying the
#: full-size image (a second of work per round on a 13-megapixel photo). Every accepted output is
#: still verified at full size.
PROXY_SIDE = 2 * WORK_SIDE

#: An explainer maps a list of RGB [0, 1] images to (H, W) maps in [0, 1] at their sizes.
MapsFn = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class CensorInfo:
    """What happened to one image.

    Attributes:
        status: ``clean`` (below the threshold, unchanged), ``censored`` (regions censored,
            verified below the threshold), ``unresolved`` (censored whole) or ``failed``.
        score_before: Sensitive score of the input.
        score_after: Score of the output as decoded (equal to ``score_before`` when clean).
        regions: Number of regions censored (0 when clean or unresolved).
        censored_fraction: Share of the image's pixels censored.
        rounds: Censor-and-verify rounds used (0 when clean).
        mask: (H, W) bool, the censored pixels (None when clean).
        error: Why the image could not be handled (status ``failed``, only when the full-size
            image could not be loaded), else "".
        encoded: The output file's bytes exactly as verified (JPEG/WebP outputs), else None;
            writing them instead of re-encoding saves an encode and writes what was scored.
    """

    status: str
    score_before: float
    score_after: float
    regions: int = 0
    censored_fraction: float = 0.0
    rounds: int = 0
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    error: str = ""
    encoded: bytes | None = field(default=None, compare=False, repr=False)


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

    layer = config.layer
    if layer is None and config.method is None:
        layer = fine_layer(bundle.prob_model)
    return Explainer(bundle, config.cam_method, layer=layer, batch_size=max(1, config.batch_size))


def fine_layer(model: Any) -> str | None:
    """The layer mosaic's default CAM reads: the last 4-D layer with at least twice the spatial
    resolution of the model's last 4-D layer (the activations just before its last
    downsampling), searched inside nested models too. Its map follows object outlines more
    closely than the last layer's. None (use the last layer) when there is no such layer.

    Example:
        >>> from hardenkit.testkit import tiny_model
        >>> fine_layer(tiny_model()) is None  # one resolution only: the last layer is used
        True
    """
    from cam._graph import _is_model, _output_rank, _walk

    spatial = [layer for layer in _walk(model) if not _is_model(layer) and _output_rank(layer) == 4]
    if not spatial:
        return None

    def hw(layer: Any) -> tuple[int, int] | None:
        shape = tuple(layer.output.shape)[1:3]
        return None if None in shape else (int(shape[0]), int(shape[1]))

    last = hw(spatial[-1])
    if last is None:
        return None
    for layer in reversed(spatial[:-1]):
        size = hw(layer)
        if size is not None and size[0] >= 2 * last[0] and size[1] >= 2 * last[1]:
            return str(layer.name)
    return None


class LazyExplainer:
    """Builds the run's :class:`cam.Explainer` on first use (a run with nothing flagged builds none).

    Example:
        >>> LazyExplainer(None, MosaicConfig())._explainer is None
        True
    """

    def __init__(self, bundle: Any, config: MosaicConfig) -> None:
        import threading

        self.bundle, self.config = bundle, config
        self._explainer: MapsFn | None = None
        self._lock = threading.Lock()  # batches in several lanes may ask at once

    def get(self) -> MapsFn:
        """The explainer, built once (thread-safe)."""
        with self._lock:
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

    low, n = _working_regions(cam_map, size, threshold, dilate, config)
    if low.shape == tuple(size):
        return low, n
    return cv2.resize(low.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0, n


def _work_size(size: tuple[int, int]) -> tuple[int, int]:
    """The working resolution of an image of ``size``: long side at most :data:`WORK_SIDE`."""
    h, w = size
    scale = min(1.0, WORK_SIDE / max(h, w))
    return (h, w) if scale >= 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))


def _working_regions(cam_map: np.ndarray, size: tuple[int, int], threshold: float, dilate: int,
                     config: MosaicConfig) -> tuple[np.ndarray, int]:
    """:func:`region_pixels` before the upscale: (mask at :func:`_work_size` of ``size``, regions)."""
    from hardenkit.imageio import resize

    h, w = size
    wh, ww = _work_size(size)
    if (wh, ww) != (h, w):
        scale = min(1.0, WORK_SIDE / max(h, w))
        small = resize(np.asarray(cam_map, np.float32), (wh, ww))
        return _shaped_regions(small, threshold, int(round(dilate * scale)),
                               max(1, int(config.min_area * scale * scale)), config.shape)
    m = cam_map if cam_map.shape == (h, w) else resize(np.asarray(cam_map, np.float32), (h, w))
    return _shaped_regions(m, threshold, dilate, config.min_area, config.shape)


def _nearest_index(n_low: int, n_full: int) -> np.ndarray:
    """Per full-size row (or column), the working-resolution one ``cv2.resize`` INTER_NEAREST
    copies into it (asked of OpenCV itself, so it is its mapping exactly)."""
    import cv2

    line = np.arange(n_low, dtype=np.int32)[None, :]
    return np.asarray(cv2.resize(line, (n_full, 1), interpolation=cv2.INTER_NEAREST))[0]


def _full_parts(low: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[Part]]:
    """(the working-resolution mask ``low`` upscaled to ``size`` as :func:`region_pixels` does, its
    connected components as :func:`mosaic.styles._censor_parts` takes them).

    Nearest-neighbour upscaling maps connected components one to one (every working pixel becomes
    a block of at least one pixel; touching blocks come only from touching pixels), so the labels
    are found at the working resolution and upscaled, instead of labelling the full-size mask
    again (85 ms vs 10 ms on a 12-megapixel mask). Components are ordered by full-size area, as
    :func:`mosaic.censor` orders them.
    """
    import cv2

    from .styles import components_with_stats

    h, w = size
    n, labels, stats, _ = components_with_stats(np.asarray(low, np.uint8))
    if n <= 1:
        return np.zeros((h, w), bool), []
    areas: np.ndarray
    if low.shape == (h, w):
        full_labels, areas = labels, stats[:, cv2.CC_STAT_AREA]
        boxes = [(int(x), int(y), int(x + bw), int(y + bh)) for x, y, bw, bh in stats[:, :4].tolist()]
    else:
        # the narrowest label type: the full-size copy is the costly part (13 MB, not 52, for a
        # 13-megapixel photo with fewer than 256 regions)
        dtype: type[np.integer[Any]] = np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.int32
        narrow: np.ndarray = labels.astype(dtype)
        full_labels = np.asarray(cv2.resize(narrow, (w, h), interpolation=cv2.INTER_NEAREST))
        ys, xs = _nearest_index(low.shape[0], h), _nearest_index(low.shape[1], w)
        rows, cols = np.bincount(ys, minlength=low.shape[0]), np.bincount(xs, minlength=low.shape[1])
        areas = np.bincount(labels.ravel(), weights=np.outer(rows, cols).ravel(), minlength=n)
        boxes = []
        for x, y, bw, bh in stats[:, :4].tolist():  # the full-size rows/columns copying the box's
            boxes.append((int(np.searchsorted(xs, x)), int(np.searchsorted(ys, y)),
                          int(np.searchsorted(xs, x + bw)), int(np.searchsorted(ys, y + bh))))
    if n == 2 and full_labels.dtype == np.uint8:
        # one region: its labels are 0/1 bytes, i.e. the mask itself; no full-size comparisons
        whole = full_labels.view(bool)
        x0, y0, x1, y1 = boxes[1]
        return whole, [(boxes[1], whole[y0:y1, x0:x1])]
    order = sorted(range(1, n), key=lambda i: -areas[i])
    parts: list[Part] = []
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        parts.append((boxes[i], full_labels[y0:y1, x0:x1] == i))
    return full_labels > 0, parts


def _shaped_regions(m: np.ndarray, threshold: float, dilate: int, min_area: int,
                    shape: str) -> tuple[np.ndarray, int]:
    """:func:`cam.regions` then :func:`region_mask`; for ``mask`` the same pixels in one labelling
    pass, without a per-region image-sized mask."""
    import cv2

    from cam import hot_mask, regions

    if shape != "mask":
        regs = regions(m, threshold=threshold, dilate=dilate, min_area=min_area)
        return region_mask(m.shape, regs, shape), len(regs)
    binary = hot_mask(np.asarray(m, np.float32), threshold, dilate).astype(np.uint8)
    n, labels, stats, _ = components_with_stats(binary)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels], int(keep.sum())


def _maps(explainer: MapsFn, bundle: Any, images: Callable[[], Sequence[np.ndarray]],
          prepared: np.ndarray | None) -> list[np.ndarray]:
    """CAM maps (any resolution, resized where used); reuses the resized batch for a cam.Explainer
    (``images`` is then never called, so the images need not be built)."""
    from cam.explainer import Explainer

    if prepared is None or not isinstance(explainer, Explainer):
        return [np.asarray(m, np.float32) for m in explainer(list(images()))]
    return [np.asarray(m, np.float32) for m in explainer.explain_prepared(prepared)]  # resized per use


def sensitive_scores(bundle: Any, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """``bundle.sensitive_score(images)`` through the model's forward pass compiled once
    (:func:`cam._tfkv.fast_model`, shared with the explainer): a Keras eager call costs tens of
    milliseconds of Python per batch, which dominates on small models. Objects that are not a
    :class:`hardenkit.modelio.ModelBundle` are asked directly.

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
        >>> bool(abs(sensitive_scores(b, [dummy_image()])[0] - b.sensitive_score([dummy_image()])[0]) < 1e-5)
        True
    """
    from hardenkit.modelio import ModelBundle

    if not isinstance(bundle, ModelBundle):
        return np.asarray(bundle.sensitive_score(images), np.float64)
    from cam._tfkv import fast_model

    fast = fast_model(bundle.prob_model, False)
    x = bundle.prepare(images) if len(images) else np.zeros((0, *bundle.image_size, 3), np.float32)
    probs = fast.predict(x, batch_size=64)
    return np.asarray(probs, np.float64)[:, list(bundle.sensitive_indices)].sum(axis=1)


def _as_float(image: np.ndarray) -> np.ndarray:
    from hardenkit.imageio import pixels_to_float

    return pixels_to_float(image) if image.dtype == np.uint8 else image


def _resolve(handle: Any) -> np.ndarray | Exception:
    """An image from a :func:`censor_batch` ``full`` loader: an array, a Future of one, or an error."""
    try:
        value = handle.result() if hasattr(handle, "result") else handle
    except Exception as e:  # noqa: BLE001 - one image's failure is reported, the batch goes on
        return e
    if isinstance(value, Exception):
        return value
    value = np.asarray(value)
    return value if value.dtype == np.uint8 else value.astype(np.float32, copy=False)


def _verified(image: np.ndarray, suffix: str, quality: int, min_side: int,
              out_size: tuple[int, int] | None = None) -> tuple[np.ndarray, bytes | None]:
    """(the output as a reader decodes it, reduced to a short side of ``min_side`` where larger, or
    with ``out_size`` (a model's input size) resized straight to that; its encoded bytes for
    JPEG/WebP, else None)."""
    from hardenkit.imageio import decode_image, encode_image, preview_pixels, to_uint8

    if suffix.lower() in (".jpg", ".jpeg", ".webp"):
        data = encode_image(image, suffix.lower(), quality)
        return decode_image(data, min_side=min_side, out_size=out_size), data
    # lossless: the 8-bit pixels, shrunk in 8 bits where larger
    return preview_pixels(to_uint8(image), min_side, out_size), None


def model_input_size(bundle: Any) -> tuple[int, int] | None:
    """A :class:`hardenkit.modelio.ModelBundle`'s input (height, width), else None: previews and
    verification decodes are resized straight to it (``bundle.prepare`` then has nothing to do).

    Example:
        >>> model_input_size(object()) is None
        True
    """
    from hardenkit.modelio import ModelBundle

    return tuple(bundle.image_size) if isinstance(bundle, ModelBundle) else None  # type: ignore[return-value]


def verify_scores(bundle: Any, outputs: Sequence[np.ndarray], suffixes: Sequence[str], quality: int,
                  target: float, pool: Any = None) -> tuple[np.ndarray, list[bytes | None]]:
    """Scores of outputs as a reader of the written files would decode them, and their bytes.

    JPEG/WebP outputs are encoded once in memory; the score comes from a reduced-size decode
    (short side >= :data:`VERIFY_SIDE`) unless it lies within :data:`VERIFY_GUARD` of ``target``
    or above, where the full decode decides. Lossless outputs are quantised to 8 bits and
    scored the same way: reduced (area) first, at full size when near or above ``target``.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        outputs: RGB float32 images in [0, 1] (or uint8).
        suffixes: Their file endings.
        quality: JPEG/WebP quality.
        target: The score an output must fall below to be clean.
        pool: An executor to encode/decode in (None: in this thread).

    Returns:
        (scores, per output the encoded bytes or None).

    Example:
        >>> from hardenkit.modelio import bundle_from_model
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> b = bundle_from_model(tiny_model(), ["normal", "sensitive"])
        >>> sc, enc = verify_scores(b, [dummy_image()], [".jpg"], 95, 0.5)
        >>> sc.shape, enc[0][:2]
        ((1,), b'\xff\xd8')
    """
    side, size = _verify_side(bundle), model_input_size(bundle)
    jobs = list(zip(outputs, suffixes))
    if pool is not None and len(jobs) > 1:
        done = list(pool.map(lambda a: _verified(a[0], a[1], quality, side, size), jobs))
    else:
        done = [_verified(im, sfx, quality, side, size) for im, sfx in jobs]
    scores, encoded, _ = _verified_scores(bundle, outputs, done, target)
    return scores, encoded


def _verify_side(bundle: Any) -> int:
    return max(VERIFY_SIDE, *getattr(bundle, "image_size", (0, 0)))


def _verified_scores(bundle: Any, outputs: Sequence[np.ndarray], done: Sequence[tuple[np.ndarray, bytes | None]],
                     target: float) -> tuple[np.ndarray, list[bytes | None], np.ndarray | None]:
    """(scores, encoded bytes, the model-input batch of the reduced decodes for re-explaining, or
    None for a bundle that is not a :class:`hardenkit.modelio.ModelBundle`)."""
    from hardenkit.imageio import decode_image, pixels_to_float, to_uint8

    decoded = [d for d, _ in done]
    prepared = _model_inputs(bundle, decoded)
    scores = sensitive_scores(bundle, decoded if prepared is None else prepared).copy()
    close = [k for k, (d, data) in enumerate(done)
             if d.shape[:2] != outputs[k].shape[:2] and scores[k] >= target - VERIFY_GUARD]
    if close:  # the full decode (JPEG/WebP) or the full 8-bit pixels (lossless) decide
        full = []
        for k in close:
            data = done[k][1]
            full.append(pixels_to_float(to_uint8(outputs[k])) if data is None else decode_image(data))
        scores[close] = sensitive_scores(bundle, full)
    return scores, [data for _, data in done], prepared


def _model_inputs(bundle: Any, images: Sequence[np.ndarray]) -> np.ndarray | None:
    """``bundle.prepare(images)`` for a :class:`hardenkit.modelio.ModelBundle` (None otherwise, or
    when there are no images): the batch is scored, and re-explained if still flagged."""
    from hardenkit.modelio import ModelBundle

    return bundle.prepare(images) if isinstance(bundle, ModelBundle) and len(images) else None


def _later(image: np.ndarray) -> Callable[[], np.ndarray]:
    """The image as float32, computed only when called (a cam.Explainer never needs it)."""
    return lambda: _as_float(image)


def _proxy(image: np.ndarray) -> np.ndarray:
    """The image area-shrunk to the working resolution (long side :data:`WORK_SIDE`), float32."""
    import cv2

    h, w = _work_size(image.shape[:2])
    return _as_float(np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)))


def _mask_at(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-size mask at a working ``size``: a pixel is censored if any pixel it covers is, so the
    trial hides at least what the full-size output hides (16 bits: one covered pixel in a cell of
    up to 130,000 still averages above 0)."""
    import cv2

    m = np.asarray(mask, bool).astype(np.uint16) * np.uint16(65535)
    return cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_AREA) > 0


def censor_batch(
    bundle: Any,
    images: Sequence[np.ndarray],
    config: MosaicConfig,
    explainer: MapsFn | None = None,
    suffixes: Sequence[str] | None = None,
    full: Callable[[int], Any] | None = None,
) -> list[tuple[np.ndarray | None, CensorInfo]]:
    """Censor a batch: one scoring pass, one CAM pass, one verification pass per round.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle` (anything with ``prepare`` and
            ``sensitive_score``).
        images: RGB float32 images in [0, 1], any sizes; with ``full``, possibly reduced-size
            previews of the images to censor.
        config: The run's :class:`MosaicConfig`.
        explainer: Maps images to CAM maps; defaults to :func:`make_explainer` (build it once
            and pass it in when calling repeatedly).
        suffixes: Output file endings: JPEG/WebP outputs are verified after an encode/decode
            round trip (see :func:`verify_scores`). Defaults to ``.png`` for all.
        full: ``full(i)`` gives image i at full size (an array, a Future of one, or an
            exception, which makes the image ``failed``; a uint8 array is censored in 8 bits,
            see :func:`mosaic.censor`). Called right after scoring, before the CAM pass (so a
            Future's decode overlaps it), for each image scoring within :data:`VERIFY_GUARD` of
            the threshold or above; those within the guard band are re-scored at full size, so
            a preview never decides a borderline image. None: ``images`` are full size.

    Returns:
        Per image, (censored image or None when clean, :class:`CensorInfo`); the image is
        float32, or uint8 where ``full`` gave uint8 pixels.

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
    before = sensitive_scores(bundle, prepared).copy()
    results: list[tuple[np.ndarray | None, CensorInfo]] = [
        (None, CensorInfo("clean", float(s), float(s))) for s in before]
    handles = ({i: full(i) for i in range(n) if before[i] >= config.threshold - VERIFY_GUARD}
               if full is not None else {})
    candidates = sorted(handles) if full is not None else [i for i in range(n) if before[i] >= config.threshold]
    if not candidates:
        return results
    if explainer is None:
        explainer = make_explainer(bundle, config)
    if isinstance(explainer, LazyExplainer):
        explainer = explainer.get()
    maps = dict(zip(candidates, _maps(explainer, bundle, lambda: [images[i] for i in candidates],
                                      prepared[candidates])))
    full_images: dict[int, np.ndarray] = {}
    for i, h in handles.items():
        value = _resolve(h)
        if isinstance(value, Exception):
            reason = getattr(value, "reason", None) or str(value)
            results[i] = (None, CensorInfo("failed", float(before[i]), float(before[i]), error=reason))
        else:
            full_images[i] = value if h is not images[i] else images[i]
    keys = [i for i in sorted(full_images)
            if full_images[i] is not images[i] and before[i] < config.threshold + VERIFY_GUARD]
    if keys:  # a preview score this close to the threshold: the full-size image decides
        rescored = sensitive_scores(bundle, [_as_float(full_images[i]) for i in keys])
        for i, s in zip(keys, rescored):
            before[i] = s
            results[i] = (None, CensorInfo("clean", float(s), float(s)))
    flagged = [i for i in candidates if before[i] >= config.threshold and results[i][1].status != "failed"]
    if not flagged:
        return results
    imgs = {i: full_images.get(i, images[i]) for i in flagged}
    params = _style_params(config)
    # The censored pixels are kept at the working resolution (they are found there) and
    # upscaled once per round, with their components (see _full_parts).
    lows = {i: np.zeros(_work_size(imgs[i].shape[:2]), bool) for i in flagged}
    masks = {i: np.zeros(imgs[i].shape[:2], bool) for i in flagged}
    parts: dict[int, list[Part]] = {}
    remaps: dict[int, np.ndarray] = {}
    pending = list(flagged)
    rounds = max_steps(config.max_rounds)
    target = config.clean_below
    side, in_size = _verify_side(bundle), model_input_size(bundle)
    proxies: dict[int, np.ndarray] = {}
    for r in range(rounds):
        if not pending:
            break
        cands, counts = {}, {}
        for i in pending:
            size = imgs[i].shape[:2]
            thr, dil = round_settings(config, r, size)
            grown, counts[i] = _working_regions(maps[i], size, thr, dil, config)
            lows[i] |= grown  # grows monotonically round by round
            if i in remaps:  # what still drives the score once the first regions are hidden
                more, n_more = _working_regions(remaps[i], size, *round_settings(config, 0, size), config)
                lows[i] |= more
                counts[i] += n_more
            masks[i], parts[i] = _full_parts(lows[i], size)
        # per image still flagged: (its censored image to re-explain, its model-input row or None)
        again: dict[int, tuple[Callable[[], np.ndarray], np.ndarray | None]] = {}
        big = [i for i in pending if max(imgs[i].shape[:2]) > PROXY_SIDE and masks[i].any()]
        if big:
            for i in big:
                proxies.setdefault(i, _proxy(imgs[i]))
            trials = [censor(proxies[i], _mask_at(masks[i], proxies[i].shape[:2]), config.style, "mask", params)
                      for i in big]
            trial_rows = _model_inputs(bundle, trials)
            trial_scores = sensitive_scores(bundle, trials if trial_rows is None else trial_rows)
            for k, (i, s) in enumerate(zip(big, trial_scores)):
                if s >= target + VERIFY_GUARD:  # clearly still flagged: escalate, no full-size render
                    again[i] = (_later(trials[k]), None if trial_rows is None else trial_rows[k])
        render = [i for i in pending if i not in again]
        for i in render:
            cands[i] = _censor_parts(imgs[i], parts[i], config.style, "mask", params)
        # In this thread: handing the encodes to the decode/write pool measured no faster on 2
        # cores, and much slower at times (OpenCV's own threads then compete with the pool's).
        done = [_verified(cands[i], sfx[i], config.quality, side, in_size) for i in render]
        after, enc, checked = _verified_scores(bundle, [cands[i] for i in render], done, target)
        for k, (i, s, data) in enumerate(zip(render, after, enc)):
            if s < target and masks[i].any():
                results[i] = (cands[i], CensorInfo("censored", float(before[i]), float(s), counts[i],
                                                   float(masks[i].mean()), r + 1, masks[i], encoded=data))
            else:
                again[i] = (_later(cands[i]), None if checked is None else checked[k])
        pending = [i for i in pending if i in again]
        if config.reexplain and pending and r + 1 < rounds:
            # A cam.Explainer reads the model-input batch verification just scored (the outputs as
            # decoded, or the working-resolution trials): no second resize of full-size candidates.
            rows = [again[i][1] for i in pending]
            known = [x for x in rows if x is not None]
            remaps = dict(zip(pending, _maps(explainer, bundle, lambda: [again[i][0]() for i in pending],
                                             np.stack(known) if len(known) == len(rows) else None)))
    if pending:
        whole = {i: censor(imgs[i], np.ones(imgs[i].shape[:2], bool), config.style, "mask", params)
                 for i in pending}
        after, enc = verify_scores(bundle, [whole[i] for i in pending], [sfx[i] for i in pending],
                                   config.quality, target)
        # The last resort must not leak: a whole image the style leaves flagged (a pixelated
        # scene the model still recognises) is filled with the solid colour (--color) instead.
        flat = [k for k, s in enumerate(after) if s >= target and config.style != "solid"]
        if flat:
            for k in flat:
                i = pending[k]
                whole[i] = censor(imgs[i], np.ones(imgs[i].shape[:2], bool), "solid", "mask", params)
            s2, e2 = verify_scores(bundle, [whole[pending[k]] for k in flat], [sfx[pending[k]] for k in flat],
                                   config.quality, target)
            for k, s, data in zip(flat, s2, e2):
                after[k], enc[k] = s, data
        for i, s, data in zip(pending, after, enc):
            results[i] = (whole[i], CensorInfo("unresolved", float(before[i]), float(s), 0, 1.0, rounds,
                                               np.ones(imgs[i].shape[:2], bool), encoded=data))
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
