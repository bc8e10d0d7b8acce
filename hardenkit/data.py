"""The dataset layout, scanning, and loading with ``tf.data``.

Layout (the Keras ``image_dataset_from_directory`` convention)::

    DATA/{train,val,test}/<class>/*.{jpg,png,...}
    DATA/masks/<split>/<class>/<same stem>.png      # optional, white = sensitive

Bad files are reported, not fatal: loaders return the errors they met next to the data.

Example:
    >>> from hardenkit.data import scan_split
    >>> split = scan_split("demo-data", "test")  # doctest: +SKIP
    >>> split.class_names  # doctest: +SKIP
    ('normal', 'sensitive')
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DataError, InvalidImageError
from .imageio import is_image_path, read_image, read_mask, resize

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled image of a split; ``mask_path`` is None where no mask exists."""

    path: Path
    label: int
    class_name: str
    mask_path: Path | None = None


@dataclass(frozen=True)
class Split:
    """The files of one split of a dataset folder.

    Example:
        >>> Split(Path("d"), "test", ("a", "b"), ()).has_masks
        False
    """

    root: Path
    name: str
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]

    @property
    def has_masks(self) -> bool:
        """Whether any sample has a ground-truth mask."""
        return any(s.mask_path is not None for s in self.samples)

    @property
    def labels(self) -> np.ndarray:
        """Class indices of the samples, int32."""
        return np.array([s.label for s in self.samples], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.samples)


