"""bench.fmnist: IDX reading, scene building (exact masks, no item leakage), plain layout.

Nothing here needs the Debian package: the tests write their own IDX files and item arrays.
"""

from __future__ import annotations

import csv
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from bench import fmnist
from hardenkit.errors import DataError
from hardenkit.imageio import read_image, read_mask


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype({0x08: ">u1", 0x0C: ">i4"}[code]).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gz(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    raw = _idx_bytes(arr)
    p.write_bytes(gzip.compress(raw) if gz else raw)
    out = fmnist.read_idx(p)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_read_idx_int32_big_endian(tmp_path: Path) -> None:
    arr = np.array([1, -2, 70000], np.int32)
    p = tmp_path / "l.idx"
    p.write_bytes(_idx_bytes(arr, 0x0C))
    np.testing.assert_array_equal(fmnist.read_idx(p), arr)


@pytest.mark.parametrize("raw, match", [
    (b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"ab", "bad IDX magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "bad IDX magic"),
    (b"", "bad IDX magic"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 2), "truncated IDX header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"ab", "payload is 2 bytes"),
    (b"\x1f\x8bnot really gzip", "not a readable IDX file"),
])
def test_read_idx_corrupt(tmp_path: Path, raw: bytes, match: str) -> None:
    p = tmp_path / "bad.idx"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=match):
        fmnist.read_idx(p)


def test_read_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such IDX file"):
        fmnist.read_idx(tmp_path / "nope.gz")


def test_find_idx_files(tmp_path: Path) -> None:
    for stem in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / stem).write_bytes(b"")
    found = fmnist.find_idx_files([tmp_path / "empty", tmp_path])
    assert found["test_images"].name == "t10k-images-idx3-ubyte"
    assert found["train_labels"].name == "train-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fmnist.find_idx_files([tmp_path / "empty"])


def _fake_items(n_train: int = 60, n_test: int = 30, blank_others: bool = False) -> dict:
    """10 classes; sensitive-class items are squares, others crosses (or blank)."""
    rng = np.random.default_rng(3)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        x = np.zeros((n, 12, 12), np.uint8)
        for i, c in enumerate(y):
            v = rng.integers(120, 256)
            if c == fmnist.SENSITIVE_CLASS:
                x[i, 2:10, 3:9] = v
            elif not blank_others:
                x[i, 5:7, :] = v
                x[i, :, 5:7] = v
        out[split] = (x, y)
    return out


