"""The built-in demo data: procedural moderation-like scenes with exact masks.

Each 64x64 scene has a photo-like or textured background and a few objects. The
*sensitive* pattern is a warm, skin-toned ellipse with a dark centre. Look-alike
distractors share all but one of its features: the same ellipse without the centre, a
cool-toned ellipse with the centre, or a skin-toned square with the centre. Sensitive
scenes hold 1-3 sensitive patterns (so "the model found one of the two" can be measured)
plus distractors; normal scenes hold 1-3 distractors. Nothing is downloaded; the same seed
gives the same files.

Example:
    >>> from hardenkit.demo import generate_scene
    >>> img, mask, n = generate_scene(np.random.default_rng(0), sensitive=True)
    >>> img.shape, mask.dtype, n >= 1
    ((64, 64, 3), dtype('bool'), True)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .imageio import write_image

CLASS_NAMES = ("normal", "sensitive")
DEFAULT_COUNTS = {"train": 1600, "val": 400, "test": 400}
_SPLIT_IDS = {"train": 1, "val": 2, "test": 3, "pool": 4}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    kind = rng.integers(0, 3)
    if kind == 0:  # smooth photo-like field: upsampled low-resolution colour noise
        low = rng.random((4, 4, 3)).astype(np.float32)
        bg = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # stripes at a random angle
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ang = rng.uniform(0, np.pi)
        freq = rng.uniform(0.15, 0.6)
        s = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)))
        c1, c2 = rng.random(3), rng.random(3)
        bg = (s[..., None] * c1 + (1 - s[..., None]) * c2).astype(np.float32)
    else:  # soft blobs
        bg = np.ones((size, size, 3), np.float32) * rng.random(3).astype(np.float32)
        for _ in range(rng.integers(3, 7)):
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            ax = tuple(int(v) for v in rng.integers(6, size // 2, 2))
            layer = bg.copy()
            cv2.ellipse(layer, c, ax, float(rng.uniform(0, 180)), 0, 360, rng.random(3).tolist(), -1)
            bg = 0.5 * bg + 0.5 * layer
    return np.clip(bg, 0, 1).astype(np.float32)


def _skin(rng: np.random.Generator) -> list[float]:
    base = np.array([0.87, 0.66, 0.52]) * rng.uniform(0.7, 1.1)
    return np.clip(base + rng.normal(0, 0.03, 3), 0, 1).tolist()


def _cool(rng: np.random.Generator) -> list[float]:
    return np.clip(np.array([0.45, 0.62, 0.85]) * rng.uniform(0.7, 1.1) + rng.normal(0, 0.04, 3), 0, 1).tolist()


def _draw(img: np.ndarray, mask: np.ndarray | None, kind: str, c: tuple[int, int], r: int,
          rng: np.random.Generator) -> None:
    import cv2

    ax = (r, int(r * rng.uniform(0.65, 1.0)))
    ang = float(rng.uniform(0, 180))
    col = _cool(rng) if kind == "cool" else _skin(rng)
    if kind == "square":
        cv2.rectangle(img, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), col, -1)
    else:
        cv2.ellipse(img, c, ax, ang, 0, 360, col, -1, lineType=cv2.LINE_AA)
    if kind != "plain":
        dark = (np.array(col) * rng.uniform(0.2, 0.35)).tolist()
        cv2.circle(img, c, max(2, int(round(r * 0.45))), dark, -1, lineType=cv2.LINE_AA)
    if mask is not None:
        m = np.zeros(mask.shape, np.uint8)
        cv2.ellipse(m, c, ax, ang, 0, 360, 1, -1)
        mask |= m.astype(bool)


def generate_scene(
    rng: np.random.Generator, sensitive: bool, size: int = 64
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one scene.

    Args:
        rng: Source of all randomness.
        sensitive: Plant 1-3 sensitive patterns (else only distractors).
        size: Side length in pixels. Defaults to 64.

    Returns:
        (image (size, size, 3) float32 RGB, mask (size, size) bool, number of sensitive items).
    """
    import cv2

    img = _background(rng, size)
    mask = np.zeros((size, size), bool)
    n_sens = int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17])) if sensitive else 0
    n_dist = int(rng.integers(0, 3)) if sensitive else int(rng.integers(1, 4))
    kinds = ["sensitive"] * n_sens + [str(rng.choice(["plain", "cool", "square"])) for _ in range(n_dist)]
    rng.shuffle(kinds)
    placed: list[tuple[int, int, int]] = []
    scale = size / 64.0
    for kind in kinds:
        r = int(rng.integers(4, 9) * scale)
        for _ in range(30):
            c = (int(rng.integers(r + 1, size - r - 1)), int(rng.integers(r + 1, size - r - 1)))
            if all((c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2 > (r + p[2] + 2) ** 2 for p in placed):
                break
        placed.append((c[0], c[1], r))
        _draw(img, mask if kind == "sensitive" else None, kind, c, r, rng)
    # global photometric jitter, sensor noise and occasional blur
    img = img * rng.uniform(0.75, 1.15) + rng.uniform(-0.08, 0.08)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    img = img + rng.normal(0, rng.uniform(0.01, 0.05), img.shape)
    return np.clip(img, 0, 1).astype(np.float32), mask, n_sens


def generate(
    out_dir: str | os.PathLike[str],
    counts: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
    pool: int = 400,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the demo dataset in the hardenkit layout, with masks and an unlabelled pool.

    Writes ``{train,val,test}/{normal,sensitive}/NNNNN.jpg``, masks for sensitive images
    at ``masks/<split>/sensitive/NNNNN.png``, ``pool/NNNNN.jpg`` (unlabelled) and
    ``pool-labels.csv`` (its true labels, for label-file workflows).

    Args:
        out_dir: Destination folder.
        counts: Images per split. Defaults to ``DEFAULT_COUNTS`` (1600/400/400).
        size: Image side. Defaults to 64.
        seed: Same seed, same files. Defaults to 0.
        pool: Number of unlabelled pool images. Defaults to 400.
        progress: Called with 1 per image written.

    Example:
        >>> generate("/tmp/hk-demo", {"train": 8, "val": 4, "test": 4}, pool=0)  # doctest: +SKIP
        PosixPath('/tmp/hk-demo')
    """
    root = Path(out_dir)
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    for split, n in list(counts.items()) + [("pool", pool)]:
        rows = []
        for i in range(n):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            sens = bool(i % 2)
            img, mask, _ = generate_scene(rng, sens, size)
            cname = CLASS_NAMES[int(sens)]
            if split == "pool":
                write_image(root / "pool" / f"{i:05d}.jpg", img, quality=92)
                rows.append((f"{i:05d}.jpg", cname))
            else:
                write_image(root / split / cname / f"{i:05d}.jpg", img, quality=92)
                if sens:
                    write_image(root / "masks" / split / cname / f"{i:05d}.png", mask.astype(np.float32))
            if progress is not None:
                progress(1)
        if split == "pool" and n:
            with open(root / "pool-labels.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["file", "label"])
                w.writerows(rows)
    (root / "README.txt").write_text(
        f"hardenkit demo data, seed={seed}, size={size}, counts={counts}, pool={pool}.\n"
        "Regenerate with: python -m hardenkit.demo OUT_DIR\n"
    )
    return root


if __name__ == "__main__":  # pragma: no cover
    import sys

    generate(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
