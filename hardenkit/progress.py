"""Progress bars (rich) for long work, and a Keras callback that drives one.

Bars go to stderr so ``--json`` output on stdout stays clean; they disappear when
``HARDENKIT_NO_PROGRESS=1`` or when stderr is not a terminal (CI logs stay readable).

Example:
    >>> from hardenkit.progress import progress_bar
    >>> with progress_bar(3, "work") as advance:
    ...     for _ in range(3):
    ...         advance(1)
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def _noop(n: int = 1) -> None:
    """The progress callback when bars are off."""


def _enabled() -> bool:
    return os.environ.get("HARDENKIT_NO_PROGRESS", "") not in ("1", "true") and sys.stderr.isatty()


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with ETA; yields ``advance(n)``.

    Args:
        total: Number of steps (None: unknown).
        description: Shown left of the bar.
    """
    if not _enabled():
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task(description, total=total)
        def advance(n: int = 1) -> None:
            prog.advance(task, n)

        yield advance


def keras_progress(epochs: int, description: str = "train") -> Any:
    """A Keras callback showing one bar over all epochs, with the latest metrics.

    Example:
        >>> cb = keras_progress(3)  # doctest: +SKIP
        >>> model.fit(x, y, epochs=3, verbose=0, callbacks=[cb])  # doctest: +SKIP
    """
    import keras

    class _Bar(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._ctx: Any = None
            self._adv: Callable[[int], None] | None = None

        def on_train_begin(self, logs: Any = None) -> None:
            self._ctx = progress_bar(epochs, description)
            self._adv = self._ctx.__enter__()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self._adv is not None:
                self._adv(1)

        def on_train_end(self, logs: Any = None) -> None:
            if self._ctx is not None:
                self._ctx.__exit__(None, None, None)
                self._ctx = None

    return _Bar()