def class_names_of(data_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class names of a dataset: the sorted class folders of its ``train`` split.

    Raises:
        DataError: No ``train`` folder or no class folders.

    Example:
        >>> class_names_of("demo-data")  # doctest: +SKIP
        ('normal', 'sensitive')
    """
    root = Path(data_dir)
    base = root / "train"
    if not base.is_dir():
        existing = [s for s in SPLITS if (root / s).is_dir()]
        if not existing:
            raise DataError(f"{root}: expected a dataset folder with {'/'.join(SPLITS)} sub-folders")
        base = root / existing[0]
    names = tuple(sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if len(names) < 2:
        raise DataError(f"{base}: expected at least two class folders, found {list(names)}")
    return names


def scan_split(
    data_dir: str | os.PathLike[str], split: str, class_names: Sequence[str] | None = None
) -> Split:
    """List the images of one split with labels and mask paths.

    Args:
        data_dir: The dataset folder.
        split: ``train``, ``val`` or ``test``.
        class_names: Fix the class order (e.g. a model's); defaults to the dataset's folders.

    Raises:
        DataError: The split folder is missing, or a class folder is not among
            ``class_names``.

    Example:
        >>> len(scan_split("demo-data", "val"))  # doctest: +SKIP
        300
    """
    root = Path(data_dir)
    names = tuple(class_names) if class_names else class_names_of(root)
    sdir = root / split
    if not sdir.is_dir():
        raise DataError(f"{sdir}: no such split folder (expected {root}/{{{','.join(SPLITS)}}}/<class>/)")
    found = sorted(d.name for d in sdir.iterdir() if d.is_dir() and not d.name.startswith("."))
    extra = [c for c in found if c not in names]
    if extra:
        raise DataError(f"{sdir}: class folder(s) {extra} not among the model's classes {list(names)}")
    samples = []
    for label, cname in enumerate(names):
        cdir = sdir / cname
        if not cdir.is_dir():
            continue
        mdir = root / "masks" / split / cname
        for f in sorted(cdir.iterdir()):
            if f.name.startswith(".") or not (f.is_file() and is_image_path(f)):
                continue
            mp = mdir / (f.stem + ".png")
            samples.append(Sample(f, label, cname, mp if mp.exists() else None))
    if not samples:
        raise DataError(f"{sdir}: no images found")
    return Split(root, split, names, tuple(samples))


@dataclass
class LoadedSplit:
    """A split decoded into arrays at a fixed size, with the files that failed.

    Attributes:
        x: Images (N, H, W, 3) float32 in [0, 1].
        y: Class indices (N,).
        masks: (N, H, W) bool, all-False where a sample has no mask; None if the split
            has no masks at all.
        samples: The samples that loaded, aligned with ``x``.
        errors: One :class:`InvalidImageError` per file that did not.
    """

    x: np.ndarray
    y: np.ndarray
    masks: np.ndarray | None
    samples: list[Sample]
    class_names: tuple[str, ...]
    errors: list[InvalidImageError] = field(default_factory=list)


def _load_one(s: Sample, size: tuple[int, int], with_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    img = resize(read_image(s.path), size)
    m = None
    if with_mask:
        m = read_mask(s.mask_path, size) if s.mask_path is not None else np.zeros(size, bool)
    return img, m


def load_split(
    split: Split,
    image_size: tuple[int, int],
    with_masks: bool = True,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> LoadedSplit:
    """Decode a whole split into memory (threads), recording bad files.

    Args:
        split: From :func:`scan_split`.
        image_size: (height, width) to resize to.
        with_masks: Also load masks, if the split has any. Defaults to True.
        workers: Decoding threads. Defaults to 4.
        progress: Called with 1 after each file (e.g. a progress bar's advance).

    Example:
        >>> ds = load_split(scan_split("demo-data", "test"), (64, 64))  # doctest: +SKIP
        >>> ds.x.shape  # doctest: +SKIP
        (300, 64, 64, 3)
    """
    from concurrent.futures import ThreadPoolExecutor

    wm = with_masks and split.has_masks
    results: list[Any] = [None] * len(split.samples)

    def work(i: int) -> None:
        try:
            results[i] = _load_one(split.samples[i], image_size, wm)
        except InvalidImageError as e:
            results[i] = e
        if progress is not None:
            progress(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(len(split.samples))))
    ok = [i for i, r in enumerate(results) if not isinstance(r, InvalidImageError)]
    errors = [r for r in results if isinstance(r, InvalidImageError)]
    h, w = image_size
    x = np.stack([results[i][0] for i in ok]) if ok else np.zeros((0, h, w, 3), np.float32)
    y = np.array([split.samples[i].label for i in ok], np.int32)
    masks = None
    if wm:
        masks = np.stack([results[i][1] for i in ok]) if ok else np.zeros((0, h, w), bool)
    return LoadedSplit(x.astype(np.float32), y, masks, [split.samples[i] for i in ok], split.class_names, errors)


def tf_dataset(
    split: Split,
    image_size: tuple[int, int],
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int = 0,
    errors: list[InvalidImageError] | None = None,
    cache: bool = False,
) -> Any:
    """Stream a split as a ``tf.data.Dataset`` of ``(images, labels)`` batches.

    Decoding runs in parallel (``num_parallel_calls=AUTOTUNE``) and batches are
    prefetched; with ``cache`` the decoded images are kept in memory after the first
    pass (decode once, train many epochs). A file that fails to decode is dropped from the stream and its
    :class:`InvalidImageError` appended to ``errors``.

    Example:
        >>> errs = []
        >>> ds = tf_dataset(scan_split("demo-data", "train"), (64, 64), errors=errs)  # doctest: +SKIP
    """
    import tensorflow as tf

    lock = threading.Lock()
    paths = [str(s.path) for s in split.samples]
    labels = split.labels
    h, w = image_size

    def decode(path: bytes) -> tuple[np.ndarray, np.bool_]:
        p = path.decode()
        try:
            return resize(read_image(p), (h, w)).astype(np.float32), np.bool_(True)
        except InvalidImageError as e:
            if errors is not None:
                with lock:
                    errors.append(e)
            return np.zeros((h, w, 3), np.float32), np.bool_(False)

    def tf_decode(path: Any, label: Any) -> Any:
        img, ok = tf.numpy_function(decode, [path], [tf.float32, tf.bool])
        img.set_shape((h, w, 3))
        ok.set_shape(())
        return img, label, ok

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle and not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(tf_decode, num_parallel_calls=tf.data.AUTOTUNE)

    def decoded(img: Any, label: Any, ok: Any) -> Any:
        return ok

    def drop_flag(img: Any, label: Any, ok: Any) -> Any:
        return img, label

    # named, not two lambdas on one line: AutoGraph cannot tell those apart and warned (7 lines) per dataset
    ds = ds.filter(decoded).map(drop_flag)
    if cache:
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights ``n / (k * count_c)``, for ``model.fit(class_weight=...)``.

    Example:
        >>> class_weights(np.array([0, 0, 0, 1]), 2)
        {0: 0.6666666666666666, 1: 2.0}
    """
    counts = np.bincount(np.asarray(labels, int), minlength=n_classes).astype(float)
    n = counts.sum()
    return {c: (n / (n_classes * counts[c]) if counts[c] else 0.0) for c in range(n_classes)}
