"""The one place that decodes and encodes images.

Every tool reads images through :func:`read_image` (RGB, float32, range [0, 1]) and writes
them through :func:`write_image` (atomic: temp file + rename). Decoding uses Pillow, which
reads the header before the pixels, so a decompression bomb is refused before it is decoded;
16-bit, grey, palette and alpha images are normalised here and nowhere else.

Example:
    >>> import numpy as np, tempfile, os
    >>> from hardenkit.imageio import read_image, write_image
    >>> d = tempfile.mkdtemp()
    >>> write_image(os.path.join(d, "a.png"), np.zeros((4, 5, 3), np.float32))
    >>> read_image(os.path.join(d, "a.png")).shape
    (4, 5, 3)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError, UsageError

#: File endings treated as images when walking folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

#: Default refusal limit: 100 megapixels (a 10,000 x 10,000 image).
DEFAULT_MAX_PIXELS = 100_000_000

#: Alpha is composited on this neutral grey so transparent areas carry no signal.
NEUTRAL_BACKGROUND = 0.5

_FORMAT_BY_EXT = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF",
}


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image file ending (case-insensitive).

    Example:
        >>> is_image_path("x/IMG_1.JPG"), is_image_path("notes.txt")
        (True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_images(paths: Iterable[str | os.PathLike[str]], recursive: bool = True) -> Iterator[Path]:
    """Yield image files from a mix of files and folders, folders walked in sorted order.

    Files named explicitly are yielded whatever their ending (so a bad one gets a clear
    error later); folders contribute only files with an image ending. Hidden files are skipped.

    Args:
        paths: Files and/or folders.
        recursive: Walk sub-folders. Defaults to True.

    Raises:
        UsageError: A path does not exist.

    Example:
        >>> list(iter_images([]))
        []
    """
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(p.glob(pattern)):
                if _listed(f):
                    yield f
        elif p.exists() or p.is_symlink():
            yield p
        else:
            raise UsageError(f"{p}: no such file or folder")


def _listed(f: Path) -> bool:
    """Whether a file met walking a folder is one :func:`iter_images` yields."""
    return f.is_file() and is_image_path(f) and not f.name.startswith(".")


def has_images(folder: str | os.PathLike[str]) -> bool:
    """Whether walking ``folder`` (sub-folders included) meets a file :func:`iter_images` would
    yield; stops at the first, without listing or sorting the rest.

    Example:
        >>> has_images("/nonexistent")
        False
    """
    return any(_listed(f) for f in Path(folder).rglob("*"))


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise InvalidImageError(path, "is a directory, not an image")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidImageError(path, "no such file") from None
    except OSError as e:
        raise InvalidImageError(path, f"unreadable ({e.strerror})") from None
    if size == 0:
        raise InvalidImageError(path, "zero-byte file")
    if not os.access(path, os.R_OK):
        raise InvalidImageError(path, "unreadable (permission denied)")


def _to_float_rgb(img: Image.Image, background: float) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        g = np.clip(arr / top, 0.0, 1.0).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        g = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(g[..., None], 3, axis=2)
    return pixels_to_float(_uint8_rgb_or_rgba(img), background)  # alpha composited there


def _uint8_rgb_or_rgba(img: Image.Image) -> np.ndarray:
    """An 8-bit image's pixels as uint8 RGBA when it has a (not fully opaque) alpha channel, else RGB.

    A fully opaque alpha channel is dropped: compositing it is a no-op that costs a float pass
    and twice the memory downstream (mosaic censors uint8 RGB in 8 bits), and the RGB values are
    exactly what a reader shows. Common for screenshots and exported graphics."""
    mode = img.mode
    if not (mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)):
        return np.asarray(img if mode == "RGB" else img.convert("RGB"))
    rgba = img if mode == "RGBA" else img.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # C-level min of the alpha band, no array needed
        return np.asarray(rgba.convert("RGB"))
    return np.asarray(rgba)


def read_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: float = NEUTRAL_BACKGROUND,
) -> np.ndarray:
    """Decode an image file to RGB float32 in [0, 1], shape (H, W, 3).

    JPEG, PNG (8/16-bit, grey, palette, RGBA), BMP, WebP, TIFF and GIF (first frame) are
    read; EXIF orientation is applied; alpha is composited on ``background``.

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels than this (decompression bombs), checked
            from the header before decoding. Defaults to 100 megapixels.
        background: Grey level alpha is composited on. Defaults to 0.5.

    Returns:
        The image as a float32 array.

    Raises:
        InvalidImageError: Zero-byte, truncated, not an image, unreadable, a directory, or
            too large; the message names the file and the reason.

    Example:
        >>> read_image("photo.jpg").dtype  # doctest: +SKIP
        dtype('float32')
    """
    return _read(Path(path), max_pixels, background, None)


def read_image_preview(
    path: str | os.PathLike[str],
    min_side: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: float = NEUTRAL_BACKGROUND,
    out_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A cheap preview of an image (for scoring), plus its full-size pixels when they came free.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, far cheaper than a full
    decode) while its short side stays >= ``min_side``; other images are decoded in full. Then an image whose short side exceeds ``min_side`` is shrunk (area, 8-bit
    pixels) to that side before the float conversion, the costly part on big images. Errors
    and the ``max_pixels`` check are those of :func:`read_image`.

    Returns:
        (preview, full): the preview as RGB float32 in [0, 1] (short side ``min_side`` where
        the image is that large); ``full`` is None when the image was decoded at reduced
        size (call :func:`read_image`), the preview itself when that is the full image, or
        else the full-size pixels (uint8 or float32) for :func:`pixels_to_float`, which gives
        exactly what :func:`read_image` returns.
        With ``out_size`` = (height, width) the preview is instead resized straight to that
        size (:func:`pixels_at`, e.g. a model's input size), after the same reduced decode;
        ``full`` is then None or the full-size pixels.

    Example:
        >>> preview, full = read_image_preview("scan.png", 256)  # a 4000x3000 PNG  # doctest: +SKIP
        >>> preview.shape, full.dtype  # doctest: +SKIP
        ((256, 341, 3), dtype('uint8'))
    """
    pixels, reduced = _read(Path(path), max_pixels, background, min_side, raw=True)
    preview = preview_pixels(pixels, min_side, out_size, background)
    if reduced:
        return preview, None
    # the preview is the full image (as floats) when nothing was shrunk
    return preview, (preview if out_size is None and preview.shape[:2] == pixels.shape[:2] else pixels)


