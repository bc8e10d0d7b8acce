from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hardenkit.errors import ModelLoadError, UsageError
from hardenkit.modelio import load_model, save_model, sidecar_path
from hardenkit.testkit import lambda_model, nested_model, tiny_model


def test_class_names_roundtrip(tmp_path: Path) -> None:
    p = save_model(tiny_model(n_classes=3), tmp_path / "m.keras", ["ok", "nsfw", "gore"], ["nsfw", "gore"])
    b = load_model(p)
    assert b.class_names == ("ok", "nsfw", "gore")
    assert b.sensitive_names == ("nsfw", "gore") and b.sensitive_indices == (1, 2)
    assert json.loads(sidecar_path(p).read_text())["class_names"] == ["ok", "nsfw", "gore"]


def test_sensitive_score_is_sum_of_sensitive_probs(tmp_path: Path) -> None:
    p = save_model(tiny_model(n_classes=3), tmp_path / "m.keras", ["ok", "nsfw", "gore"], ["nsfw", "gore"])
    b = load_model(p)
    x = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    probs = b.predict(x)
    assert np.allclose(b.sensitive_score(x), probs[:, 1] + probs[:, 2], atol=1e-6)


def test_fingerprint_names_the_weights_not_the_file(tmp_path: Path) -> None:
    m = tiny_model()
    a = load_model(save_model(m, tmp_path / "a.keras", ["normal", "sensitive"]))
    b = load_model(save_model(m, tmp_path / "b.h5", ["normal", "sensitive"]))
    assert a.fingerprint() == b.fingerprint()  # same weights, other file and format
    w = m.get_weights()
    w[0] = w[0] + 1e-3
    m.set_weights(w)
    c = load_model(save_model(m, tmp_path / "c.keras", ["normal", "sensitive"]))
    assert c.fingerprint() != a.fingerprint()


def test_h5_roundtrip(tmp_path: Path) -> None:
    p = save_model(tiny_model(), tmp_path / "m.h5", ["normal", "sensitive"])
    assert load_model(p).class_names == ("normal", "sensitive")


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_lambda_refused_in_safe_mode(tmp_path: Path, ext: str) -> None:
    p = save_model(lambda_model(), tmp_path / f"l.{ext}", ["normal", "sensitive"])
    with pytest.raises(ModelLoadError, match="Lambda layer.*--unsafe-model"):
        load_model(p)
    assert load_model(p, unsafe=True).model is not None


def test_nested_model_roundtrip(tmp_path: Path) -> None:
    p = save_model(nested_model(), tmp_path / "n.keras", ["normal", "sensitive"])
    b = load_model(p)
    assert b.image_size == (8, 8)
    assert b.predict(np.zeros((1, 20, 20, 3), np.float32)).shape == (1, 2)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: d / "missing.keras", "no such model file"),
        (lambda d: (d / "m.txt").write_text("x") and d / "m.txt", "expected a .keras or .h5"),
        (lambda d: (d / "c.keras").write_bytes(b"garbage") and d / "c.keras", "cannot load model"),
    ],
)
def test_load_errors(tmp_path: Path, setup, match: str) -> None:
    p = setup(tmp_path)
    if p.suffix == ".keras" and p.exists():
        sidecar_path(p).write_text(json.dumps({"class_names": ["normal", "sensitive"]}))
    with pytest.raises(ModelLoadError, match=match):
        load_model(p)


def test_missing_class_names(tmp_path: Path) -> None:
    p = tmp_path / "m.keras"
    tiny_model().save(p)
    with pytest.raises(ModelLoadError, match="no class names"):
        load_model(p)


def test_unknown_sensitive_class(tmp_path: Path) -> None:
    p = save_model(tiny_model(), tmp_path / "m.keras", ["normal", "sensitive"])
    with pytest.raises(UsageError, match="unknown sensitive class"):
        load_model(p, sensitive="gore")


def test_logit_model_gets_softmax(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inp))
    p = save_model(keras.Model(inp, out), tmp_path / "logits.keras", ["normal", "sensitive"])
    probs = load_model(p).predict(np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
