"""Embedding images as data URIs; every decode/encode goes through ``hardenkit.imageio``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hardenkit.errors import InvalidImageError, UsageError
from hardenkit.imageio import read_image, resize, write_image

from ._html import data_uri, img, placeholder

#: Files embedded byte for byte when already small (every browser shows these formats).
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".webp": "image/webp"}
_RAW_LIMIT = 256 * 1024


class Embedder:
    """Turns image files into ``<img>`` elements with data URIs, thumbnailing big ones.

    Unreadable files (missing, truncated, not an image) become a placeholder box naming
    the reason, so a report never fails on one bad image.

    Args:
        max_side: Longest side of an embedded thumbnail in pixels.
    """

    def __init__(self, max_side: int = 240) -> None:
        self.max_side = max_side
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.count = 0

    def __enter__(self) -> "Embedder":
        self._tmp = tempfile.TemporaryDirectory(prefix="hk-report-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def uri(self, path: Path) -> str:
        """The data URI of ``path``.

        Raises:
            InvalidImageError: The file cannot be decoded.
        """
        image = read_image(path)  # decodes: refuses corrupt files before they reach the page
        h, w = image.shape[:2]
        mime = _MIME.get(path.suffix.lower())
        if mime and max(h, w) <= self.max_side and path.stat().st_size <= _RAW_LIMIT:
            return data_uri(path.read_bytes(), mime)
        scale = self.max_side / max(h, w)
        if scale < 1:
            image = resize(image, (max(1, round(h * scale)), max(1, round(w * scale))))
        if self._tmp is None:
            raise RuntimeError("Embedder used outside its `with` block")
        self.count += 1
        tmp = Path(self._tmp.name) / f"t{self.count}.jpg"
        write_image(tmp, image, quality=85)
        return data_uri(tmp.read_bytes(), "image/jpeg")

    def tag(self, path: Path | None, alt: str) -> str:
        """``<img>`` for ``path``, or a placeholder naming why it cannot be shown."""
        if path is None:
            return placeholder("no file recorded")
        try:
            return img(self.uri(path), alt)
        except InvalidImageError as e:
            return placeholder(e.reason)
        except UsageError as e:
            return placeholder(str(e))
