"""``cam show`` as a library call: overlays for a batch of image files, one result per file.

Images are read, explained and written in batches, so memory stays flat whatever the
number of files. A file that cannot be decoded yields an :class:`InvalidImageError` and
the run goes on. Every output is written atomically (no partial files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hardenkit.errors import InvalidImageError, UsageError
from hardenkit.imageio import iter_images, read_image, to_uint8, write_image
from hardenkit.progress import progress_bar

from .config import ShowConfig
from .methods import METHODS
from .regions import Region, overlay, regions


@dataclass
class ShowResult:
    """What ``cam show`` made of one image.

    Attributes:
        path: The input file.
        score: Sensitive score (summed probability of the sensitive classes).
        method: The CAM method.
        regions: Regions of the map, most important first.
        output: The overlay written.
        grid: The all-methods figure, when asked for.
    """

    path: Path
    score: float
    method: str
    regions: list[Region]
    output: Path
    grid: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line: path, score, method, regions (box lists), output."""
        d: dict[str, Any] = {"path": str(self.path), "score": round(self.score, 6), "method": self.method,
                             "regions": [list(r.box) for r in self.regions], "output": str(self.output)}
        if self.grid is not None:
            d["grid"] = str(self.grid)
        return d


def legend(image: np.ndarray, *texts: str) -> np.ndarray:
    """Write the first of ``texts`` that fits (else the last) in white on a dark strip, top left.

    Example:
        >>> legend(np.zeros((64, 64, 3), np.float32), "sensitive 0.93 (gradcam)", "0.93").shape
        (64, 64, 3)
    """
    import cv2

    img = np.ascontiguousarray(to_uint8(image))
    h, w = img.shape[:2]
    scale = max(0.3, min(h, w) / 500.0)
    thick = max(1, int(round(scale * 2)))
    for text in texts:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        if tw <= 0.95 * w:
            break
    pad = max(2, th // 3)
    cv2.rectangle(img, (0, 0), (min(w, tw + 2 * pad), min(h, th + base + 2 * pad)), (0, 0, 0), -1)
    cv2.putText(img, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def grid_figure(image: np.ndarray, maps: dict[str, np.ndarray], score: float, alpha: float = 0.5) -> np.ndarray:
    """A side-by-side matplotlib figure: the image, then one overlay per method, as RGB float.

    Example:
        >>> grid_figure(np.zeros((8, 8, 3)), {"gradcam": np.zeros((8, 8))}, 0.5).shape[2]
        3
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(maps) + 1
    fig = Figure(figsize=(2.2 * n, 2.6), dpi=100)
    axes = fig.subplots(1, n)
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title(f"sensitive {score:.2f}", fontsize=9)
    for ax, (name, m) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(image, m, alpha))
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    canvas = FigureCanvasAgg(fig)
    fig.tight_layout()
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[..., :3].astype(np.float32) / 255.0


def _collect(inputs: tuple[str, ...]) -> tuple[list[Path], list[InvalidImageError]]:
    files: list[Path] = []
    errors: list[InvalidImageError] = []
    for raw in inputs:
        try:
            files.extend(iter_images([raw]))
        except UsageError:
            errors.append(InvalidImageError(raw, "no such file or folder"))
    return files, errors


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 2
    while stem in used:
        stem, k = f"{path.stem}-{k}", k + 1
    used.add(stem)
    return stem


def show(bundle: Any, config: ShowConfig) -> Iterator[ShowResult | InvalidImageError]:
    """Write a CAM overlay per image and yield one result (or error) per input file.

    Args:
        bundle: A :class:`hardenkit.modelio.ModelBundle`.
        config: The options (see :class:`ShowConfig`).

    Yields:
        :class:`ShowResult` for each image written, :class:`InvalidImageError` for each file
        that could not be read (the run continues).

    Raises:
        UsageError: Unknown target or layer (before any file is written).

    Example:
        >>> for r in show(bundle, ShowConfig(inputs=("photos/",))):  # doctest: +SKIP
        ...     print(r)
    """
    from .explainer import Explainer

    explainer = Explainer(bundle, config.method, config.target, config.layer, config.batch_size)
    others: dict[str, Explainer] = {}
    if config.grid:
        others = {m: (explainer if m == config.method else Explainer(bundle, m, config.target, config.layer,
                                                                    config.batch_size)) for m in METHODS}
    out_dir = Path(config.out)
    files, missing = _collect(config.inputs)
    yield from missing
    used: set[str] = set()
    with progress_bar(len(files), "cam") as advance:
        for start in range(0, len(files), config.batch_size):
            paths, images = [], []
            for p in files[start:start + config.batch_size]:
                try:
                    images.append(read_image(p))
                    paths.append(p)
                except InvalidImageError as e:
                    advance(1)
                    yield e
            if not images:
                continue
            scores = bundle.sensitive_score(images, config.batch_size)
            maps = explainer(images)
            grids = {m: ex(images) for m, ex in others.items()}
            for j, (p, img, m) in enumerate(zip(paths, images, maps)):
                stem = _unique_stem(p, used)
                out = out_dir / f"{stem}.cam.png"
                what = config.method if config.target == "sensitive" else f"{config.method}: {config.target}"
                write_image(out, legend(overlay(img, m, config.alpha), f"sensitive {scores[j]:.2f} ({what})",
                                        f"sensitive {scores[j]:.2f}", f"{scores[j]:.2f}"))
                grid = None
                if others:
                    grid = out_dir / f"{stem}.grid.png"
                    write_image(grid, grid_figure(img, {k: v[j] for k, v in grids.items()}, float(scores[j]),
                                                  config.alpha))
                advance(1)
                yield ShowResult(p, float(scores[j]), config.method, regions(m, config.threshold), out, grid)


def ensure_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder, or fail with a usage error naming it.

    Raises:
        UsageError: It exists as a file or cannot be created.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{p}: cannot create output folder ({e.strerror or e})") from None
    return p
