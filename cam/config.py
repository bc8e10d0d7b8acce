"""Frozen, validated configurations of the ``cam`` commands (no TensorFlow import).

Example:
    >>> ShowConfig(inputs=("a.jpg",), alpha=0.4).alpha
    0.4
    >>> EvalConfig(data="d", methods=("all",)).methods[:2]
    ('gradcam', 'gradcam++')
"""

from __future__ import annotations

from dataclasses import dataclass

from hardenkit.errors import ConfigError

from .methods import DEFAULT_METHOD, METHODS


def _check_method(name: str) -> None:
    if name not in METHODS:
        raise ConfigError(f"expected method in {sorted(METHODS)}, got {name!r}")


@dataclass(frozen=True)
class ShowConfig:
    """Options of ``cam show``.

    Attributes:
        inputs: Image files and/or folders.
        out: Output folder for ``<stem>.cam.png`` (and ``<stem>.grid.png``).
        method: A key of :data:`cam.METHODS`.
        target: ``sensitive``, ``top`` or a class name.
        layer: Target layer name, or None for automatic.
        alpha: Heatmap opacity in [0, 1].
        grid: Also write a side-by-side figure of all methods.
        threshold: Region threshold (fraction of the map maximum) for the reported regions.
        batch_size: Images per model batch.
    """

    inputs: tuple[str, ...]
    out: str = "cam-out"
    method: str = DEFAULT_METHOD
    target: str = "sensitive"
    layer: str | None = None
    alpha: float = 0.5
    grid: bool = False
    threshold: float = 0.5
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("expected at least one image file or folder, got none")
        _check_method(self.method)
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"expected alpha in [0, 1], got {self.alpha}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"expected threshold in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"expected batch size >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``cam eval``.

    Attributes:
        data: Dataset folder.
        split: Split to evaluate on.
        methods: Keys of :data:`cam.METHODS`; ``("all",)`` expands to every method.
        max_images: Seeded random subset size, or None for the whole split.
        steps: Deletion/insertion steps.
        batch_size: Images per model batch.
        out: Folder to save ``cam-eval.json`` (with curves) in, or None.
    """

    data: str
    split: str = "test"
    methods: tuple[str, ...] = (DEFAULT_METHOD,)
    max_images: int | None = None
    steps: int = 16
    batch_size: int = 32
    out: str | None = None

    def __post_init__(self) -> None:
        methods = tuple(self.methods) or (DEFAULT_METHOD,)
        if "all" in methods:
            methods = tuple(METHODS)
        for m in methods:
            _check_method(m)
        object.__setattr__(self, "methods", tuple(dict.fromkeys(methods)))
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"expected max images >= 1, got {self.max_images}")
        if self.steps < 1:
            raise ConfigError(f"expected steps >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"expected batch size >= 1, got {self.batch_size}")