def _raw_pixels(img: Image.Image, background: float) -> np.ndarray:
    """The upright pixels of a loaded image: uint8 RGB or RGBA (the float conversion deferred
    to :func:`pixels_to_float`), or float32 RGB for modes :func:`_to_float_rgb` handles in float."""
    # exif_transpose copies the image even when it is upright: only call it when needed
    upright = (ImageOps.exif_transpose(img) or img) if img.getexif().get(0x0112, 1) != 1 else img
    if upright.mode in ("RGB", "L", "CMYK", "YCbCr", "P", "RGBA", "LA", "PA"):
        return _uint8_rgb_or_rgba(upright)
    return _to_float_rgb(upright, background)


def shrink_pixels(pixels: np.ndarray, min_side: int, background: float = NEUTRAL_BACKGROUND) -> np.ndarray | None:
    """Decoded ``pixels`` (8-bit RGB/RGBA or float RGB) area-shrunk to a short side of
    ``min_side``, as float32 RGB in [0, 1] (alpha composited over ``background``), or None when
    they are not larger than that. Shrinking the 8-bit pixels first spares a full-size float copy.

    Example:
        >>> shrink_pixels(np.zeros((40, 80, 3), np.uint8), 10).shape
        (10, 20, 3)
        >>> shrink_pixels(np.zeros((8, 8, 3), np.uint8), 10) is None
        True
    """
    h, w = pixels.shape[:2]
    if min(h, w) <= min_side:
        return None
    s = min_side / min(h, w)
    return _area_shrink(pixels, (max(1, round(h * s)), max(1, round(w * s))), background)


