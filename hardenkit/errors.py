"""The typed error hierarchy every hardenkit tool raises and every CLI catches.

Each error carries the process exit code the CLI returns for it, so a script can tell
"your input was wrong" (2) from "a file in the batch was bad" (1).

Example:
    >>> from hardenkit.errors import InvalidImageError
    >>> err = InvalidImageError("cat.jpg", "zero-byte file")
    >>> str(err), err.exit_code
    ('cat.jpg: zero-byte file', 1)
"""

from __future__ import annotations

import os


class HardenkitError(Exception):
    """Base class of every expected failure; the CLI prints ``Error: <message>``."""

    exit_code: int = 1


class UsageError(HardenkitError):
    """The user asked for something that cannot work (bad option, bad path)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is out of range; the message says expected vs got."""


class InvalidImageError(HardenkitError):
    """An image file cannot be decoded; names the file and the reason.

    Args:
        path: The offending file.
        reason: Why it was refused (``zero-byte file``, ``truncated image`` ...).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelLoadError(HardenkitError):
    """A model file cannot be loaded (missing, corrupt, unsafe, no class names)."""

    exit_code = 2


class DataError(HardenkitError):
    """A dataset folder does not follow the expected layout."""

    exit_code = 2
