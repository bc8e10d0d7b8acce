"""Mining an unlabelled pool for the images nearest the model's decision boundary.

Pool images and boundary samples (e.g. from :func:`~attacks.jacobian_boundary`) are embedded
the same way, with the model's penultimate features; each pool image is scored by the cosine
distance to its nearest boundary sample, and the closest come first.

Example:
    >>> from attacks import mine_pool
    >>> res = mine_pool(bundle, "DATA/pool", boundary, top=50)  # doctest: +SKIP
    >>> [(m.rank, m.path.name) for m in res][:1]  # doctest: +SKIP
    [(1, 'pool-0137.jpg')]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hardenkit.errors import ConfigError, InvalidImageError, UsageError
from hardenkit.imageio import iter_images, read_image, resize

from ._compiled import as_images, compiled


def embed(bundle: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Penultimate features: the input of the model's last ``Dense`` layer.

    The layer is found automatically among the outer model's layers, so a transfer-learning
    model (a base model used as one layer, then pooling and a Dense head) embeds with the
    pooled features. A model without a Dense layer embeds with its logits.

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle` or Keras classifier.
        images: (N, H, W, C) float32 in [0, 1] at the model's input size.
        batch_size: Defaults to 64.

    Returns:
        (N, D) float32 features.

    Example:
        >>> from hardenkit.testkit import tiny_model, dummy_image
        >>> embed(tiny_model(), dummy_image()[None]).shape
        (1, 4)
    """
    comp = compiled(bundle)
    x = as_images(images, comp.input_shape)
    if not len(x):
        d = int(np.asarray(comp.features(np.zeros((1, *comp.input_shape), np.float32))).shape[-1])
        return np.zeros((0, d), np.float32)
    out = [np.asarray(comp.features(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).reshape(len(x), -1).astype(np.float32)


@dataclass(frozen=True)
class MinedItem:
    """One mined pool image.

    Attributes:
        rank: 1 for the image nearest the boundary.
        distance: Cosine distance to the nearest boundary sample (0 = same direction).
        index: Position in the pool as given (files in :func:`iter_images` order).
        path: The file, or None when the pool was an array.
    """

    rank: int
    distance: float
    index: int
    path: Path | None = None


@dataclass
class MineResult:
    """The ranked items (iterable like a list) and the pool files that could not be read.

    Example:
        >>> r = MineResult([MinedItem(1, 0.1, 3)])
        >>> len(r), r[0].index, r.errors
        (1, 3, [])
    """

    items: list[MinedItem]
    errors: list[InvalidImageError] = field(default_factory=list)
    n_pool: int = 0

    def __iter__(self) -> Iterator[MinedItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> MinedItem:
        return self.items[i]


def _pool_embeddings(bundle: Any, pool: Any, batch_size: int) -> tuple[np.ndarray, list[Path | None], list[int], list[InvalidImageError]]:
    """Embed an array pool, or decode and embed a list/folder of files batch by batch."""
    if isinstance(pool, np.ndarray):
        return embed(bundle, pool, batch_size), [None] * len(pool), list(range(len(pool))), []
    if isinstance(pool, (str, os.PathLike)):
        pool = [pool]
    paths = list(iter_images(pool))
    size = compiled(bundle).input_shape[:2]
    feats: list[np.ndarray] = []
    kept: list[Path | None] = []
    index: list[int] = []
    errors: list[InvalidImageError] = []
    batch: list[np.ndarray] = []
    for i, p in enumerate(paths):
        try:
            batch.append(resize(read_image(p), size))
        except InvalidImageError as e:
            errors.append(e)
            continue
        kept.append(p)
        index.append(i)
        if len(batch) == batch_size:
            feats.append(embed(bundle, np.stack(batch), batch_size))
            batch = []
    if batch:
        feats.append(embed(bundle, np.stack(batch), batch_size))
    emb = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
    return emb, kept, index, errors


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def mine_pool(bundle: Any, pool_paths_or_images: str | os.PathLike[str] | Sequence[Any] | np.ndarray,
              boundary_samples: np.ndarray, top: int = 500, batch_size: int = 64) -> MineResult:
    """Rank pool images by cosine distance (in feature space) to the nearest boundary sample.

    Args:
        bundle: A :class:`~hardenkit.modelio.ModelBundle` or Keras classifier.
        pool_paths_or_images: A folder, a list of files/folders (read with
            :func:`~hardenkit.imageio.read_image` and resized to the model input), or an
            (N, H, W, C) float32 array.
        boundary_samples: (M, H, W, C) images at the decision boundary, M >= 1.
        top: How many items to return. Defaults to 500.
        batch_size: Defaults to 64.

    Returns:
        A :class:`MineResult`: items ranked ascending by distance, plus one
        :class:`~hardenkit.errors.InvalidImageError` per unreadable pool file (skipped).

    Raises:
        UsageError: No boundary samples.
        ConfigError: ``top`` < 1.

    Example:
        >>> from hardenkit.testkit import tiny_model, planted_batch
        >>> x, _, _ = planted_batch(6)
        >>> [m.index for m in mine_pool(tiny_model(), x, x[:1], top=1)]
        [0]
    """
    if top < 1:
        raise ConfigError(f"expected top >= 1, got {top}")
    boundary = np.asarray(boundary_samples, np.float32)
    if boundary.ndim != 4 or not len(boundary):
        raise UsageError(f"expected at least one boundary sample (M, H, W, C), got shape {boundary.shape}")
    b = _unit(embed(bundle, boundary, batch_size).astype(np.float64))
    emb, paths, index, errors = _pool_embeddings(bundle, pool_paths_or_images, batch_size)
    if not len(emb):
        return MineResult([], errors, 0)
    dist = 1.0 - (_unit(emb.astype(np.float64)) @ b.T).max(axis=1)
    order = np.argsort(dist, kind="stable")[:top]
    items = [MinedItem(r + 1, float(max(dist[j], 0.0)), index[j], paths[j]) for r, j in enumerate(order)]
    return MineResult(items, errors, len(emb))
