"""How good is a heatmap? Faithfulness, localisation and sanity metrics, on plain arrays.

* :func:`deletion_auc` / :func:`insertion_auc` (RISE, Petsiuk et al. 2018): remove (or
  insert) pixels most-important first and watch the sensitive score; area under that
  curve. Deletion: lower is better. Insertion: higher is better.
* :func:`pointing_game`: share of images whose map peak falls inside the ground-truth mask.
* :func:`item_recall`: share of ground-truth regions the thresholded map touches.
* :func:`random_maps`: the baseline every method must beat (seeded, smoothed noise).
* :func:`mprt_spearman` (Adebayo et al. 2018): randomise the top layers and compare maps;
  a low rank correlation means the maps depend on what the model learned (pass).
* :func:`evaluate`: all of the above for several methods on a dataset split.

Maps and masks are lists or arrays of (H, W); a map of another size than its mask is
resized to it. Hardening calls these every round.

Example:
    >>> maps = [np.eye(4, dtype=np.float32)]
    >>> masks = [np.eye(4, dtype=bool)]
    >>> pointing_game(maps, masks), item_recall(maps, masks)
    (1.0, 1.0)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hardenkit.imageio import resize
from hardenkit.modelio import sensitive_score
from hardenkit.testkit import max_steps

from .methods import DEFAULT_METHOD
from .regions import hot_mask, label_items

METRICS = ("deletion_auc", "insertion_auc", "pointing_game", "item_recall", "mprt_spearman")


def _as_size(m: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(m, np.float32)
    return m if m.shape == tuple(size) else resize(m, (int(size[0]), int(size[1])))


def _blur(img: np.ndarray) -> np.ndarray:
    import cv2

    sigma = max(1.0, min(img.shape[:2]) / 16.0)
    return cv2.GaussianBlur(np.asarray(img, np.float32), (0, 0), sigma)


def perturbation_curves(bundle: Any, images: Sequence[np.ndarray] | np.ndarray,
                        maps: Sequence[np.ndarray] | np.ndarray, mode: str = "deletion", steps: int = 16,
                        batch_size: int = 64, seed: int = 0) -> np.ndarray:
    """Sensitive score while pixels are removed (deletion) or inserted (insertion) in map order.

    Deletion replaces pixels with the image's mean colour, starting from the intact image;
    insertion starts from a blurred copy and restores true pixels. Every step of every
    image goes through the model in batches of ``batch_size``.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        images: RGB float images (resized to the model's input size).
        maps: One map per image (resized likewise). Ties are broken at random (seeded).
        mode: ``"deletion"`` or ``"insertion"``. Defaults to ``"deletion"``.
        steps: Number of steps; capped by ``HARDENKIT_MAX_STEPS``. Defaults to 16.
        batch_size: Model batch size. Defaults to 64.
        seed: Tie-breaking seed. Defaults to 0.

    Returns:
        (N, steps + 1) scores; column k is after k/steps of the pixels changed.

    Example:
        >>> perturbation_curves(bundle, x, maps).shape  # doctest: +SKIP
        (10, 17)
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"expected mode 'deletion' or 'insertion', got {mode!r}")
    steps = max_steps(steps)
    rng = np.random.default_rng(seed)
    x = bundle.prepare(images) if len(images) else np.zeros((0, *bundle.image_size, 3), np.float32)
    h, w = x.shape[1:3]
    n_px = h * w
    counts = np.round(np.linspace(0, n_px, steps + 1)).astype(int)
    curves = np.zeros((len(x), steps + 1), np.float32)
    per_chunk = max(1, 1024 // (steps + 1))
    for c0 in range(0, len(x), per_chunk):
        batch = []
        for i in range(c0, min(len(x), c0 + per_chunk)):
            m = _as_size(maps[i], (h, w)).ravel()
            order = np.lexsort((rng.random(n_px), -m))  # descending map, random among ties
            rank = np.empty(n_px, int)
            rank[order] = np.arange(n_px)
            img = x[i]
            if mode == "deletion":
                start, fill = img, np.broadcast_to(img.mean(axis=(0, 1)), img.shape)
            else:
                start, fill = _blur(img), img
            for k in counts:
                changed = (rank < k).reshape(h, w, 1)
                batch.append(np.where(changed, fill, start))
        scores = sensitive_score(bundle.predict(np.stack(batch).astype(np.float32), batch_size),
                                 bundle.sensitive_indices)
        curves[c0:c0 + len(scores) // (steps + 1)] = scores.reshape(-1, steps + 1)
    return curves


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area under each curve, x spread evenly over [0, 1].

    Example:
        >>> auc(np.array([[1.0, 0.0]])).tolist()
        [0.5]
    """
    c = np.asarray(curves, np.float64)
    if c.shape[-1] < 2:
        return c[..., 0] if c.size else np.zeros(c.shape[:-1])
    return np.trapezoid(c, dx=1.0 / (c.shape[-1] - 1), axis=-1)


def _auc_metric(mode: str, better: str, example: float) -> Callable[..., float]:
    def metric(bundle: Any, images: Sequence[np.ndarray] | np.ndarray, maps: Sequence[np.ndarray] | np.ndarray,
               steps: int = 16, batch_size: int = 64) -> float:
        if len(images) == 0:
            return float("nan")
        return float(auc(perturbation_curves(bundle, images, maps, mode, steps, batch_size)).mean())

    metric.__name__ = metric.__qualname__ = f"{mode}_auc"
    metric.__doc__ = f"""Mean area under the {mode} curve ({better} = the map finds what the score relies on).

    Args: ``bundle, images, maps, steps=16, batch_size=64``, as :func:`perturbation_curves`.
    Returns NaN for no image.

    Example:
        >>> {mode}_auc(bundle, x, cam.explain(bundle, x))  # doctest: +SKIP
        {example}
    """
    return metric


deletion_auc = _auc_metric("deletion", "lower", 0.21)
insertion_auc = _auc_metric("insertion", "higher", 0.74)


def _with_masks(maps: Any, masks: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(map at the mask's size, bool mask) for every image whose mask is not empty."""
    for m, gt in zip(maps, masks):
        gt = np.asarray(gt, bool)
        if gt.any():
            yield _as_size(m, gt.shape), gt


def pointing_game(maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray) -> float:
    """Share of images with a non-empty mask whose map peak lies inside the mask.

    Returns:
        A fraction in [0, 1]; NaN when no mask is non-empty.

    Example:
        >>> m = np.zeros((4, 4)); m[1, 1] = 1
        >>> pointing_game([m, m], [m > 0, np.zeros((4, 4), bool)])
        1.0
    """
    hits = [bool(gt.flat[int(np.argmax(m))]) for m, gt in _with_masks(maps, masks)]
    return float(np.mean(hits)) if hits else float("nan")


def item_recall(maps: Sequence[np.ndarray] | np.ndarray, masks: Sequence[np.ndarray] | np.ndarray,
                threshold: float = 0.5) -> float:
    """Share of ground-truth regions (mask connected components) the thresholded map touches.

    Args:
        maps: Heatmaps.
        masks: Ground-truth bool masks; each connected component is one item.
        threshold: Map pixels >= threshold x the map's maximum count. Defaults to 0.5.

    Returns:
        Items touched / items, over all images; NaN when there is no item.

    Example:
        >>> gt = np.zeros((6, 6), bool); gt[0, 0] = gt[5, 5] = True
        >>> m = np.zeros((6, 6)); m[0, 0] = 1
        >>> item_recall([m], [gt])
        0.5
    """
    found = total = 0
    for mm, gt in _with_masks(maps, masks):
        hot = hot_mask(mm, threshold)
        n, labels = label_items(gt)
        total += n
        found += len(np.setdiff1d(np.unique(labels[hot]), [0]))
    return found / total if total else float("nan")


def random_maps(shapes: Sequence[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Seeded uniform noise, Gaussian-smoothed to blob scale and scaled to [0, 1].

    Example:
        >>> [m.shape for m in random_maps([(8, 8), (4, 6)])]
        [(8, 8), (4, 6)]
    """
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for h, w in shapes:
        m = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), max(1.0, min(h, w) / 8.0))
        m = m - m.min()
        out.append((m / m.max() if m.max() > 0 else m).astype(np.float32))
    return out


def _randomised_clone(bundle: Any, stop_layer: str | None, seed: int) -> Any:
    """A clone of the model whose weighted layers from the output down to ``stop_layer`` are
    re-drawn at random (cascading randomisation); normalisation layers are left alone."""
    import keras

    from hardenkit.modelio import ModelBundle

    from ._graph import _walk

    clone = keras.models.clone_model(bundle.model)
    clone.set_weights(bundle.model.get_weights())
    rng = np.random.default_rng(seed)
    for layer in reversed(_walk(clone)):
        if isinstance(layer, keras.Model) or "Normalization" in type(layer).__name__:
            continue
        for v in layer.weights:
            w = np.asarray(v.numpy())
            std = float(w.std()) or 0.05
            v.assign(rng.normal(0.0, std, w.shape).astype(w.dtype))
        if stop_layer is not None and layer.name == stop_layer:
            break
    return ModelBundle(clone, bundle.class_names, bundle.sensitive_names)


def mprt_spearman(bundle: Any, images: Sequence[np.ndarray] | np.ndarray, method: str = DEFAULT_METHOD,
                  layer: str | None = None, seed: int = 0, maps: Sequence[np.ndarray] | None = None) -> float:
    """Model-parameter randomisation test: mean Spearman correlation of maps before/after.

    The layers from the output down to the CAM target layer (all layers, for pixel-gradient
    methods) of a clone are re-drawn at random. Low correlation (well below 1) means the
    maps depend on the learned weights, as they should.

    Args:
        bundle: The trained model.
        images: Images to explain.
        method: A key of :data:`cam.METHODS`.
        layer: Target layer name (None: automatic).
        seed: Randomisation seed. Defaults to 0.
        maps: The original maps if already computed (saves one pass).

    Returns:
        Mean rank correlation over images whose original map is not constant (a constant
        randomised map counts as 0); NaN when there is none.

    Example:
        >>> mprt_spearman(bundle, x, "gradcam")  # doctest: +SKIP
        0.12
    """
    from scipy.stats import spearmanr

    from .explainer import Explainer

    if len(images) == 0:
        return float("nan")
    ex = Explainer(bundle, method, layer=layer)
    orig = list(maps) if maps is not None else ex(images)
    rand_bundle = _randomised_clone(bundle, ex.layer_name, seed)
    rand = Explainer(rand_bundle, method, layer=ex.layer_name)(images)
    rhos = []
    for a, b in zip(orig, rand):
        a, b = np.ravel(a), np.ravel(_as_size(b, np.shape(a)))
        if np.ptp(a) == 0:
            continue
        rhos.append(0.0 if np.ptp(b) == 0 else float(spearmanr(a, b).statistic))
    return float(np.mean(rhos)) if rhos else float("nan")


def evaluate(bundle: Any, data_dir: Any, split: str = "test", methods: Sequence[str] = (DEFAULT_METHOD,),
             max_images: int | None = None, steps: int = 16, batch_size: int = 32, seed: int = 0,
             mprt_images: int = 16, progress: Any = None) -> dict[str, Any]:
    """Score CAM methods on a labelled split, next to a random-map baseline.

    Deletion/insertion use the sensitive images (the maps explain the sensitive score);
    pointing game and item recall use the sensitive images that have a mask; MPRT uses up to
    ``mprt_images`` of them.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        data_dir: Dataset folder (``DATA/<split>/<class>/``, masks under ``DATA/masks``).
        split: Which split. Defaults to ``"test"``.
        methods: Keys of :data:`cam.METHODS`. Defaults to the default method.
        max_images: Use a seeded random subset of this many images. Defaults to all.
        steps: Deletion/insertion steps. Defaults to 16.
        batch_size: Batch size. Defaults to 32.
        seed: Subset, tie-break and randomisation seed. Defaults to 0.
        mprt_images: Images used for the MPRT check. Defaults to 16.
        progress: Optional ``advance(n)`` callable, called once per method (+1 for random).

    Returns:
        ``{method: {deletion_auc, insertion_auc, pointing_game, item_recall, mprt_spearman,
        seconds, n_images}, "random": {...}, "curves": {method: {"deletion": [...],
        "insertion": [...]}}}``; the curves are means over images. A metric that cannot be
        computed (no masks; MPRT of random maps) is None.

    Raises:
        DataError: The split is missing or has no sensitive image.
        UsageError: Unknown method.

    Example:
        >>> evaluate(bundle, "demo-data", methods=["gradcam"])["gradcam"]["pointing_game"]  # doctest: +SKIP
        0.9
    """
    import dataclasses

    from hardenkit.data import load_split, scan_split
    from hardenkit.errors import DataError

    from .explainer import Explainer
    from .methods import get_method

    for name in methods:
        get_method(name)
    sp = scan_split(data_dir, split, class_names=bundle.class_names)
    if max_images is not None and max_images < len(sp.samples):
        keep = np.sort(np.random.default_rng(seed).permutation(len(sp.samples))[:max_images])
        sp = dataclasses.replace(sp, samples=tuple(sp.samples[i] for i in keep))
    data = load_split(sp, bundle.image_size, with_masks=True)
    sens = bundle.labels_binary(data.y) == 1
    x = data.x[sens]
    if len(x) == 0:
        raise DataError(f"{data_dir}: no sensitive image in split {split!r} to explain")
    masks = data.masks[sens] if data.masks is not None else np.zeros(x.shape[:3], bool)
    tick = progress or (lambda n=1: None)

    def score(maps: Sequence[np.ndarray], name: str) -> dict[str, Any]:
        dc = perturbation_curves(bundle, x, maps, "deletion", steps, batch_size * 2, seed)
        ic = perturbation_curves(bundle, x, maps, "insertion", steps, batch_size * 2, seed)
        curves[name] = {"deletion": dc.mean(axis=0).tolist(), "insertion": ic.mean(axis=0).tolist()}
        return {"deletion_auc": float(auc(dc).mean()), "insertion_auc": float(auc(ic).mean()),
                "pointing_game": pointing_game(maps, masks), "item_recall": item_recall(maps, masks),
                "n_images": int(len(x))}

    out: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    n_mprt = min(mprt_images, len(x))
    for name in methods:
        t0 = time.perf_counter()
        ex = Explainer(bundle, name, batch_size=batch_size)
        maps = ex(x)
        seconds = time.perf_counter() - t0
        row = score(maps, name)
        row["mprt_spearman"] = mprt_spearman(bundle, x[:n_mprt], name, ex.layer_name, seed, maps[:n_mprt])
        row["seconds"] = seconds
        out[name] = row
        tick(1)
    rmaps = random_maps([m.shape for m in x[..., 0]], seed)
    out["random"] = {**score(rmaps, "random"), "mprt_spearman": None, "seconds": 0.0}
    tick(1)
    for row in out.values():  # JSON-ready: a metric that cannot be computed is None, not NaN
        for k, v in row.items():
            if isinstance(v, float) and v != v:
                row[k] = None
    out["curves"] = curves
    return out
