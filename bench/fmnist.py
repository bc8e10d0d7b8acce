"""Real-image benchmark data built from Fashion-MNIST (Debian package ``dataset-fashion-mnist``).

Two datasets, both in the hardenkit layout (``OUT/{train,val,test}/<class>/NNNNN.png``):

* **Scenes** (:func:`build_scenes`): moderation-like 64x64 scenes of real Fashion-MNIST items
  composited on procedural backgrounds (the demo data's gradients, stripes and blobs).
  The *sensitive* item class is **1 "Trouser"**, with its closest classes as hard
  negatives: 3 "Dress", 4 "Coat" and 2 "Pullover" (:data:`LOOKALIKES`: long items of a
  similar outline). Earlier versions used 0 "T-shirt/top" against shirt, pullover and dress,
  but the compact hardenkit CNN (receptive field 18 px, global pooling) stayed at chance on
  those scenes (val 0.57, test 0.51 with 2,000 training scenes), which left nothing for the
  hardening figures to measure. Sensitive scenes hold 1-3 trousers plus 0-2 other
  items; normal scenes hold 0-3 other items, half of them look-alikes. Items are scaled to
  16-26 px (at size 64), tinted (each channel 0.6-1.0, the item's grey levels kept as
  shading), flipped at random and placed with little overlap. The mask of a scene is exact:
  the pixels of its trousers whose item intensity is above :data:`ITEM_THRESHOLD`, minus
  whatever a later item covers. Colour carries no label: only the item's shape does.
* **Plain** (:func:`build_plain`): the 10-class 28x28 grey Fashion-MNIST itself, classes
  named ``0-tshirt-top`` ... ``9-ankle-boot`` (sorted order = label order), for comparing
  adversarial training with Madry et al. as reported by Croce et al. (AISTATS 2019, Table 1).

No item leaks between splits: train and val scenes use only Fashion-MNIST's train split, val
scenes only its last :data:`HOLDOUT` images (which train scenes never use), and test scenes
only its test split. Every placed item is listed in ``OUT/items.csv`` with its source split
and index, so this can be checked. The same seed gives the same files.

Command line::

    python -m bench.fmnist OUT [--quick] [--plain] [--seed N]

Example:
    >>> from bench.fmnist import build_scenes
    >>> build_scenes("/tmp/fm-scenes", 600, 150, 150)  # doctest: +SKIP
    PosixPath('/tmp/fm-scenes')
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from hardenkit.demo import _background
from hardenkit.errors import DataError
from hardenkit.imageio import atomic_write_text, resize, write_image

#: The Debian package holding the IDX files.
PACKAGE = "dataset-fashion-mnist"

#: Where that package installs them (``dpkg -L`` is asked too; ``HARDENKIT_FMNIST_DIR`` wins).
KNOWN_DIRS = ("/usr/share/datasets/fashion-mnist", "/usr/share/fashion-mnist", "/usr/share/datasets/fashion_mnist")

#: Official class names, index = label.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")

#: Folder names of :func:`build_plain`: index prefix so sorted order is label order.
PLAIN_NAMES = tuple(f"{i}-{n.lower().replace('/', '-').replace(' ', '-').replace('t-shirt', 'tshirt')}"
                    for i, n in enumerate(CLASS_NAMES))

#: The sensitive item class of the scenes: 1 "Trouser".
SENSITIVE_CLASS = 1

#: Hard negatives of each sensitive class: the classes it is most confused with.
LOOKALIKES = {1: (3, 4, 2), 6: (0, 2, 4), 0: (6, 2, 3), 2: (4, 6, 0), 4: (2, 6, 0)}

#: Item pixels at or below this intensity (of 1.0) are transparent and outside the mask.
ITEM_THRESHOLD = 0.1

#: Range of each channel of an item's random tint (the item's grey levels shade it).
TINT = (0.6, 1.0)

#: Fashion-MNIST train images held out for val (the last ones), as in the usual 55k/5k split.
HOLDOUT = 5000

_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
          "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_IDS = {"train": 1, "val": 2, "test": 3}
_WORKERS = 8  # file writing is fsync-bound, not CPU-bound

Items = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _missing(what: str) -> DataError:
    return DataError(f"Fashion-MNIST {what}; install the Debian package: apt-get install {PACKAGE} "
                     f"(or point HARDENKIT_FMNIST_DIR at a folder holding the four IDX files)")


def _dpkg_dirs() -> list[Path]:
    try:
        out = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({Path(line).parent for line in out.stdout.splitlines() if "idx" in Path(line).name})


def find_idx_files(search: Sequence[str | os.PathLike[str]] | None = None) -> dict[str, Path]:
    """Locate the four Fashion-MNIST IDX files (plain or gzipped).

    Looks in ``search`` if given, else in ``$HARDENKIT_FMNIST_DIR``, :data:`KNOWN_DIRS` and
    the folders ``dpkg -L dataset-fashion-mnist`` lists, taking the first folder holding all four.

    Args:
        search: Folders to look in instead of the defaults.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}`` -> path.

    Raises:
        DataError: No folder holds all four files (the message names the package to install).

    Example:
        >>> sorted(find_idx_files())  # doctest: +SKIP
        ['test_images', 'test_labels', 'train_images', 'train_labels']
    """
    if search is None:
        env = os.environ.get("HARDENKIT_FMNIST_DIR")
        dirs = ([Path(env)] if env else []) + [Path(d) for d in KNOWN_DIRS] + _dpkg_dirs()
    else:
        dirs = [Path(d) for d in search]
    for d in dirs:
        found: dict[str, Path] = {}
        for key, stem in _FILES.items():
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(_FILES):
            return found
    raise _missing(f"IDX files not found (looked in {', '.join(str(d) for d in dirs) or 'nothing'})")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Args:
        path: The file; gzip is detected from its first bytes, not its name.

    Returns:
        The array, in native byte order, shaped as the header says.

    Raises:
        DataError: Missing or unreadable file, bad magic number, unknown type code, or a
            payload shorter or longer than the header's dimensions.

    Example:
        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        (10000,)
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{p}: no such IDX file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{p}: not a readable IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{p}: bad IDX magic number {raw[:4].hex() or '(empty file)'}; expected 0000 + a type "
                        f"code ({', '.join(f'{k:02x}' for k in _IDX_DTYPES)}) + 1-4 dimensions")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    want = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - head != want:
        raise DataError(f"{p}: IDX payload is {len(raw) - head} bytes, header {shape} says {want}")
    return np.frombuffer(raw, dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


@lru_cache(maxsize=1)
def load_fashion_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST from the Debian package: ``{"train": (x, y), "test": (x, y)}``.

    ``x`` is uint8 (N, 28, 28), ``y`` uint8 (N,). Cached for the process.

    Raises:
        DataError: Files missing or inconsistent.

    Example:
        >>> load_fashion_mnist()["test"][0].shape  # doctest: +SKIP
        (10000, 28, 28)
    """
    f = find_idx_files()
    out = {}
    for split in ("train", "test"):
        x, y = read_idx(f[f"{split}_images"]), read_idx(f[f"{split}_labels"])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{f[f'{split}_images']}: expected (N, H, W) images and N labels, got {x.shape} and "
                            f"{y.shape}")
        out[split] = (x, y)
    return out