def preview_pixels(pixels: np.ndarray, min_side: int, out_size: tuple[int, int] | None = None,
                   background: float = NEUTRAL_BACKGROUND) -> np.ndarray:
    """Decoded ``pixels`` as a float32 RGB preview: resized to ``out_size`` (:func:`pixels_at`) when
    given, else area-shrunk to a short side of ``min_side`` where larger (:func:`shrink_pixels`),
    else converted as they are (:func:`pixels_to_float`).

    Example:
        >>> px = np.zeros((40, 80, 3), np.uint8)
        >>> preview_pixels(px, 10).shape, preview_pixels(px, 10, (8, 8)).shape, preview_pixels(px, 64).shape
        ((10, 20, 3), (8, 8, 3), (40, 80, 3))
    """
    if out_size is not None:
        return pixels_at(pixels, out_size, background)
    small = shrink_pixels(pixels, min_side, background)
    return small if small is not None else pixels_to_float(pixels, background)


def pixels_at(pixels: np.ndarray, size: tuple[int, int], background: float = NEUTRAL_BACKGROUND) -> np.ndarray:
    """Decoded ``pixels`` resized to ``size`` = (height, width) as float32 RGB in [0, 1]: what
    :func:`resize` of :func:`pixels_to_float` gives (area when shrinking both sides, else
    bilinear), but a shrink is done on the 8-bit pixels, sparing the full-size float copy
    (the values then differ by 8-bit rounding, within one level).

    A model's input straight from the decoded file: ``bundle.prepare`` of it is a no-op.

    Example:
        >>> pixels_at(np.zeros((40, 80, 3), np.uint8), (8, 8)).shape
        (8, 8, 3)
    """
    h, w = pixels.shape[:2]
    if (h, w) == tuple(size) or not (size[0] < h and size[1] < w):
        return resize(pixels_to_float(pixels, background), size)
    return _area_shrink(pixels, size, background)


def _area_shrink(pixels: np.ndarray, size: tuple[int, int], background: float) -> np.ndarray:
    import cv2

    dsize = (int(size[1]), int(size[0]))
    if pixels.dtype == np.uint8 and pixels.shape[2] == 4:  # shrink premultiplied, then composite
        a = np.ascontiguousarray(pixels[..., 3])
        pm = cv2.multiply(np.ascontiguousarray(pixels[..., :3]), cv2.merge([a, a, a]), dtype=cv2.CV_16U)
        pm = cv2.resize(pm, dsize, interpolation=cv2.INTER_AREA).astype(np.float32) / np.float32(255.0 * 255.0)
        sa = cv2.resize(a, dsize, interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] / np.float32(255.0)
        return np.clip(pm + np.float32(background) * (1.0 - sa), 0.0, 1.0).astype(np.float32)
    return pixels_to_float(cv2.resize(pixels, dsize, interpolation=cv2.INTER_AREA), background)


def read_image_pixels(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: float = NEUTRAL_BACKGROUND,
) -> np.ndarray:
    """The decoded, upright pixels without the float conversion: uint8 RGB (8-bit RGB, grey,
    palette, CMYK images, and images whose alpha is fully opaque), uint8 RGBA (images with
    transparency), or for other modes the float32
    :func:`read_image` result. :func:`pixels_to_float` gives exactly :func:`read_image`'s array.

    Errors and the ``max_pixels`` check are those of :func:`read_image`.

    Example:
        >>> read_image_pixels("photo.jpg").dtype  # doctest: +SKIP
        dtype('uint8')
    """
    return _read(Path(path), max_pixels, background, None, raw=True)[0]


