"""Where hardenkit keeps its cache: the demo data and the demo model.

``HARDENKIT_CACHE`` overrides the folder; otherwise ``$XDG_CACHE_HOME/hardenkit`` or
``~/.cache/hardenkit``.

Example:
    >>> from hardenkit.paths import cache_dir
    >>> cache_dir().name in ("hardenkit",) or True
    True
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """The hardenkit cache folder (not created here)."""
    env = os.environ.get("HARDENKIT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hardenkit"


def demo_data_dir() -> Path:
    """Folder of the cached built-in demo data."""
    return cache_dir() / "demo-data"


def demo_model_path() -> Path:
    """Path of the cached demo model (trained on first use)."""
    return cache_dir() / "demo-model.keras"


def ensure_demo_data(quiet: bool = False) -> Path:
    """Generate the demo data into the cache if it is not there yet; return its folder.

    Example:
        >>> ensure_demo_data()  # doctest: +SKIP
        PosixPath('/root/.cache/hardenkit/demo-data')
    """
    from .demo import DEFAULT_COUNTS, generate
    from .progress import progress_bar

    d = demo_data_dir()
    done = d / "README.txt"
    if done.exists():
        return d
    if not quiet:
        print(f"note: generating the built-in demo data in {d}", file=sys.stderr)
    total = sum(DEFAULT_COUNTS.values()) + 400
    tmp = d.with_name(d.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    with progress_bar(total, "demo data") as adv:
        generate(tmp, progress=adv)
    os.replace(tmp, d)
    return d


def ensure_demo_model(quiet: bool = False) -> Path:
    """Train the demo model into the cache if it is not there yet; return its path.

    Example:
        >>> ensure_demo_model()  # doctest: +SKIP
        PosixPath('/root/.cache/hardenkit/demo-model.keras')
    """
    p = demo_model_path()
    if p.exists():
        return p
    data = ensure_demo_data(quiet)
    if not quiet:
        print(f"note: training the demo model once, cached at {p}", file=sys.stderr)
    from .train import TrainConfig, train_baseline

    train_baseline(TrainConfig(data=data, out=p))
    return p
