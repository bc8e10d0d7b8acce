from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hardenkit.errors import InvalidImageError, UsageError
from hardenkit.imageio import iter_images, read_image, read_image_preview, read_mask, write_image


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return (np.arange(h * w * 3).reshape(h, w, 3) % 255).astype(np.uint8)


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp", "webp", "tiff", "gif"])
def test_reads_every_format_as_rgb_float(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"a.{ext}"
    Image.fromarray(_rgb()).save(p)
    img = read_image(p)
    assert img.shape == (6, 5, 3) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0


def test_png_16bit_grey_is_scaled(tmp_path: Path) -> None:
    p = tmp_path / "g16.png"
    Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(p)
    img = read_image(p)
    assert img.shape == (3, 4, 3) and np.allclose(img, 1.0)


def test_rgba_composited_on_neutral_grey(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    arr = np.zeros((2, 2, 4), np.uint8)  # fully transparent black
    Image.fromarray(arr, "RGBA").save(p)
    assert np.allclose(read_image(p), 0.5)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    p = tmp_path / "rot.jpg"
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(p, exif=exif)
    assert read_image(p).shape == (20, 10, 3)


def test_gif_first_frame(tmp_path: Path) -> None:
    p = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (255, 0)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    assert read_image(p).mean() > 0.9


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "zero-byte file"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not an image"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_inputs_raise_with_file_and_reason(tmp_path: Path, make, reason: str) -> None:
    p = tmp_path / "bad.jpg"
    make(p)
    with pytest.raises(InvalidImageError, match=reason) as ei:
        read_image(p)
    assert str(p) in str(ei.value)


def test_truncated_image(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "trunc.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InvalidImageError, match="truncated"):
        read_image(bad)


def test_unreadable(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "secret.png"
    Image.fromarray(_rgb()).save(p)
    if os.geteuid() == 0:  # root reads anything: simulate the permission check failing
        import hardenkit.imageio as hio

        monkeypatch.setattr(hio.os, "access", lambda *a, **k: False)
    else:
        p.chmod(0)
    with pytest.raises(InvalidImageError, match="unreadable"):
        read_image(p)


def test_decompression_bomb_refused_before_decode(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(p)
    with pytest.raises(InvalidImageError, match="too large: 100x100"):
        read_image(p, max_pixels=5000)


def test_write_is_atomic_and_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    dst = tmp_path / "out.png"
    write_image(dst, np.ones((3, 3, 3)))
    before = dst.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(RuntimeError):
        write_image(dst, np.zeros((3, 3, 3)))
    assert dst.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_write_keeps_format_from_ending_and_refuses_unknown(tmp_path: Path) -> None:
    write_image(tmp_path / "x.webp", np.ones((3, 3, 3)))
    with Image.open(tmp_path / "x.webp") as im:
        assert im.format == "WEBP"
    with pytest.raises(UsageError, match="cannot write images with ending '.txt'"):
        write_image(tmp_path / "x.txt", np.ones((3, 3, 3)))


def test_write_refuses_overwrite_when_asked(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png", np.ones((3, 3, 3)))
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_image(tmp_path / "x.png", np.ones((3, 3, 3)), overwrite=False)


def test_roundtrip_png_exact(tmp_path: Path) -> None:
    arr = _rgb()
    write_image(tmp_path / "r.png", arr)
    assert np.array_equal((read_image(tmp_path / "r.png") * 255).round().astype(np.uint8), arr)


def test_read_mask_and_iter_images(tmp_path: Path) -> None:
    m = np.zeros((4, 4), np.uint8)
    m[1:3, 1:3] = 255
    (tmp_path / "sub").mkdir()
    Image.fromarray(m).save(tmp_path / "sub" / "m.png")
    (tmp_path / "notes.txt").write_text("x")
    assert read_mask(tmp_path / "sub" / "m.png").sum() == 4
    assert [p.name for p in iter_images([tmp_path])] == ["m.png"]
    with pytest.raises(UsageError, match="no such file"):
        list(iter_images([tmp_path / "missing"]))


def test_atomic_writes_get_umask_permissions_and_leave_nothing_on_failure(tmp_path: Path) -> None:
    from hardenkit.imageio import atomic_path, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_image(tmp_path / "b.png", np.zeros((2, 2, 3), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "a.txt").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png"]


def test_opaque_alpha_is_dropped_and_read_exactly_like_rgb(tmp_path: Path) -> None:
    from hardenkit.imageio import pixels_to_float, read_image_pixels, read_image_preview

    rgb = (np.arange(40 * 50 * 3).reshape(40, 50, 3) % 251).astype(np.uint8)
    opaque = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], axis=2)
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    pixels = read_image_pixels(tmp_path / "opaque.png")
    assert pixels.dtype == np.uint8 and pixels.shape == (40, 50, 3) and (pixels == rgb).all()
    assert (read_image(tmp_path / "opaque.png") == read_image(tmp_path / "rgb.png")).all()
    assert (pixels_to_float(pixels) == read_image(tmp_path / "opaque.png")).all()
    preview, full = read_image_preview(tmp_path / "opaque.png", 20)
    assert full is not None and full.shape == (40, 50, 3) and preview.shape == (20, 25, 3)
    seen = opaque.copy()
    seen[0, 0, 3] = 254  # one pixel not opaque: the alpha is kept and composited
    Image.fromarray(seen, "RGBA").save(tmp_path / "seen.png")
    kept = read_image_pixels(tmp_path / "seen.png")
    assert kept.shape == (40, 50, 4) and (pixels_to_float(kept) == read_image(tmp_path / "seen.png")).all()


def test_grey_rgb_is_written_as_one_channel_and_reads_back_the_same(tmp_path: Path) -> None:
    from hardenkit.imageio import encode_image, is_grey

    grey = np.repeat(_rgb(40, 30)[..., :1], 3, axis=2)
    colour = grey.copy()
    colour[39, 29, 2] ^= 1  # one channel of one pixel differs (outside the sparse pre-check)
    assert is_grey(grey) and not is_grey(colour) and not is_grey(_rgb())
    write_image(tmp_path / "g.png", grey)
    write_image(tmp_path / "c.png", colour)
    assert Image.open(tmp_path / "g.png").mode == "L" and Image.open(tmp_path / "c.png").mode == "RGB"
    assert np.array_equal((read_image(tmp_path / "g.png") * 255).round().astype(np.uint8), grey)
    assert np.array_equal((read_image(tmp_path / "c.png") * 255).round().astype(np.uint8), colour)
    jpg = encode_image(grey, ".jpg")
    from io import BytesIO

    assert Image.open(BytesIO(jpg)).mode == "L"
    # an ICC profile describes RGB: such an image stays RGB
    src = tmp_path / "icc.jpg"
    Image.fromarray(_rgb(8, 8)).save(src, icc_profile=b"\0" * 128)
    write_image(tmp_path / "keep.jpg", grey, metadata_from=src)
    assert Image.open(tmp_path / "keep.jpg").mode == "RGB"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "RGBA-opaque", "L", "LA", "P", "I;16"])
def test_png_fast_path_reads_exactly_what_pillow_reads(tmp_path: Path, monkeypatch, mode: str) -> None:
    import hardenkit.imageio as io_mod

    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (30, 40), dtype=np.uint16))
    elif mode == "RGBA-opaque":
        img = Image.fromarray(np.concatenate([rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
                                              np.full((30, 40, 1), 255, np.uint8)], 2), "RGBA")
    elif mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).convert("P")
    else:
        chans = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        arr = rng.integers(0, 256, (30, 40, chans), dtype=np.uint8)
        img = Image.fromarray(arr[..., 0] if chans == 1 else arr, mode)
    p = tmp_path / "x.png"
    img.save(p)
    with Image.open(p) as opened:
        assert (io_mod._png_pixels(p, opened) is not None) == (mode in ("RGB", "RGBA", "RGBA-opaque", "L"))
    fast = (read_image(p), io_mod.read_image_pixels(p), io_mod.read_image_preview(p, 16)[0])
    monkeypatch.setattr(io_mod, "_png_pixels", lambda *a: None)
    slow = (read_image(p), io_mod.read_image_pixels(p), io_mod.read_image_preview(p, 16)[0])
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()


