"""Turn a heatmap into ranked regions, and draw heatmaps over images.

:func:`regions` is shared by ``cam show``, ``mosaic`` and ``hardening``; it costs one
threshold, an optional dilation and one connected-components pass (OpenCV), plus work
proportional to each region's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Region:
    """One connected area of a thresholded heatmap.

    Attributes:
        box: (x0, y0, x1, y1) in pixels, ends exclusive (``image[y0:y1, x0:x1]``).
        mask: (H, W) bool, the region's pixels, full image size.
        area: Number of pixels in ``mask``.
        peak: (y, x) of the highest map value inside.
        mean: Mean map value inside.
        importance: Sum of the map inside (the sort key).
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray = field(compare=False, hash=False, repr=False)
    area: int
    peak: tuple[int, int]
    mean: float
    importance: float


def hot_mask(cam_map: np.ndarray, threshold: float = 0.5, dilate: int = 0) -> np.ndarray:
    """The pixels of a map at or above ``threshold`` x its maximum (all False for a map <= 0).

    Args:
        cam_map: (H, W) heatmap.
        threshold: Fraction of the map's maximum a pixel must reach. Defaults to 0.5.
        dilate: Grow the hot area by this many pixels (elliptic kernel). Defaults to 0.

    Example:
        >>> m = np.array([[0.0, 0.4], [0.6, 1.0]])
        >>> hot_mask(m).tolist(), hot_mask(m, 0.9, dilate=1).tolist()
        ([[False, False], [True, True]], [[False, True], [True, True]])
    """
    m = np.asarray(cam_map)
    top = float(m.max()) if m.size else 0.0
    if not top > 0:
        return np.zeros(m.shape, bool)
    hot = m >= threshold * top
    if dilate:
        import cv2

        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        hot = np.asarray(cv2.dilate(hot.astype(np.uint8), kernel), bool)
    return hot


def label_items(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Number the items of a ground-truth mask: its 8-connected components.

    Item recall, the erasure and attention samples, ``alone_flagged`` and the trainer's
    item-coverage loss all count items this one way.

    Args:
        mask: (H, W) mask, bool or 0/1.

    Returns:
        (number of items, (H, W) int32 labels: 0 = background, items 1..n).

    Example:
        >>> m = np.zeros((4, 4), bool); m[0, 0] = m[3, 3] = True
        >>> n, labels = label_items(m)
        >>> n, int(labels[0, 0]), int(labels[3, 3]), int(labels[1, 1])
        (2, 1, 2, 0)
    """
    import cv2

    n, labels = cv2.connectedComponents(np.asarray(mask, np.uint8), connectivity=8)
    return int(n) - 1, labels


def regions(cam_map: np.ndarray, threshold: float = 0.5, dilate: int = 0, min_area: int = 1) -> list[Region]:
    """Connected regions where the map reaches ``threshold`` x its maximum, most important first.

    Args:
        cam_map: (H, W) float heatmap (any non-negative scale).
        threshold: Fraction of the map's maximum a pixel must reach, in [0, 1]. Defaults to 0.5.
        dilate: Grow the thresholded area by this many pixels (elliptic kernel) before
            labelling, merging nearby blobs. Defaults to 0.
        min_area: Drop regions smaller than this many pixels. Defaults to 1.

    Returns:
        Regions sorted by importance (sum of the map inside), descending. Empty for an
        all-zero (or negative) map.

    Raises:
        ValueError: ``cam_map`` is not 2-D, or an argument is out of range.

    Example:
        >>> m = np.zeros((10, 10), np.float32); m[1:3, 1:4] = 1.0; m[6:9, 6:8] = 0.8
        >>> [r.box for r in regions(m)]
        [(1, 1, 4, 3), (6, 6, 8, 9)]
    """
    import cv2

    m = np.asarray(cam_map, np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {m.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"expected threshold in [0, 1], got {threshold}")
    if dilate < 0 or min_area < 1:
        raise ValueError(f"expected dilate >= 0 and min_area >= 1, got {dilate} and {min_area}")
    binary = hot_mask(m, threshold, dilate).astype(np.uint8)
    if not binary.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    sums = np.bincount(labels.ravel(), weights=m.ravel(), minlength=n)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        inside = labels[y:y + h, x:x + w] == i
        local = np.where(inside, m[y:y + h, x:x + w], -np.inf)
        py, px = np.unravel_index(int(np.argmax(local)), local.shape)
        mask = np.zeros(m.shape, bool)
        mask[y:y + h, x:x + w] = inside
        out.append(Region((x, y, x + w, y + h), mask, area, (y + int(py), x + int(px)),
                          float(sums[i]) / area, float(sums[i])))
    out.sort(key=lambda r: -r.importance)
    return out


def overlay(image: np.ndarray, cam_map: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap (matplotlib colormap) over an RGB image.

    Args:
        image: (H, W, 3) RGB float in [0, 1] (or (H, W) grey).
        cam_map: (h, w) map in [0, 1]; resized to the image if needed.
        alpha: Heatmap weight in [0, 1]. Defaults to 0.5.
        colormap: A matplotlib colormap name. Defaults to ``"jet"``.

    Returns:
        (H, W, 3) float32 RGB in [0, 1].

    Raises:
        ValueError: ``alpha`` out of range or unknown colormap.

    Example:
        >>> overlay(np.zeros((4, 6, 3), np.float32), np.ones((2, 3), np.float32)).shape
        (4, 6, 3)
    """
    from matplotlib import colormaps

    from hardenkit.imageio import resize

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"expected alpha in [0, 1], got {alpha}")
    try:
        cmap = colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r}") from None
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    m = np.asarray(cam_map, np.float32)
    if m.shape != img.shape[:2]:
        m = resize(m, img.shape[:2])
    heat = cmap(np.clip(m, 0.0, 1.0))[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * img + alpha * heat, 0.0, 1.0).astype(np.float32)
