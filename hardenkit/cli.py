"""Shared pieces of the thin command-line tools (click): error handling, common options.

Nothing here imports TensorFlow, so ``--help`` stays fast.

Example:
    >>> import click
    >>> @click.command()
    ... @handle_errors
    ... def hello() -> None:
    ...     raise UsageError("no greeting configured")
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, TypeVar

import click

from .errors import HardenkitError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter before it is imported.

    The log level, and :func:`hardenkit.nativelog.filter_native_stderr` for the notices
    that ignore it. oneDNN stays on (``TF_ENABLE_ONEDNN_OPTS=0`` would silence its notice
    too, but makes training and attacks about 2x slower on CPU).
    """
    from .nativelog import filter_native_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    filter_native_stderr()


def handle_errors(fn: F) -> F:
    """Turn :class:`HardenkitError` into ``Error: ...`` on stderr and its exit code.

    Also maps Ctrl-C to exit code 130. Unexpected exceptions keep their traceback: they
    are bugs, and the traceback is what a bug report needs.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_tensorflow()
        try:
            return fn(*args, **kwargs)
        except HardenkitError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def warn_if_no_images(folder: str | os.PathLike[str]) -> bool:
    """Print ``warning: DIR: no images in this folder (...)`` if ``folder`` is a folder holding
    no image files (what a typo'd or not-yet-filled input folder looks like); return whether it did.

    Example:
        >>> warn_if_no_images("/nonexistent")  # not a folder: nothing to say
        False
    """
    from pathlib import Path

    from .imageio import IMAGE_EXTENSIONS, has_images

    if not Path(folder).is_dir() or has_images(folder):
        return False
    click.echo(f"warning: {folder}: no images in this folder (looked for {' '.join(IMAGE_EXTENSIONS)}, "
               "sub-folders included)", err=True)
    return True


def model_options(fn: F) -> F:
    """Add ``--model``, ``--unsafe-model`` and ``--sensitive`` to a command."""
    fn = click.option("--sensitive", default=None, metavar="NAME[,NAME]",
                      help="Sensitive class names (default: those saved with the model).")(fn)
    fn = click.option("--unsafe-model", is_flag=True,
                      help="Allow models containing Lambda layers (arbitrary Python code). Only for models you trust.")(fn)
    fn = click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                      help="Keras model (.keras/.h5) with its class names. Default: the cached demo model "
                           "(trained on first use).")(fn)
    return fn


def load_bundle(model_path: str | None, unsafe_model: bool = False, sensitive: str | None = None) -> Any:
    """Load ``model_path``, or the cached demo model with a one-line notice when None.

    Example:
        >>> load_bundle(None)  # doctest: +SKIP
    """
    from .modelio import load_model
    from .paths import ensure_demo_model

    if model_path is None:
        path = ensure_demo_model()
        click.echo(f"note: no --model given; using the demo model {path}", err=True)
        model_path = str(path)
    return load_model(model_path, unsafe=unsafe_model, sensitive=sensitive)


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout (NaN becomes null)."""
    click.echo(json.dumps(_clean(obj), sort_keys=False))


def _clean(obj: Any) -> Any:
    import math

    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


def parse_fraction(value: str) -> float:
    """Parse ``8/255`` or ``0.03`` into a float.

    Raises:
        UsageError: Not a number or fraction.

    Example:
        >>> round(parse_fraction("8/255"), 5)
        0.03137
    """
    try:
        if "/" in value:
            a, b = value.split("/", 1)
            return float(a) / float(b)
        return float(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"expected a number or fraction like 8/255, got {value!r}") from None


def format_budget(eps: float) -> str:
    """An L-inf budget in units of a pixel level, the way ``--eps`` takes it (inverse of
    :func:`parse_fraction` for such budgets).

    Example:
        >>> format_budget(8 / 255), format_budget(0.05)
        ('8/255', '12.8/255')
    """
    return f"{eps * 255:.3g}/255"