def _check_items(items: Items) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for split in ("train", "test"):
        if split not in items:
            raise DataError(f"expected items for 'train' and 'test', got {sorted(items)}")
        x, y = np.asarray(items[split][0]), np.asarray(items[split][1])
        if x.ndim != 3 or y.shape != (len(x),):
            raise DataError(f"expected {split} items (N, H, W) with N labels, got {x.shape} and {y.shape}")
        out[split] = (x, y.astype(np.int64))
    return out


def source_pools(items: Items, holdout: int | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """Which source split and indices each scene split draws its items from.

    ``train`` scenes: Fashion-MNIST train minus its last ``holdout`` images; ``val``: those
    last images; ``test``: Fashion-MNIST test.

    Args:
        items: ``{"train": (x, y), "test": (x, y)}``.
        holdout: Train images kept for val. Defaults to :data:`HOLDOUT`, at most a sixth.

    Example:
        >>> x = np.zeros((12, 4, 4), np.uint8)
        >>> p = source_pools({"train": (x, np.arange(12)), "test": (x, np.arange(12))})
        >>> p["val"][0], p["val"][1].tolist()
        ('train', [10, 11])
    """
    n = len(items["train"][0])
    k = min(HOLDOUT if holdout is None else holdout, n // 6) or 1
    return {"train": ("train", np.arange(0, n - k)), "val": ("train", np.arange(n - k, n)),
            "test": ("test", np.arange(len(items["test"][0])))}


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Shared area of two squares (x, y, side) over the smaller one's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1])
    return max(0, w) * max(0, h) / float(min(a[2], b[2]) ** 2)


def compose_scene(
    rng: np.random.Generator,
    images: np.ndarray,
    by_class: Mapping[int, np.ndarray],
    sensitive: bool,
    size: int = 64,
    sensitive_class: int = SENSITIVE_CLASS,
    photometric: bool = True,
    lookalike_share: float = 0.5,
    item_size: tuple[int, int] = (16, 26),
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Draw one scene from item images.

    Args:
        rng: Source of all randomness.
        images: Item images (N, h, w), uint8 or float in [0, 1].
        by_class: Class -> indices into ``images`` allowed for this scene's split.
        sensitive: Place 1-3 items of ``sensitive_class`` (else none).
        size: Scene side. Defaults to 64.
        sensitive_class: The sensitive item class. Defaults to :data:`SENSITIVE_CLASS`.
        photometric: Apply global brightness jitter, blur and sensor noise. Defaults to True.
        lookalike_share: Share of the other items drawn from the look-alike classes
            (:data:`LOOKALIKES`). Defaults to 0.5.
        item_size: Smallest and largest item side, in pixels of a 64-pixel scene (scaled
            with ``size``). Defaults to (16, 26).

    Returns:
        (image (size, size, 3) float32, mask (size, size) bool, placed items as
        (class, index into ``images``) in drawing order).

    Example:
        >>> imgs = np.full((4, 28, 28), 255, np.uint8)
        >>> img, mask, placed = compose_scene(np.random.default_rng(0), imgs, {3: np.arange(2),
        ...                                   1: np.arange(2, 4)}, True)
        >>> img.shape, bool(mask.any()), placed[0][0] in (1, 3)
        ((64, 64, 3), True, True)
    """
    import cv2

    others = [c for c in sorted(by_class) if c != sensitive_class and len(by_class[c])]
    look = [c for c in LOOKALIKES.get(sensitive_class, ()) if c in others]
    rest = [c for c in others if c not in look] or look
    if sensitive:
        n_other = int(rng.choice([0, 1, 2], p=[0.45, 0.35, 0.2])) if others else 0
        kinds = [sensitive_class] * int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))
    else:
        n_other = int(rng.choice([0, 1, 2, 3], p=[0.05, 0.25, 0.4, 0.3])) if others else 0
        kinds = []
    for _ in range(n_other):
        pool = look if look and rng.random() < lookalike_share else rest
        kinds.append(int(pool[rng.integers(len(pool))]))
    rng.shuffle(kinds)
    img = _background(rng, size)
    mask = np.zeros((size, size), bool)
    boxes: list[tuple[int, int, int]] = []
    placed: list[tuple[int, int]] = []
    lo, hi = max(4, round(item_size[0] * size / 64)), max(5, round(item_size[1] * size / 64))
    for cls in kinds:
        idx = by_class[cls]
        j = int(idx[rng.integers(len(idx))])
        s = int(rng.integers(lo, hi + 1))
        best, best_ov = (0, 0, s), 2.0
        for _ in range(30):
            cand = (int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1)), s)
            ov = max((_overlap(cand, b) for b in boxes), default=0.0)
            if ov < best_ov:
                best, best_ov = cand, ov
            if ov <= 0.15:
                break
        x0, y0, _ = best
        item = np.asarray(images[j], np.float32)
        if images.dtype == np.uint8:
            item = item / 255.0
        if rng.random() < 0.5:
            item = item[:, ::-1]
        v = np.clip(resize(np.ascontiguousarray(item), (s, s)), 0, 1)
        m = v > ITEM_THRESHOLD
        tint = rng.uniform(TINT[0], TINT[1], 3).astype(np.float32)
        rgb = tint * (0.35 + 0.65 * v[..., None])  # the item's grey levels become shading
        region = img[y0:y0 + s, x0:x0 + s]
        region[m] = rgb[m]
        mask[y0:y0 + s, x0:x0 + s][m] = cls == sensitive_class  # a later item covers an earlier one
        boxes.append(best)
        placed.append((cls, j))
    if photometric:
        img = img * rng.uniform(0.8, 1.1) + rng.uniform(-0.06, 0.06)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        img = img + rng.normal(0, rng.uniform(0.01, 0.04), img.shape)
    return np.clip(img, 0, 1).astype(np.float32), mask, placed


def _run_parallel(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int = _WORKERS) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, tasks))


def build_scenes(
    out_dir: str | os.PathLike[str],
    n_train: int,
    n_val: int,
    n_test: int,
    size: int = 64,
    seed: int = 0,
    sensitive_class: int = SENSITIVE_CLASS,
    items: Items | None = None,
    holdout: int | None = None,
    photometric: bool = True,
) -> Path:
    """Write Fashion-MNIST scenes in the hardenkit layout, with exact masks.

    Writes ``OUT/{train,val,test}/{normal,sensitive}/NNNNN.png`` (half of each split
    sensitive: odd indices), ``OUT/masks/<split>/sensitive/NNNNN.png`` (white = sensitive
    item pixels), ``OUT/items.csv`` (every placed item: scene, class, source split and index)
    and ``OUT/README.txt``. Existing split folders are replaced.

    Args:
        out_dir: Destination folder.
        n_train: Train scenes (items from Fashion-MNIST train minus the held-out slice).
        n_val: Val scenes (items from the held-out slice of Fashion-MNIST train).
        n_test: Test scenes (items from Fashion-MNIST test).
        size: Scene side. Defaults to 64.
        seed: Same seed, same files. Defaults to 0.
        sensitive_class: Item class that makes a scene sensitive. Defaults to :data:`SENSITIVE_CLASS` (1, Trouser).
        items: ``{"train": (images, labels), "test": (images, labels)}`` to use instead of
            the Debian package's files (tests, other item sets).
        holdout: Train items held out for val; see :func:`source_pools`.
        photometric: Global jitter/blur/noise on each scene. Defaults to True.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DataError: Fashion-MNIST is not installed (and no ``items``), or the items lack the
            sensitive class in some source pool.

    Example:
        >>> build_scenes("/tmp/fm", 8, 4, 4)  # doctest: +SKIP
        PosixPath('/tmp/fm')
    """
    src = _check_items(items if items is not None else load_fashion_mnist())
    pools = source_pools(src, holdout)
    root = Path(out_dir)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    rows: list[list[Any]] = []
    for split, n in counts.items():
        src_name, allowed = pools[split]
        images, labels = src[src_name]
        by_class = {int(c): allowed[labels[allowed] == c] for c in np.unique(labels[allowed])}
        if n and len(by_class.get(sensitive_class, ())) == 0:
            raise DataError(f"no item of sensitive class {sensitive_class} in the {split} source pool")
        for d in (root / split, root / "masks" / split):
            shutil.rmtree(d, ignore_errors=True)

        def one(i: int, split: str = split, images: np.ndarray = images,
                by_class: dict[int, np.ndarray] = by_class, src_name: str = src_name) -> list[list[Any]]:
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            sens = bool(i % 2)
            img, mask, placed = compose_scene(rng, images, by_class, sens, size, sensitive_class, photometric)
            cname = "sensitive" if sens else "normal"
            write_image(root / split / cname / f"{i:05d}.png", img)
            if sens:
                write_image(root / "masks" / split / cname / f"{i:05d}.png", mask.astype(np.float32))
            return [[split, f"{split}/{cname}/{i:05d}.png", cname, c, CLASS_NAMES[c] if c < 10 else str(c),
                     src_name, j] for c, j in placed]

        for part in _run_parallel(one, range(n)):
            rows.extend(part)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "file", "label", "item_class", "item_name", "source_split", "source_index"])
    w.writerows(rows)
    atomic_write_text(root / "items.csv", buf.getvalue())
    atomic_write_text(root / "README.txt", (
        f"Fashion-MNIST scenes (hardenkit bench.fmnist), seed={seed}, size={size}, counts={counts}, "
        f"sensitive item class {sensitive_class} ({CLASS_NAMES[sensitive_class] if sensitive_class < 10 else ''}).\n"
        f"train/val items: Fashion-MNIST train (val = its last {len(pools['val'][1])} images); test items: "
        "Fashion-MNIST test. items.csv lists every placed item.\n"
        "Regenerate with: python -m bench.fmnist OUT_DIR\n"))
    return root


def build_plain(out_dir: str | os.PathLike[str], n_train: int | None = None, n_test: int | None = None,
                items: Items | None = None, holdout: int | None = None) -> Path:
    """Write the plain 10-class 28x28 grey Fashion-MNIST in the hardenkit layout.

    ``OUT/{train,val,test}/<k-name>/NNNNN.png`` with class folders :data:`PLAIN_NAMES`;
    val is the last ``holdout`` (5,000) train images, file numbers are the source indices.
    Files are written by a thread pool (70,000 PNGs take about a minute).

    Args:
        out_dir: Destination folder.
        n_train: Use only the first ``n_train`` images of the (non-held-out) train part.
            Defaults to all 55,000.
        n_test: Use only the first ``n_test`` test images (and at most as many val images).
            Defaults to all 10,000 (and all 5,000 val).
        items: ``{"train": (x, y), "test": (x, y)}`` instead of the Debian package's files.
        holdout: Train images kept for val; see :func:`source_pools`.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DataError: Fashion-MNIST is not installed and no ``items`` were given.

    Example:
        >>> build_plain("/tmp/fm-plain", n_train=1000, n_test=500)  # doctest: +SKIP
        PosixPath('/tmp/fm-plain')
    """
    src = _check_items(items if items is not None else load_fashion_mnist())
    pools = source_pools(src, holdout)
    root = Path(out_dir)
    limits = {"train": n_train, "val": n_test, "test": n_test}
    tasks = []
    for split in ("train", "val", "test"):
        shutil.rmtree(root / split, ignore_errors=True)
        src_name, idx = pools[split]
        if limits[split] is not None:
            idx = idx[: limits[split]]
        x, y = src[src_name]
        tasks += [(root / split / PLAIN_NAMES[int(y[i])] / f"{int(i):05d}.png", x[i]) for i in idx]

    def one(t: tuple[Path, np.ndarray]) -> None:
        write_image(t[0], t[1])

    # create the class folders once, up front, instead of racing mkdirs in the pool
    for d in {t[0].parent for t in tasks}:
        d.mkdir(parents=True, exist_ok=True)
    _run_parallel(one, tasks)
    atomic_write_text(root / "README.txt", (
        f"Plain Fashion-MNIST (hardenkit bench.fmnist), n_train={n_train}, n_test={n_test}; val = the last "
        f"{len(pools['val'][1])} train images; file number = index in the source split.\n"))
    return root


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.fmnist OUT [--quick] [--plain]``: build the benchmark data."""
    ap = argparse.ArgumentParser(prog="python -m bench.fmnist", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="destination folder")
    ap.add_argument("--quick", action="store_true", help="600/150/150 scenes instead of 3000/600/600")
    ap.add_argument("--plain", action="store_true", help="write the plain 10-class data instead of scenes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        if args.plain:
            out = build_plain(args.out, *((5000, 1000) if args.quick else (None, None)))
        else:
            out = build_scenes(args.out, *((600, 150, 150) if args.quick else (3000, 600, 600)), seed=args.seed)
    except DataError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {out} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
