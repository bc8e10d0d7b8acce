from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hardenkit.data import load_split, scan_split, tf_dataset
from hardenkit.demo import generate, generate_scene
from hardenkit.errors import ConfigError, DataError
from hardenkit.train import TrainConfig, train_baseline


def test_demo_is_deterministic_and_has_exact_masks(tmp_path: Path) -> None:
    a = generate_scene(np.random.default_rng([3, 1, 7]), sensitive=True)
    b = generate_scene(np.random.default_rng([3, 1, 7]), sensitive=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[1].any() and a[2] >= 1
    img, mask, n = generate_scene(np.random.default_rng(5), sensitive=False)
    assert not mask.any() and n == 0


def test_demo_has_multi_item_scenes() -> None:
    counts = [generate_scene(np.random.default_rng(i), True)[2] for i in range(60)]
    assert max(counts) >= 2 and min(counts) == 1


def test_loader_with_masks(tiny_data: Path) -> None:
    split = scan_split(tiny_data, "test")
    assert split.class_names == ("normal", "sensitive") and split.has_masks
    ds = load_split(split, (16, 16))
    assert ds.x.shape == (16, 16, 16, 3) and ds.masks is not None
    assert ds.masks[ds.y == 1].any(axis=(1, 2)).all()
    assert not ds.masks[ds.y == 0].any()


def test_loader_without_masks_and_bad_files_reported(tiny_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(tiny_data / "val", root / "val")
    shutil.copytree(tiny_data / "train", root / "train")
    (root / "val" / "normal" / "broken.jpg").write_bytes(b"")
    split = scan_split(root, "val")
    assert not split.has_masks
    ds = load_split(split, (16, 16))
    assert ds.masks is None and len(ds.x) == len(split) - 1
    assert len(ds.errors) == 1 and "zero-byte" in str(ds.errors[0])
    errs: list = []
    n = sum(int(b[0].shape[0]) for b in tf_dataset(split, (16, 16), batch_size=5, errors=errs))
    assert n == len(split) - 1 and "broken.jpg" in errs[0].path


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a dataset folder"):
        scan_split(tmp_path, "train")
    (tmp_path / "train" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="at least two class folders"):
        scan_split(tmp_path, "train")


@pytest.mark.parametrize("kw, match", [({"epochs": 0}, "expected epochs >= 1, got 0"),
                                       ({"image_size": 4}, "expected image_size >= 8"),
                                       ({"out": "m.txt"}, "expected --out to end in .keras")])
def test_train_config_validation(kw: dict, match: str) -> None:
    base = {"data": "d", "out": "m.keras"}
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{**base, **kw})


def test_train_saves_best_model_with_class_names(tiny_data: Path, tmp_path: Path) -> None:
    from hardenkit.modelio import load_model, sidecar_path

    res = train_baseline(TrainConfig(data=tiny_data, out=tmp_path / "m.keras", epochs=2, image_size=16))
    b = load_model(res.path)
    assert b.class_names == ("normal", "sensitive") and b.image_size == (16, 16)
    assert 0.0 <= res.val_accuracy <= 1.0
    meta = json.loads(sidecar_path(res.path).read_text())
    assert meta["val_accuracy"] == pytest.approx(res.val_accuracy)


def test_fit_arrays_trains_without_xla_on_cpu() -> None:
    from hardenkit.testkit import tiny_model
    from hardenkit.train import fit_arrays

    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3), np.float32)
    y = (np.arange(16) % 2).astype(np.int32)
    m = tiny_model()
    fit_arrays(m, x, y, x[:4], y[:4], epochs=1, batch_size=8)
    assert m.jit_compile is False  # measured slower on CPU than the oneDNN graph


@pytest.mark.parametrize("final, expect_end", [(None, 1e-2), (1e-3, 1e-3)])
def test_fit_arrays_final_learning_rate_is_a_cosine_down_to_it(final: float | None, expect_end: float) -> None:
    from hardenkit.testkit import tiny_model
    from hardenkit.train import fit_arrays

    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8, 3), np.float32)
    y = (np.arange(20) % 2).astype(np.int32)
    m = tiny_model()
    fit_arrays(m, x, y, x[:4], y[:4], epochs=2, batch_size=8, learning_rate=1e-2, final_learning_rate=final)
    opt = m.optimizer
    assert int(opt.iterations) == 6  # 2 epochs x ceil(20 / 8) steps: the schedule spans exactly the run
    lr = opt.learning_rate if final is None else opt._learning_rate(opt.iterations)
    assert float(lr) == pytest.approx(expect_end, rel=1e-4)
    if final is not None:
        assert float(opt._learning_rate(3)) == pytest.approx(0.5 * (1e-2 + 1e-3), rel=1e-4)  # half-way



def test_fit_arrays_ema_keeps_the_averaged_weights() -> None:
    import keras

    from hardenkit.testkit import tiny_model
    from hardenkit.train import fit_arrays

    class Record(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.weights_seen: list[list[np.ndarray]] = []

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.weights_seen.append([np.array(v) for v in self.model.trainable_weights])

    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3), np.float32)
    y = (np.arange(32) % 2).astype(np.int32)
    m, rec = tiny_model(), Record()
    fit_arrays(m, x, y, x[:8], y[:8], epochs=1, batch_size=8, learning_rate=1e-2, monitor="val_accuracy",
               ema_momentum=0.9, callbacks=[rec])
    ema = rec.weights_seen[0]  # Keras' average starts at the weights after the first step
    for w in rec.weights_seen[1:]:
        ema = [0.9 * a + 0.1 * b for a, b in zip(ema, w)]
    final = [np.array(v) for v in m.trainable_weights]

    def dist(u: list[np.ndarray], v: list[np.ndarray]) -> float:
        return sum(float(np.abs(a - b).sum()) for a, b in zip(u, v))

    assert dist(final, ema) < 1e-4 < dist(final, rec.weights_seen[-1])
