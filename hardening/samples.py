"""Sample generators of the hardening loop: pure functions on arrays, easy to test.

Each takes images, labels, optional ground-truth masks and CAM maps, and returns a
:class:`SampleSet`: new images, their labels, and whether a person must review the label
(no mask to decide it) instead of it going straight into training.

Example:
    >>> import numpy as np
    >>> from hardening.samples import noise_fill
    >>> img = np.zeros((4, 4, 3), np.float32); cover = np.zeros((4, 4), bool); cover[:2] = True
    >>> out = noise_fill(img, cover, np.random.default_rng(0))
    >>> bool((out[2:] == 0).all()), bool((out[:2] != 0).any())
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import ERASURE_COVERS, HARD_CASES


@dataclass
class SampleSet:
    """New samples of one kind.

    Attributes:
        kind: ``cam_erasure``, ``attention``, ``adversarial``, ``jacobian``, ``pool`` or ``hard``.
        x: Images (N, H, W, 3) float32.
        y: Class labels (N,).
        review: True where the label is a guess that needs a person (not trained on).
        source: Index of the source image in the input arrays (or -1).
    """

    kind: str
    x: np.ndarray
    y: np.ndarray
    review: np.ndarray
    source: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @classmethod
    def empty(cls, kind: str, shape: tuple[int, ...]) -> "SampleSet":
        """An empty set whose images have ``shape`` (H, W, 3)."""
        return cls(kind, np.zeros((0, *shape), np.float32), np.zeros(0, np.int32), np.zeros(0, bool),
                   np.zeros(0, int))

    def __len__(self) -> int:
        return len(self.x)

    def select(self, keep: np.ndarray) -> "SampleSet":
        """The subset where ``keep`` (bool or indices) holds."""
        return SampleSet(self.kind, self.x[keep], self.y[keep], self.review[keep], self.source[keep])

    def weak(self, probs: np.ndarray, confidence: float = 0.0) -> "SampleSet":
        """The samples a model gets wrong or gives its label less than ``confidence``, and those for review.

        Args:
            probs: (N, classes) the model's probabilities on ``x``.
            confidence: 0 = the wrong ones only. Defaults to 0.

        Example:
            >>> s = SampleSet("cam_erasure", np.zeros((3, 2, 2, 3)), np.array([1, 1, 0]), np.zeros(3, bool), np.arange(3))
            >>> p = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]])
            >>> len(s.weak(p)), len(s.weak(p, 0.8))
            (1, 2)
        """
        if not len(self):
            return self
        wrong = probs.argmax(1) != self.y
        unsure = probs[np.arange(len(self)), self.y] < confidence
        return self.select(wrong | unsure | self.review)

    def trainable(self) -> "SampleSet":
        """The samples whose labels need no review."""
        return self.select(~self.review)


def noise_fill(image: np.ndarray, cover: np.ndarray, rng: np.random.Generator, sigma: float = 0.25) -> np.ndarray:
    """Replace the pixels under ``cover`` with Gaussian noise around the image mean.

    Args:
        image: (H, W, 3) float in [0, 1].
        cover: (H, W) bool.
        rng: Noise source.
        sigma: Noise standard deviation. Defaults to 0.25.

    Returns:
        A new image; pixels outside ``cover`` are unchanged.
    """
    out = np.array(image, np.float32, copy=True)
    n = int(cover.sum())
    if n:
        mean = float(image.mean())
        out[cover] = np.clip(rng.normal(mean, sigma, (n, image.shape[2])), 0, 1).astype(np.float32)
    return out


def _top_region_mask(cam_map: np.ndarray, threshold: float) -> np.ndarray:
    from cam import regions

    regs = regions(cam_map, threshold=threshold)
    if not regs:
        return np.zeros(cam_map.shape, bool)
    return np.asarray(regs[0].mask, bool)


def _item_in_view(gt: np.ndarray, cover: np.ndarray, share: float) -> bool:
    """Whether some connected component of ``gt`` keeps at least ``share`` of its area uncovered."""
    from cam import label_items

    n, labels = label_items(gt)
    if not n:
        return False
    total = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    seen = np.bincount(labels[~cover].ravel(), minlength=n + 1)[1:]
    return bool((seen >= share * total).any())


def item_boxes(gt: np.ndarray, touched: np.ndarray) -> np.ndarray:
    """The bounding boxes of the items (connected components of ``gt``) that ``touched`` overlaps.

    Args:
        gt: (H, W) bool ground-truth mask.
        touched: (H, W) bool, e.g. a CAM region.

    Returns:
        (H, W) bool: the union of those items' bounding boxes (all False if none is touched).

    Example:
        >>> gt = np.zeros((6, 6), bool); gt[0:2, 0] = gt[4, 3:6] = True
        >>> t = np.zeros((6, 6), bool); t[1, 0] = True
        >>> int(item_boxes(gt, t).sum()), int(item_boxes(gt, ~t).sum())
        (2, 5)
    """
    from cam import label_items

    out = np.zeros(gt.shape, bool)
    _, labels = label_items(gt)
    for k in np.setdiff1d(np.unique(labels[touched]), [0]):
        ys, xs = np.nonzero(labels == k)
        out[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    return out


def erasure_samples(
    images: np.ndarray,
    labels: np.ndarray,
    sensitive_label: int,
    normal_label: int,
    maps: np.ndarray,
    masks: np.ndarray | None,
    rng: np.random.Generator,
    threshold: float = 0.5,
    min_remaining: float = 0.3,
    item_visible: float | None = None,
    cover: str = "item",
) -> SampleSet:
    """Cover the top CAM region of each sensitive image with noise and label the result.

    With a ground-truth mask, the sample stays ``sensitive_label`` if at least
    ``min_remaining`` of the mask's area is still uncovered (the second region the model
    should also see), or, with ``item_visible``, if some item (a connected component of the
    mask) keeps at least that share of its own area uncovered (a small second item left
    whole is still sensitive however big the covered one was); else it becomes
    ``normal_label``. Without a mask the original label is kept and the sample is flagged
    for review instead of guessed. With ``cover="item"`` and a mask, what is covered is
    the bounding box of every item the top region touches (plus the region): a peaked map
    of a hardened model covers a few pixels of an item, which leaves it sensitive and
    teaches nothing about the second region.

    Args:
        images: (N, H, W, 3) sensitive images the model currently gets right.
        labels: (N,) their class labels.
        sensitive_label: Label for samples that stay sensitive.
        normal_label: Label for samples whose sensitive content is covered.
        maps: (N, H, W) CAM maps in [0, 1].
        masks: (N, H, W) bool ground truth, or None; an all-False row means "no mask".
        rng: Noise source.
        threshold: Region threshold relative to the map maximum. Defaults to 0.5.
        min_remaining: See above. Defaults to 0.3.
        item_visible: See above; None = area share only. Defaults to None.
        cover: ``"region"`` (the top CAM region), ``"item"`` (see above) or ``"found"`` (with a
            mask, the box of every item any map pixel >= ``threshold`` x its maximum touches,
            the items :func:`cam.metrics.item_recall` counts as found: what is left are the
            ones the map missed). Without a mask all three cover the top region. Defaults to
            ``"item"``, as :class:`~hardening.config.HardenConfig`.

    Example:
        >>> s = erasure_samples(x, y, 1, 0, maps, masks, np.random.default_rng(0))  # doctest: +SKIP
    """
    xs, ys, rev, src = [], [], [], []
    if cover not in ERASURE_COVERS:
        raise ValueError(f"expected cover one of {', '.join(map(repr, ERASURE_COVERS))}, got {cover!r}")
    for i in range(len(images)):
        gt = masks[i] if masks is not None else None
        if cover == "found" and gt is not None and gt.any():
            from cam import hot_mask

            covered = hot_mask(maps[i], threshold)
        else:
            covered = _top_region_mask(maps[i], threshold)
        if not covered.any():
            continue
        if cover in ("item", "found") and gt is not None and gt.any():
            covered = covered | item_boxes(gt, covered)
        xs.append(noise_fill(images[i], covered, rng))
        if gt is not None and gt.any():
            remaining = float((gt & ~covered).sum()) / float(gt.sum())
            keep = remaining >= min_remaining or (item_visible is not None and _item_in_view(gt, covered, item_visible))
            ys.append(sensitive_label if keep else normal_label)
            rev.append(False)
        else:
            ys.append(int(labels[i]))
            rev.append(True)
        src.append(i)
    if not xs:
        return SampleSet.empty("cam_erasure", images.shape[1:])
    return SampleSet("cam_erasure", np.stack(xs), np.array(ys, np.int32), np.array(rev, bool), np.array(src))


def attention_samples(
    images: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    threshold: float = 0.5,
) -> SampleSet:
    """Where the map's peak lies outside the ground truth, cover that wrong region; keep the label.

    Only images with a non-empty mask are considered. Ground-truth pixels are never
    covered, so the label stays true.

    Example:
        >>> s = attention_samples(x, y, maps, masks, np.random.default_rng(0))  # doctest: +SKIP
    """
    from cam import regions

    xs, ys, src = [], [], []
    for i in range(len(images)):
        gt = masks[i]
        if not gt.any():
            continue
        peak = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
        if gt[peak]:
            continue
        wrong = [r for r in regions(maps[i], threshold=threshold) if r.mask[peak]]
        cover = (wrong[0].mask if wrong else np.zeros(gt.shape, bool)) & ~gt
        if not cover.any():
            continue
        xs.append(noise_fill(images[i], cover, rng))
        ys.append(int(labels[i]))
        src.append(i)
    if not xs:
        return SampleSet.empty("attention", images.shape[1:])
    return SampleSet("attention", np.stack(xs), np.array(ys, np.int32), np.zeros(len(xs), bool), np.array(src))


def hard_samples(
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    sensitive: np.ndarray,
    threshold: float,
    cap: int,
    cases: str = "flagged",
) -> SampleSet:
    """Copies of the images the model gets wrong at ``threshold``, with their own labels.

    A normal image scored at or above the threshold (a false positive) or a sensitive one
    below it (a miss) is what the fpr at a fixed recall counts; training on it again gives
    those cases more weight. At most ``cap``, the furthest on the wrong side first.

    Args:
        images: (N, H, W, 3) images.
        labels: (N,) class labels.
        scores: (N,) the model's sensitive score.
        sensitive: (N,) bool, the image is of a sensitive class.
        threshold: The sensitive-score threshold that flags.
        cap: Most samples to return.
        cases: ``"flagged"`` (false positives only, the default, as ``HardenConfig.hard_cases``),
            ``"missed"`` (misses only) or ``"both"``.

    Example:
        >>> x = np.zeros((4, 2, 2, 3), np.float32)
        >>> s = hard_samples(x, np.array([0, 0, 1, 1]), np.array([0.9, 0.1, 0.2, 0.8]),
        ...                  np.array([False, False, True, True]), 0.5, cap=10, cases="both")
        >>> s.kind, s.source.tolist(), s.y.tolist()
        ('hard', [0, 2], [0, 1])
        >>> hard_samples(x, np.array([0, 0, 1, 1]), np.array([0.9, 0.1, 0.2, 0.8]),
        ...              np.array([False, False, True, True]), 0.5, cap=10).source.tolist()
        [0]
    """
    if cases not in HARD_CASES:
        raise ValueError(f"expected cases one of {', '.join(HARD_CASES)}, got {cases!r}")
    missed = sensitive & (scores < threshold)
    flagged = ~sensitive & (scores >= threshold)
    wrong = np.flatnonzero({"both": missed | flagged, "flagged": flagged, "missed": missed}[cases])
    if not len(wrong) or cap <= 0:
        return SampleSet.empty("hard", images.shape[1:])
    keep = np.sort(wrong[np.argsort(-np.abs(scores[wrong] - threshold), kind="stable")[:cap]])
    return SampleSet("hard", images[keep].astype(np.float32), labels[keep].astype(np.int32),
                     np.zeros(len(keep), bool), keep)
