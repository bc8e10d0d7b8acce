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

# Bumped whenever the demo generator (data) or the baseline recipe (model) changes, so a
# cache filled by older code is never mistaken for the current demo: figures in the README
# and bench/RESULTS.md are measured on the current recipe.
DEMO_DATA_VERSION = 1
DEMO_MODEL_VERSION = 3


def cache_dir() -> Path:
    """The hardenkit cache folder (not created here)."""
    env = os.environ.get("HARDENKIT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hardenkit"


def demo_data_dir() -> Path:
    """Folder of the cached built-in demo data."""
    return cache_dir() / f"demo-data-v{DEMO_DATA_VERSION}"


def demo_model_path() -> Path:
    """Path of the cached demo model (trained on first use)."""
    return cache_dir() / f"demo-model-d{DEMO_DATA_VERSION}-v{DEMO_MODEL_VERSION}.keras"


def ensure_demo_data(quiet: bool = False) -> Path:
    """Generate the demo data into the cache if it is not there yet; return its folder.

    Example:
        >>> ensure_demo_data()  # doctest: +SKIP
        PosixPath('/root/.cache/hardenkit/demo-data-v1')
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
        PosixPath('/root/.cache/hardenkit/demo-model-d1-v3.keras')
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