def pixels_to_float(pixels: np.ndarray, background: float = NEUTRAL_BACKGROUND) -> np.ndarray:
    """8-bit RGB (or RGBA, composited on ``background``) pixels as RGB float32 in [0, 1], exactly
    as :func:`read_image` converts them; float32 input is returned as is.

    Example:
        >>> (pixels_to_float(np.array([[[0, 51, 255]]], np.uint8)) * 255).round().tolist()
        [[[0.0, 51.0, 255.0]]]
        >>> pixels_to_float(np.array([[[255, 255, 255, 0]]], np.uint8)).tolist()
        [[[0.5, 0.5, 0.5]]]
    """
    if pixels.dtype != np.uint8:
        return np.asarray(pixels, np.float32)
    scale = np.float32(1.0 / 255.0)
    if pixels.shape[-1] == 4:  # bg + a * (rgb - bg), in place, float32 throughout
        a = pixels[..., 3:4].astype(np.float32)
        a *= scale
        out = pixels[..., :3].astype(np.float32)
        out *= scale
        out -= np.float32(background)
        out *= a
        out += np.float32(background)
        return out
    out = pixels.astype(np.float32)
    out *= scale
    return out


def _read(p: Path, max_pixels: int, background: float, min_side: int | None, raw: bool = False) -> Any:
    _check_file(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise InvalidImageError(
                        p, f"too large: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}"
                    )
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                k = _draft(img, min_side) if min_side is not None and img.format == "JPEG" else 1
                fast = _png_pixels(p, img)
                if fast is None:
                    fast = _jpeg_pixels(p, img, k)
                if fast is not None:
                    return (fast, img.size != (w, h)) if raw else pixels_to_float(fast, background)
                img.load()
                if not raw:
                    upright: Image.Image = ImageOps.exif_transpose(img) or img
                    return _to_float_rgb(upright, background)
                return _raw_pixels(img, background), img.size != (w, h)
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(p, "not an image (unrecognised format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InvalidImageError(p, f"too large ({e})") from None
    except PermissionError:
        raise InvalidImageError(p, "unreadable (permission denied)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg.lower() or isinstance(e, EOFError) or "broken data" in msg.lower():
            raise InvalidImageError(p, f"truncated image ({msg})") from None
        raise InvalidImageError(p, f"corrupt image ({msg})") from None


def _png_pixels(p: Path, img: Image.Image) -> np.ndarray | None:
    """An 8-bit RGB, RGBA or grey PNG decoded by OpenCV (a quarter faster than Pillow on big
    images), as :func:`_uint8_rgb_or_rgba` gives it: uint8 RGB, or RGBA when the alpha is not
    fully opaque. None for anything else (palette, 16-bit, transparency key, EXIF, animation,
    or what OpenCV cannot decode), which Pillow then reads, and reports if broken."""
    if img.format != "PNG" or img.mode not in ("RGB", "RGBA", "L") or "transparency" in img.info \
            or "exif" in img.info or getattr(img, "n_frames", 1) > 1:
        return None
    import cv2

    try:
        data = np.fromfile(p, np.uint8)
    except OSError:
        return None
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint8:
        return None
    want = {"L": 2, "RGB": 3, "RGBA": 4}[img.mode]
    got = 2 if arr.ndim == 2 else arr.shape[2]
    if got != want or arr.shape[:2] != (img.size[1], img.size[0]):
        return None
    if got == 2:
        return np.asarray(cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB))
    if got == 3:
        return np.asarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB))
    if cv2.minMaxLoc(np.ascontiguousarray(arr[..., 3]))[0] == 255:  # opaque: drop the alpha
        return np.asarray(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB))
    return np.asarray(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA))