@pytest.mark.parametrize("kind", ["RGB", "L", "CMYK", "rotated", "progressive", "trailing-bytes"])
def test_jpeg_fast_path_reads_exactly_what_pillow_reads(tmp_path: Path, monkeypatch, kind: str) -> None:
    import hardenkit.imageio as io_mod

    rng = np.random.default_rng(1)
    arr = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    kw: dict = {"quality": 90}
    if kind == "L":
        img = img.convert("L")
    elif kind == "CMYK":
        img = img.convert("CMYK")
    elif kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        kw["exif"] = exif.tobytes()
    elif kind == "progressive":
        kw["progressive"] = True
    p = tmp_path / "x.jpg"
    img.save(p, **kw)
    if kind == "trailing-bytes":
        p.write_bytes(p.read_bytes() + b"junk")
    with Image.open(p) as opened:
        used = io_mod._jpeg_pixels(p, opened) is not None
    assert used == (kind in ("RGB", "L", "progressive"))

    def reads() -> list[np.ndarray]:
        data = p.read_bytes()
        return [read_image(p), io_mod.read_image_pixels(p), io_mod.read_image_preview(p, 16)[0],
                io_mod.read_image_preview(p, 30)[0], io_mod.decode_image(data), io_mod.decode_image(data, 16)]

    fast = reads()
    monkeypatch.setattr(io_mod, "_jpeg_pixels", lambda *a: None)
    slow = reads()
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
    if kind == "rotated":
        assert fast[0].shape[:2] == (90, 70)


