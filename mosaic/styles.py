"""Censoring styles and :func:`censor`, which applies one to regions of an image.

Each style turns the crop under one region into its censored version; :func:`censor` then
copies back only the region's pixels, so nothing outside the regions ever changes. Strengths
scale with each region's size, so a censored area stays unreadable at any resolution.
``STYLES`` maps the CLI name to the function; ``mosaic blur --style`` offers exactly its keys.

Example:
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    >>> m = np.zeros((32, 32), bool); m[4:20, 8:24] = True
    >>> out = censor(img, m, style="solid")
    >>> bool((out[~m] == img[~m]).all()), float(out[m].max())
    (True, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from cam import Region


@dataclass(frozen=True)
class StyleParams:
    """Knobs shared by the styles.

    Attributes:
        block: Pixelate block size, or None to scale with the region (``max(4, short / 6)``).
        strength: Multiplier of the blur sigma (``short / 8``) and of the noise amplitude.
        color: Solid RGB in [0, 1], or None for the region's mean colour.
        seed: Seed of the noise style.
    """

    block: int | None = None
    strength: float = 1.0
    color: tuple[float, float, float] | None = (0.0, 0.0, 0.0)
    seed: int = 0


StyleFn = Callable[[np.ndarray, np.ndarray, StyleParams, np.random.Generator], np.ndarray]

#: One region to censor: its box (x0, y0, x1, y1) and its pixels inside the box (or image-sized).
Part = tuple[tuple[int, int, int, int], np.ndarray]


def _short(crop: np.ndarray) -> int:
    return int(min(crop.shape[0], crop.shape[1]))


def pixelate(crop: np.ndarray, mask: np.ndarray, params: StyleParams, rng: np.random.Generator) -> np.ndarray:
    """Big square blocks of the mean colour; block = ``max(4, short side / 6)`` unless fixed.

    Example:
        >>> c = np.random.default_rng(0).random((12, 12, 3)).astype(np.float32)
        >>> len(np.unique(pixelate(c, np.ones((12, 12), bool), StyleParams(block=12), None)[..., 0]))
        1
    """
    return _blow_up(_pixel_grid(crop, params), crop.shape)


def _pixel_grid(crop: np.ndarray, params: StyleParams) -> np.ndarray:
    """The pixelate blocks' mean colours: ``crop`` (float or uint8) area-shrunk to one pixel per block."""
    import cv2

    h, w = crop.shape[:2]
    b = params.block or max(4, int(round(_short(crop) / 6)))
    return np.asarray(cv2.resize(crop, (max(1, -(-w // b)), max(1, -(-h // b))), interpolation=cv2.INTER_AREA))


def _blow_up(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Each grid cell repeated over its block (nearest neighbour): the pixelated crop of ``shape``."""
    import cv2

    return np.asarray(cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)).reshape(shape)


def gaussian(crop: np.ndarray, mask: np.ndarray, params: StyleParams, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma = ``strength x max(2, short side / 8)``.

    Large sigmas blur a downscaled copy (same look, cost independent of the sigma).

    Example:
        >>> c = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
        >>> float(gaussian(c, np.ones((16, 16), bool), StyleParams(), None).std()) < float(c.std())
        True
    """
    import cv2

    h, w = crop.shape[:2]
    sigma = params.strength * max(2.0, _short(crop) / 8.0)
    factor = max(1.0, sigma / 4.0)
    if factor > 1.0:
        sw, sh = max(1, int(round(w / factor))), max(1, int(round(h / factor)))
        small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.GaussianBlur(crop, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out, np.float32).reshape(crop.shape)


def noise(crop: np.ndarray, mask: np.ndarray, params: StyleParams, rng: np.random.Generator) -> np.ndarray:
    """The region's mean colour plus strong Gaussian noise (sigma ``0.25 x strength``), seeded.

    Example:
        >>> c = np.zeros((8, 8, 3), np.float32)
        >>> float(noise(c, np.ones((8, 8), bool), StyleParams(), np.random.default_rng(0)).std()) > 0.1
        True
    """
    mean = crop[mask].mean(axis=0) if mask.any() else crop.reshape(-1, crop.shape[-1]).mean(axis=0)
    z = rng.normal(0.0, 0.25 * params.strength, crop.shape).astype(np.float32)
    return np.clip(mean[None, None, :] + z, 0.0, 1.0).astype(np.float32)


def solid(crop: np.ndarray, mask: np.ndarray, params: StyleParams, rng: np.random.Generator) -> np.ndarray:
    """One flat colour (``params.color``, or the region's mean colour when None).

    Example:
        >>> float(solid(np.ones((4, 4, 3), np.float32), np.ones((4, 4), bool), StyleParams(), None).max())
        0.0
    """
    if params.color is None:
        colour = crop[mask].mean(axis=0) if mask.any() else crop.reshape(-1, crop.shape[-1]).mean(axis=0)
    else:
        colour = np.asarray(params.color, np.float32)
    return np.broadcast_to(np.asarray(colour, np.float32), crop.shape).copy()


#: Style name -> function(crop, region mask in the crop, params, rng) -> censored crop.
STYLES: dict[str, StyleFn] = {"pixelate": pixelate, "gaussian": gaussian, "noise": noise, "solid": solid}


def _shape_in_box(region_mask: np.ndarray, box: tuple[int, int, int, int], shape: str) -> np.ndarray:
    """The censored pixels of one region inside its box: all, an inscribed ellipse, or the mask.

    ``region_mask`` is image-sized, or already cropped to the box."""
    import cv2

    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    if region_mask.shape != (h, w):  # image-sized (a box the image's size starts at 0, 0)
        region_mask = region_mask[y0:y1, x0:x1]
    if shape == "box":
        return np.ones((h, w), bool)
    if shape == "mask":
        return np.asarray(region_mask, bool)
    if shape == "ellipse":
        m = np.zeros((h, w), np.uint8)
        # The ellipse through the box's edge midpoints leaves the corners; the region's own
        # pixels are added back so the ellipse never uncovers what the map marked.
        cv2.ellipse(m, (((w - 1) / 2.0, (h - 1) / 2.0), (float(w), float(h)), 0.0), 1, -1)
        return (m > 0) | np.asarray(region_mask, bool)
    raise ValueError(f"expected shape in ('box', 'ellipse', 'mask'), got {shape!r}")


def as_regions(regions_or_mask: "Sequence[Region] | np.ndarray") -> "list[Region]":
    """Regions as given, or the connected components of a bool mask (via :func:`cam.regions`).

    Example:
        >>> m = np.zeros((6, 6), bool); m[0:2, 0:2] = True; m[4:6, 4:6] = True
        >>> [r.box for r in as_regions(m)]
        [(0, 0, 2, 2), (4, 4, 6, 6)]
    """
    if isinstance(regions_or_mask, np.ndarray):
        from cam import regions

        m = np.asarray(regions_or_mask)
        if m.ndim != 2:
            raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
        return regions(m.astype(np.float32), threshold=0.5)
    return list(regions_or_mask)


def components_with_stats(binary: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.connectedComponentsWithStats(binary, connectivity=8)`` (same labels and stats), run by the
    serial BBDT algorithm: OpenCV's default parallel one measured 3x slower in wall time (same CPU)
    when the cores are busy, as they are in a pipeline whose I/O threads decode alongside.

    Example:
        >>> m = np.zeros((4, 6), np.uint8); m[1, 1:3] = 1; m[3, 5] = 1
        >>> n, labels, stats, _ = components_with_stats(m)
        >>> n, stats[1].tolist()
        (3, [1, 1, 2, 1, 2])
    """
    import cv2

    n, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_BBDT)
    return int(n), labels, stats, centroids


def _components(mask: np.ndarray) -> list[Part]:
    """(box, the component's pixels inside the box) per connected component of a bool mask, in
    :func:`as_regions` order (largest first); nothing image-sized is allocated per region."""
    import cv2

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    if not m.any():
        return []
    n, labels, stats, _ = components_with_stats(m.astype(np.uint8))
    order = sorted(range(1, n), key=lambda i: -int(stats[i][4]))  # stable: as cam.regions sorts
    out = []
    for i in order:
        x, y, w, h = (int(v) for v in stats[i][:4])
        out.append(((x, y, x + w, y + h), labels[y:y + h, x:x + w] == i))
    return out


def region_mask(size: tuple[int, int], regions_or_mask: "Sequence[Region] | np.ndarray",
                shape: str = "box") -> np.ndarray:
    """The (H, W) bool mask :func:`censor` changes for these regions and shape.

    Example:
        >>> m = np.zeros((8, 8), bool); m[2, 2:6] = True; m[5, 2] = True
        >>> int(region_mask((8, 8), m, "box").sum()), int(region_mask((8, 8), m, "mask").sum())
        (5, 5)
    """
    out = np.zeros(tuple(size), bool)
    for r in as_regions(regions_or_mask):
        x0, y0, x1, y1 = r.box
        out[y0:y1, x0:x1] |= _shape_in_box(r.mask, r.box, shape)
    return out


def censor(
    image: np.ndarray,
    regions_or_mask: "Sequence[Region] | np.ndarray",
    style: str = "pixelate",
    shape: str = "box",
    params: StyleParams | None = None,
) -> np.ndarray:
    """Censor regions of an image; pixels outside them are returned unchanged.

    Args:
        image: (H, W, 3) RGB float32 in [0, 1], or uint8: then only the regions' boxes are
            converted to float, styled and quantised back (8 bytes less per pixel than a float
            image; what ``to_uint8`` of the float result gives, except where boxes overlap, and
            for pixelate, whose block means come from the 8-bit pixels, up to one level).
        regions_or_mask: :class:`cam.Region` objects (at the image's size), or an (H, W)
            bool mask whose connected components are the regions.
        style: A key of :data:`STYLES`. Defaults to ``"pixelate"``.
        shape: ``"box"`` (each region's bounding box), ``"ellipse"`` (the ellipse inscribed in
            it, plus the region's own pixels) or ``"mask"`` (exactly the region's pixels).
            Defaults to ``"box"``.
        params: Block size, strength, colour and seed. Defaults to :class:`StyleParams`.

    Returns:
        A new image: float32, or uint8 for a uint8 input.

    Raises:
        ValueError: Unknown style or shape, or a mask of the wrong size.

    Example:
        >>> img = np.random.default_rng(1).random((40, 60, 3)).astype(np.float32)
        >>> m = np.zeros((40, 60), bool); m[10:30, 20:50] = True
        >>> out = censor(img, m, style="pixelate")
        >>> bool((out[~m] == img[~m]).all()), float((out[m] != img[m]).mean()) > 0.9
        (True, True)
    """
    if style not in STYLES:
        raise ValueError(f"expected style in {sorted(STYLES)}, got {style!r}")
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = img.astype(np.float32, copy=False)
    if isinstance(regions_or_mask, np.ndarray) and regions_or_mask.shape != img.shape[:2]:
        raise ValueError(f"expected a mask of shape {img.shape[:2]}, got {regions_or_mask.shape}")
    parts = (_components(regions_or_mask) if isinstance(regions_or_mask, np.ndarray)
             else [(r.box, r.mask) for r in regions_or_mask])
    return _censor_parts(img, parts, style, shape, params or StyleParams())


def _censor_parts(img: np.ndarray, parts: Sequence[Part], style: str, shape: str, p: StyleParams) -> np.ndarray:
    """:func:`censor` of a float or uint8 ``img`` (style and shape valid) whose regions are
    already split into parts, in :func:`_components` order: :func:`mosaic.censor_batch` builds
    them from its working-resolution labels, sparing a labelling pass over the full-size mask."""
    from hardenkit.imageio import pixels_to_float, to_uint8

    fn = STYLES[style]
    out = np.array(img, np.float32) if img.dtype != np.uint8 else img.copy()
    for box, rmask in parts:
        x0, y0, x1, y1 = box
        keep = _shape_in_box(rmask, box, shape)
        if not keep.any():
            continue
        rng = np.random.default_rng([p.seed, x0, y0, x1, y1])
        crop = out[y0:y1, x0:x1]
        if out.dtype == np.uint8 and fn is pixelate:
            # The block colours straight from the 8-bit pixels (OpenCV's area mean, rounded), then
            # repeated: no box-sized float copy. Equal to quantising the float blocks up to one
            # level in about 0.1% of the block colours (rounding of exact halves).
            done = _blow_up(_pixel_grid(crop, p), crop.shape)
        elif out.dtype == np.uint8:  # the style works on the box in float; the result is quantised
            done = to_uint8(fn(pixels_to_float(crop), keep, p, rng))
        else:
            done = fn(np.ascontiguousarray(crop), keep, p, rng)
        _copy_where(crop, done.reshape(crop.shape), keep)
    return out


def _copy_where(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> None:
    """``dst[mask] = src[mask]`` in place (``dst`` may be a view into a bigger image).

    OpenCV's masked copy is vectorised (tens of times faster than ``np.copyto(where=...)`` on a
    photo-sized box); should OpenCV ever have to copy ``dst`` instead of writing through the
    view, its result is copied back."""
    import cv2

    res = cv2.copyTo(np.ascontiguousarray(src), np.ascontiguousarray(mask, bool).view(np.uint8), dst)
    if res is not dst:
        np.copyto(dst, res.reshape(dst.shape))