def _draft(img: Image.Image, min_side: int) -> int:
    """Ask libjpeg for the smallest DCT scale (1/2, 1/4, 1/8) keeping the short side >= min_side;
    returns the scale Pillow chose (1: full size; 0 if its size matches none)."""
    w, h = img.size
    k = 1
    while k < 8 and min(w, h) // (2 * k) >= min_side:
        k *= 2
    if k > 1:
        img.draft(img.mode, (-(-w // k), -(-h // k)))
    return next((s for s in (1, 2, 4, 8) if img.size == (-(-w // s), -(-h // s))), 0)


def _jpeg_pixels(src: Path | bytes, img: Image.Image, scale: int = 1) -> np.ndarray | None:
    """A plain 8-bit RGB or grey JPEG decoded by OpenCV at 1/``scale`` size (libjpeg's DCT scaling,
    as Pillow's ``draft``), as uint8 RGB: the same pixels as Pillow's decode (checked on every
    OpenCV sample photo), a fifth faster, and without Pillow's Python per image. None for
    anything else (CMYK, an EXIF orientation to apply, a file that does not end with the
    end-of-image marker: OpenCV would return a truncated JPEG's missing rows as grey instead
    of failing), which Pillow then reads, and reports if broken."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or scale not in (1, 2, 4, 8):
        return None
    if img.getexif().get(0x0112, 1) != 1:
        return None
    import cv2

    try:
        data = np.frombuffer(src, np.uint8) if isinstance(src, bytes) else np.fromfile(src, np.uint8)
    except OSError:
        return None
    if len(data) < 4 or data[-2] != 0xFF or data[-1] != 0xD9:
        return None
    grey = img.mode == "L"
    flags = {1: cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR,
             2: cv2.IMREAD_REDUCED_GRAYSCALE_2 if grey else cv2.IMREAD_REDUCED_COLOR_2,
             4: cv2.IMREAD_REDUCED_GRAYSCALE_4 if grey else cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_GRAYSCALE_8 if grey else cv2.IMREAD_REDUCED_COLOR_8}[scale]
    arr = cv2.imdecode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    w, h = img.size  # after draft: the reduced size
    if arr is None or arr.dtype != np.uint8 or arr.shape[:2] != (h, w) or arr.ndim != (2 if grey else 3):
        return None
    return np.asarray(cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB if grey else cv2.COLOR_BGR2RGB))


def read_mask(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask (white = sensitive) as a bool array (H, W).

    Args:
        path: Mask image (any format :func:`read_image` reads).
        size: Optional (height, width) to resize to (nearest neighbour).

    Example:
        >>> read_mask("masks/test/sensitive/0001.png").dtype  # doctest: +SKIP
        dtype('bool')
    """
    import cv2

    m = read_image(path).mean(axis=2) > 0.5
    if size is not None and m.shape != tuple(size):
        m = cv2.resize(m.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    return m


def image_format_for(path: str | os.PathLike[str]) -> str:
    """The Pillow format name written for a path's ending (``.jpg`` -> ``JPEG``).

    Raises:
        UsageError: The ending is not an image format hardenkit writes.

    Example:
        >>> image_format_for("out/a.webp")
        'WEBP'
    """
    ext = Path(path).suffix.lower()
    if ext not in _FORMAT_BY_EXT:
        raise UsageError(f"{path}: cannot write images with ending {ext or '(none)'!r}; "
                         f"expected one of {', '.join(sorted(_FORMAT_BY_EXT))}")
    return _FORMAT_BY_EXT[ext]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a float image in [0, 1] to uint8 (rounded, clipped).

    Example:
        >>> to_uint8(np.array([[[0.0, 0.5, 1.0]]])).tolist()
        [[[0, 128, 255]]]
    """
    if image.dtype == np.uint8:
        return image
    x = np.multiply(image, np.float32(255.0), dtype=np.float32)  # one temporary, in place after
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray,
    quality: int = 95,
    metadata_from: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> None:
    """Encode ``image`` (RGB float in [0, 1] or uint8) to ``path`` atomically.

    The format follows the path's ending. The file is written to a temporary name in the
    same folder and renamed into place, so a crash never leaves a partial file.

    Args:
        path: Destination; parent folders are created.
        image: (H, W, 3) RGB or (H, W) grey.
        quality: JPEG/WebP quality. Defaults to 95.
        metadata_from: Copy EXIF and ICC profile from this source image where the format
            allows (otherwise metadata is stripped). Defaults to None.
        overwrite: If False, refuse to replace an existing file.

    Raises:
        UsageError: Unknown ending, or the file exists and ``overwrite`` is False.

    Example:
        >>> write_image("/tmp/hk_doc.png", np.ones((2, 2, 3)))
    """
    dst = Path(path)
    fmt = image_format_for(dst)
    if not overwrite and dst.exists():
        raise UsageError(f"{dst}: exists; refusing to overwrite")
    kwargs: dict[str, object] = {}
    if metadata_from is not None:
        try:
            with Image.open(metadata_from) as src:
                if "exif" in src.info and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
                    kwargs["exif"] = src.info["exif"]
                if "icc_profile" in src.info and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
                    kwargs["icc_profile"] = src.info["icc_profile"]
        except (OSError, UnidentifiedImageError):
            pass  # metadata is best-effort; the pixels are what matter
    with atomic_path(dst) as tmp, open(tmp, "wb") as fh:
        _save(image, fmt, quality, fh, **kwargs)
        fh.flush()
        os.fsync(fh.fileno())


def is_grey(pixels: np.ndarray) -> bool:
    """True when an (H, W, 3+) image has identical R, G and B everywhere (or is (H, W)).

    A colour image is told apart on a sparse sample first, so the full comparison is only
    paid for images that are grey (about 15 ms on a 13-megapixel one).

    Example:
        >>> is_grey(np.zeros((4, 4, 3), np.uint8)), is_grey(np.eye(3, dtype=np.uint8)[None].repeat(4, 0))
        (True, False)
    """
    a = np.asarray(pixels)
    if a.ndim == 2:
        return True
    if a.ndim != 3 or a.shape[-1] < 3:
        return False
    s = a[::7, ::7]
    if not (np.array_equal(s[..., 0], s[..., 1]) and np.array_equal(s[..., 0], s[..., 2])):
        return False
    return bool(np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]))


def _save(image: np.ndarray, fmt: str, quality: int, fh: Any, **kwargs: object) -> None:
    """Encode ``image`` (float in [0, 1] or uint8, RGB or grey) as ``fmt`` into ``fh``.

    An RGB image whose three channels are equal is written as one grey channel (unless an
    ICC profile, which describes RGB, goes with it): it decodes to the same RGB pixels
    (JPEG: without chroma loss), in a third of the PNG bytes, a half of the JPEG encode time.
    """
    arr = to_uint8(np.asarray(image))
    if arr.ndim == 3 and "icc_profile" not in kwargs and is_grey(arr):
        arr = np.ascontiguousarray(arr[..., 0])
    if fmt == "JPEG" and not kwargs:
        # OpenCV's libjpeg-turbo encode: the same decoded pixels as Pillow's at the same quality
        # (4:2:0, checked on the OpenCV sample photos), files ~1.5% larger, 1.4x faster, and it
        # lets go of the GIL (Pillow's JPEG encoder holds it: mosaic's threads then queue on it).
        import cv2

        px = arr if arr.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", px, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if ok:
            fh.write(data.tobytes())
            return
    pil = Image.fromarray(arr if arr.ndim == 2 else arr[..., :3])
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    pil.save(fh, format=fmt, **kwargs)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which must not happen while
# writer threads (mosaic --workers) create files.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed.

    The destination is never left half-written. ``suffix`` is the temporary file's ending
    (some writers, e.g. ``model.save``, insist on one). The file gets the usual permissions
    (0666 minus the umask), not the 0600 of a bare temporary file.

    Example:
        >>> with atomic_path("/tmp/hk_doc2.txt") as tmp:
        ...     _ = open(tmp, "w").write("hi")
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically (temp file + rename).

    Example:
        >>> atomic_write_text("/tmp/hk_doc.txt", "hello")
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W[, C]) float image to ``size`` = (height, width).

    Uses area interpolation when shrinking and bilinear when growing.

    Example:
        >>> resize(np.zeros((10, 20, 3), np.float32), (5, 5)).shape
        (5, 5, 3)
    """
    import cv2

    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image.astype(np.float32, copy=False)
    interp = cv2.INTER_AREA if size[0] < h and size[1] < w else cv2.INTER_LINEAR
    out = cv2.resize(np.asarray(image, np.float32), (int(size[1]), int(size[0])), interpolation=interp)
    return out


def encode_image(image: np.ndarray, suffix: str = ".png", quality: int = 95, png_level: int = 1) -> bytes:
    """Encode ``image`` in memory as :func:`write_image` would (same pixels, no metadata).

    Args:
        image: (H, W, 3) RGB float in [0, 1] or uint8, or (H, W) grey.
        suffix: File ending naming the format (``.jpg``, ``.png``, ...). Defaults to ``.png``.
        quality: JPEG/WebP quality. Defaults to 95.
        png_level: zlib level of PNG output, 0-9. Defaults to 1 (OpenCV's default: about 3x
            faster than Pillow's 6 on photos, files a few percent larger; pixels identical).

    Raises:
        UsageError: Unknown ending.

    Example:
        >>> encode_image(np.zeros((2, 2, 3), np.float32), ".jpg")[:2]
        b'\\xff\\xd8'
    """
    import io

    fmt = image_format_for(f"image{suffix}")
    buf = io.BytesIO()
    _save(image, fmt, quality, buf, **({"compress_level": png_level} if fmt == "PNG" else {}))
    return buf.getvalue()


def decode_image(data: bytes, min_side: int | None = None, background: float = NEUTRAL_BACKGROUND,
                 out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode image bytes (as :func:`read_image` decodes a file) to RGB float32 in [0, 1].

    Args:
        data: An encoded image (e.g. from :func:`encode_image`).
        min_side: If given, return a preview as :func:`read_image_preview` does: a JPEG is
            decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, much cheaper than a full
            decode) while its short side stays at least ``min_side``, and the image is then
            shrunk (area) to that short side.
        background: Grey level alpha is composited on. Defaults to 0.5.
        out_size: With ``min_side``: resize the (reduced) decode straight to this (height,
            width) instead (:func:`pixels_at`), e.g. a model's input size.

    Raises:
        InvalidImageError: Not a decodable image.

    Example:
        >>> big = encode_image(np.zeros((64, 96, 3), np.float32), ".jpg")
        >>> decode_image(big).shape, decode_image(big, min_side=16).shape, decode_image(big, 40).shape
        ((64, 96, 3), (16, 24, 3), (40, 60, 3))
    """
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            k = _draft(img, min_side) if min_side is not None and img.format == "JPEG" else 1
            pixels = _jpeg_pixels(data, img, k)
            if pixels is None:
                img.load()
                if min_side is None:
                    upright: Image.Image = ImageOps.exif_transpose(img) or img
                    return _to_float_rgb(upright, background)
                pixels = _raw_pixels(img, background)
            if min_side is None:
                return pixels_to_float(pixels, background)
            return preview_pixels(pixels, min_side, out_size, background)
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as e:
        raise InvalidImageError(Path("<bytes>"), f"cannot decode ({e})") from None


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to ``path`` atomically (temp file + fsync + rename), e.g. an already encoded image.

    Example:
        >>> write_bytes("/tmp/hk_doc.bin", b"hi")
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