def test_truncated_jpeg_is_an_error_not_grey_rows(tmp_path: Path) -> None:
    """OpenCV fills a truncated JPEG's missing rows with grey; such a file must still fail."""
    p = tmp_path / "cut.jpg"
    Image.fromarray((np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)).save(p, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    for read in (read_image, lambda q: read_image_preview(q, 16)):
        with pytest.raises(InvalidImageError, match="truncated"):
            read(p)


@pytest.mark.parametrize("grey", [False, True])
def test_jpeg_encode_decodes_to_the_pixels_of_pillows_encode(tmp_path: Path, grey: bool) -> None:
    """encode_image/write_image encode JPEG with OpenCV: the decoded pixels match Pillow's own encode."""
    from io import BytesIO

    from hardenkit.imageio import encode_image

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    arr = np.clip(np.stack([xx * 4, yy * 5, (xx + yy) * 2], 2) + rng.normal(0, 12, (48, 64, 3)), 0, 255).astype(np.uint8)
    if grey:
        arr = np.repeat(arr[..., :1], 3, axis=2)
    ours = encode_image(arr, ".jpg", 90)
    buf = BytesIO()
    Image.fromarray(arr[..., 0] if grey else arr).save(buf, format="JPEG", quality=90)
    a = np.asarray(Image.open(BytesIO(ours)).convert("RGB"))
    b = np.asarray(Image.open(BytesIO(buf.getvalue())).convert("RGB"))
    assert Image.open(BytesIO(ours)).mode == ("L" if grey else "RGB")
    assert a.shape == b.shape and (a == b).all()
    write_image(tmp_path / "w.jpg", arr, quality=90)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "w.jpg").convert("RGB")), a)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_preview_at_a_model_size_matches_resizing_the_full_image(tmp_path: Path, mode: str) -> None:
    """read_image_preview(out_size=...) and decode_image(out_size=...) give what bundle.prepare
    gives from the full decode, within one 8-bit level (they shrink the 8-bit pixels)."""
    from hardenkit.imageio import decode_image, encode_image, resize

    rng = np.random.default_rng(4)
    chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (60, 90, chans), dtype=np.uint8)
    p = tmp_path / "x.png"
    Image.fromarray(arr[..., 0] if chans == 1 else arr, mode).save(p)
    want = resize(read_image(p), (8, 8))
    preview, full = read_image_preview(p, 16, out_size=(8, 8))
    assert preview.shape == (8, 8, 3) and full is not None and full.shape[:2] == (60, 90)
    assert np.abs(preview - want).max() <= 1 / 255 + 1e-6
    grown, _ = read_image_preview(p, 16, out_size=(120, 120))  # growing: bilinear, as prepare
    assert np.array_equal(grown, resize(read_image(p), (120, 120)))
    data = encode_image(read_image(p), ".png")
    assert np.abs(decode_image(data, 16, out_size=(8, 8)) - resize(read_image(p), (8, 8))).max() <= 1 / 255 + 1e-6
