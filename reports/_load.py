"""Reading the files runs save, with one-line ``<path>: <reason>`` errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from hardenkit.errors import UsageError


def existing_dir(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or UsageError when it is not a folder."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{p}: no such folder (expected a {what})")
    return p


def read_json(path: Path, hint: str = "") -> Any:
    """Parse a JSON file (``NaN`` allowed, as Python's json writes it).

    Raises:
        UsageError: Missing, unreadable or not valid JSON.
    """
    if not path.is_file():
        raise UsageError(f"{path}: no such file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def read_csv(path: Path, columns: Sequence[str], hint: str = "") -> list[dict[str, str]]:
    """Rows of a CSV file with a header holding at least ``columns``.

    Raises:
        UsageError: Missing, unreadable, or a required column is absent.
    """
    if not path.is_file():
        raise UsageError(f"{path}: no such file{hint}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; "
                                 f"expected a header with {','.join(columns)}")
            return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path}: unreadable CSV ({e})") from None


def opt_float(value: Any, where: str) -> float | None:
    """A float, or None for empty/null/NaN; UsageError for anything else."""
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected a number, got {value!r}") from None
    return None if math.isnan(f) else f