def _black(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.zeros((size, size, 3), np.float32)


def test_build_scenes_masks_are_exactly_the_sensitive_item_pixels(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # black background, no photometric change, other items blank: every lit pixel is a sensitive item
    monkeypatch.setattr(fmnist, "_background", _black)
    out = fmnist.build_scenes(tmp_path / "s", 6, 4, 4, size=32, items=_fake_items(blank_others=True),
                              photometric=False)
    for split, n in (("train", 6), ("val", 4), ("test", 4)):
        for i in range(n):
            cname = "sensitive" if i % 2 else "normal"
            img = read_image(out / split / cname / f"{i:05d}.png")
            lit = img.max(axis=2) > 0
            mp = out / "masks" / split / cname / f"{i:05d}.png"
            if cname == "normal":
                assert not mp.exists() and not lit.any()
            else:
                mask = read_mask(mp)
                assert mask.any()
                np.testing.assert_array_equal(mask, lit)


def test_build_scenes_layout_occlusion_and_determinism(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmnist, "_background", _black)
    items = _fake_items()
    a = fmnist.build_scenes(tmp_path / "a", 8, 4, 4, size=32, items=items, photometric=False)
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (a / split).iterdir()) == ["normal", "sensitive"]
    for p in (a / "masks" / "train" / "sensitive").iterdir():
        img = read_image(a / "train" / "sensitive" / p.name)
        mask = read_mask(p)
        # mask pixels are lit item pixels; other (cross) items may cover part of a square, never the reverse
        assert mask.any() and (img.max(axis=2)[mask] > 0).all()
    b = fmnist.build_scenes(tmp_path / "b", 8, 4, 4, size=32, items=items, photometric=False)
    for p in sorted(a.rglob("*.png")):
        np.testing.assert_array_equal(read_image(p), read_image(b / p.relative_to(a)))
    c = fmnist.build_scenes(tmp_path / "c", 8, 4, 4, size=32, items=items, photometric=False, seed=1)
    assert any(not np.array_equal(read_image(p), read_image(c / p.relative_to(a))) for p in a.rglob("*.png"))


def test_build_scenes_no_item_leaks_between_splits(tmp_path: Path) -> None:
    items = _fake_items(n_train=60, n_test=30)
    out = fmnist.build_scenes(tmp_path / "s", 30, 20, 20, size=32, items=items, holdout=10)
    with open(out / "items.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    used: dict[str, set[tuple[str, int]]] = {"train": set(), "val": set(), "test": set()}
    for r in rows:
        src, j = r["source_split"], int(r["source_index"])
        used[r["split"]].add((src, j))
        assert int(items[src][1][j]) == int(r["item_class"])  # the recorded item is the one placed
        if r["label"] == "normal":
            assert int(r["item_class"]) != fmnist.SENSITIVE_CLASS
    assert {s for s, _ in used["train"] | used["val"]} == {"train"}
    assert {s for s, _ in used["test"]} == {"test"}
    assert all(j < 50 for _, j in used["train"]) and all(j >= 50 for _, j in used["val"])
    assert not used["train"] & used["val"]
    sens_counts: dict[str, int] = {}
    for r in rows:
        if int(r["item_class"]) == fmnist.SENSITIVE_CLASS:
            sens_counts[r["file"]] = sens_counts.get(r["file"], 0) + 1
    assert sens_counts and all(1 <= k <= 3 and "/sensitive/" in f for f, k in sens_counts.items())


def test_build_scenes_needs_the_sensitive_class(tmp_path: Path) -> None:
    items = _fake_items()
    x, y = items["test"]
    items["test"] = (x, np.where(y == fmnist.SENSITIVE_CLASS, (fmnist.SENSITIVE_CLASS + 1) % 10, y))
    with pytest.raises(DataError, match="no item of sensitive class"):
        fmnist.build_scenes(tmp_path / "s", 2, 2, 2, size=32, items=items)


def test_build_plain_layout(tmp_path: Path) -> None:
    items = _fake_items(n_train=60, n_test=30)
    out = fmnist.build_plain(tmp_path / "p", n_train=20, n_test=8, items=items, holdout=10)
    names = fmnist.PLAIN_NAMES
    assert names[0] == "0-tshirt-top" and names[9] == "9-ankle-boot" and list(names) == sorted(names)
    counts = {s: len(list((out / s).rglob("*.png"))) for s in ("train", "val", "test")}
    assert counts == {"train": 20, "val": 8, "test": 8}
    p = next((out / "val").rglob("*.png"))
    j = int(p.stem)
    assert j >= 50 and p.parent.name == names[int(items["train"][1][j])]
    np.testing.assert_allclose(read_image(p)[..., 0] * 255, items["train"][0][j], atol=0.5)


def test_quality_mosaic_figures(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bench.bench_quality import mosaic_figures
    from hardenkit.imageio import write_image

    img = np.full((8, 8, 3), 0.5, np.float32)
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True  # 16 px
    write_image(tmp_path / "d" / "test" / "sensitive" / "00001.png", img)
    write_image(tmp_path / "d" / "masks" / "test" / "sensitive" / "00001.png", gt.astype(np.float32))
    write_image(tmp_path / "d" / "test" / "normal" / "00000.png", img)
    out = img.copy()
    out[2:6, 2:4] = 0.0  # censors 8 gt px
    out[0, :] = 1.0  # and 8 px outside
    write_image(tmp_path / "o" / "sensitive" / "00001.png", out)
    rows = [SimpleNamespace(path="sensitive/00001.png", status="censored", score_after=0.7),
            SimpleNamespace(path="normal/00000.png", status="clean", score_after=0.1)]
    fig = mosaic_figures(tmp_path / "d", tmp_path / "o", rows, threshold=0.6)
    assert fig["gt_coverage"] == pytest.approx(0.5) and fig["area_ratio"] == pytest.approx(1.0)
    assert fig["leak_rate"] == 1.0 and fig["censored_normal"] == 0.0 and fig["n"] == 2
    assert fig["area_ratio_regions"] == pytest.approx(1.0) and fig["unresolved_sensitive"] == 0.0
    rows[0].status = "unresolved"
    fig = mosaic_figures(tmp_path / "d", tmp_path / "o", rows, threshold=0.6)
    assert fig["unresolved_sensitive"] == 1.0 and np.isnan(fig["area_ratio_regions"])


def test_quality_stage_failure_becomes_a_row() -> None:
    from bench.bench_quality import _Stages

    st = _Stages()
    assert st.run("a", lambda: 1 / 0) is None
    assert st.run("b", lambda: 2, needs=("a",)) is None
    assert st.run("c", lambda: 3) == 3
    assert [r["name"] for r in st.rows] == ["a: failed", "b: not run"]
    assert "ZeroDivisionError" in st.errors["a"] and set(st.seconds) == {"a", "c"}


@pytest.mark.parametrize("acc1, robust_met", [(0.87, True), (0.50, False)])
def test_quality_robust_gain_counts_only_while_clean_accuracy_holds(acc1: float, robust_met: bool) -> None:
    from bench.bench_quality import _Stages, harden_rows

    def m(r: int, acc: float, robust: float) -> dict[str, object]:
        return {"round": r, "accuracy": acc, "fpr": 0.2, "miss_rate": 0.05, "pointing_game": None,
                "item_recall": None, "robust_by_eps": {f"{4 / 255:.4f}": robust, f"{8 / 255:.4f}": robust}}

    st = _Stages()
    # acc1=0.50: a model collapsed to one class is "robust" on that class: 0.0 -> 0.5 is no gain
    harden_rows(st, [m(0, 0.88, 0.0), m(5, acc1, 0.5)])
    robust = [r for r in st.rows if "robust accuracy" in r["name"]]
    assert len(robust) == 2 and all(r["met"] is robust_met for r in robust)
    assert [r["met"] for r in st.rows if "clean accuracy" in r["name"]] == [acc1 > 0.8]
