"""cam: every method, nested models, target layers, regions and overlays (tiny models only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cam
from hardenkit.errors import UsageError
from hardenkit.modelio import bundle_from_model
from hardenkit.testkit import dummy_image, nested_model, tiny_model

SIZES = [(8, 8), (20, 13), (5, 30)]


def _bundle(model: object) -> object:
    return bundle_from_model(model, ["normal", "sensitive"])


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((h, w, 3), dtype=np.float32) for h, w in SIZES]


@pytest.mark.parametrize("method", sorted(cam.METHODS))
def test_every_method_gives_maps_at_original_size_in_unit_range(tiny_bundle: object, method: str) -> None:
    maps = cam.explain(tiny_bundle, _images(), method=method)
    assert [m.shape for m in maps] == SIZES
    for m in maps:
        assert m.dtype == np.float32
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
        assert np.isfinite(m).all()
    assert any(float(m.max()) > 0.5 for m in maps)  # not all-zero: the maps are normalised


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "layercam"])
def test_nested_model_is_explained(method: str) -> None:
    ex = cam.Explainer(_bundle(nested_model()), method)
    assert ex.layer_name == "base_conv2"
    maps = ex([dummy_image(8, s) for s in range(3)])
    assert [m.shape for m in maps] == [(8, 8)] * 3
    assert all(0.0 <= float(m.min()) and float(m.max()) <= 1.0 for m in maps)


def test_nested_wrapper_gives_the_same_maps_as_the_flat_model() -> None:
    import keras

    flat = tiny_model()
    inp = keras.Input((8, 8, 3))
    base = keras.Model(inp, flat.get_layer("conv")(inp), name="base")
    outer_in = keras.Input((8, 8, 3))
    wrapped = keras.Model(outer_in, flat.get_layer("probs")(flat.get_layer("gap")(base(outer_in))))
    x = np.stack([dummy_image(8, s) for s in range(4)])
    for method in ("gradcam", "gradcam++"):
        a = np.stack(cam.explain(_bundle(flat), x, method=method))
        b = np.stack(cam.explain(_bundle(wrapped), x, method=method))
        assert a.max() > 0.5
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_gradcam_matches_a_hand_written_gradient_tape() -> None:
    import keras
    import tensorflow as tf

    model = tiny_model()
    x = np.stack([dummy_image(8, s) for s in range(3)])
    feat = keras.Model(model.input, [model.get_layer("conv").output, model.output])
    with tf.GradientTape() as tape:
        acts, probs = feat(x)
        score = probs[:, 1]
    grads = tape.gradient(score, acts).numpy()
    raw = np.maximum((acts.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    lo, hi = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    expected = (raw - lo) / (hi - lo + 1e-7)
    got = np.stack(cam.explain(_bundle(model), x, method="gradcam"))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_targets_change_the_map() -> None:
    b = _bundle(tiny_model())
    x = [dummy_image(8, 3)]
    sens = cam.explain(b, x, method="gradcam", target="sensitive")[0]
    normal = cam.explain(b, x, method="gradcam", target="normal")[0]
    top = cam.explain(b, x, method="gradcam", target="top")[0]
    assert not np.allclose(sens, normal)
    top_class = int(b.predict(x).argmax())
    np.testing.assert_allclose(top, sens if top_class == 1 else normal, atol=1e-6)


def test_layer_override_searches_nested_models() -> None:
    ex = cam.Explainer(_bundle(nested_model()), "gradcam", layer="base_conv")
    assert ex.layer_name == "base_conv"
    assert ex([dummy_image()])[0].shape == (8, 8)


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "nope"}, "no layer named 'nope'"),
    ({"layer": "gap"}, "no 4-D"),
    ({"target": "bogus"}, "unknown target 'bogus'"),
    ({"method": "bogus"}, "unknown CAM method 'bogus'"),
    ({"batch_size": 0}, "expected batch_size >= 1"),
])
def test_bad_arguments_are_usage_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        cam.Explainer(_bundle(tiny_model()), **{"method": "gradcam", **kwargs})


def _skip_model() -> object:
    import keras

    inp = keras.Input((8, 8, 3))
    c1 = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    c2 = keras.layers.Conv2D(4, 3, padding="same", name="c2")(c1)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add(name="add")([c1, c2]))
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def test_layer_bypassed_by_a_skip_connection_suggests_another_layer() -> None:
    b = _bundle(_skip_model())
    assert cam.Explainer(b, "gradcam").layer_name == "add"  # automatic choice still works
    with pytest.raises(UsageError, match="bypasses it.*--layer"):
        cam.Explainer(b, "gradcam", layer="c2")


def test_model_without_spatial_layer_points_to_saliency() -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp)))
    with pytest.raises(UsageError, match="saliency"):
        cam.Explainer(_bundle(m), "gradcam")
    assert cam.explain(_bundle(m), [dummy_image()], method="saliency")[0].shape == (8, 8)


def test_explainer_reuses_one_compiled_split_per_model() -> None:
    b = _bundle(tiny_model())
    a, c = cam.Explainer(b, "gradcam"), cam.Explainer(b, "gradcam++")
    assert a._impl.fast is c._impl.fast
    n_layers = len(b.model.layers)
    for n in (1, 5, 3):
        a([dummy_image(8, s) for s in range(n)])
    assert len(b.model.layers) == n_layers  # the user's model is not modified


def test_importing_cam_does_not_import_tensorflow() -> None:
    code = "import sys, cam; print('tensorflow' in sys.modules, sorted(cam.METHODS)[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "faster-scorecam"], out.stderr


# -- regions -----------------------------------------------------------------------------------------

def _two_blobs() -> np.ndarray:
    m = np.zeros((20, 30), np.float32)
    m[2:6, 3:9] = 1.0  # 4 x 6 = 24 px at 1.0
    m[12:17, 20:23] = 0.7  # 5 x 3 = 15 px at 0.7
    m[14, 21] = 0.8
    return m


def test_regions_find_two_blobs_with_exact_boxes_most_important_first() -> None:
    regs = cam.regions(_two_blobs())
    assert [r.box for r in regs] == [(3, 2, 9, 6), (20, 12, 23, 17)]
    assert [r.area for r in regs] == [24, 15]
    assert regs[1].peak == (14, 21)
    assert regs[0].mean == pytest.approx(1.0)
    assert regs[0].importance > regs[1].importance
    assert regs[0].mask.shape == (20, 30) and regs[0].mask.sum() == 24
    assert regs[0].mask[2:6, 3:9].all()


def test_regions_threshold_and_min_area() -> None:
    assert [r.box for r in cam.regions(_two_blobs(), threshold=0.9)] == [(3, 2, 9, 6)]
    assert len(cam.regions(_two_blobs(), min_area=20)) == 1
    assert cam.regions(np.zeros((5, 5))) == []


def test_dilation_grows_and_merges_regions() -> None:
    plain = cam.regions(_two_blobs())
    grown = cam.regions(_two_blobs(), dilate=1)
    assert grown[0].box == (2, 1, 10, 7)
    assert grown[0].area > plain[0].area
    m = np.zeros((10, 10), np.float32)
    m[2, 2] = m[2, 5] = 1.0
    assert len(cam.regions(m)) == 2
    assert len(cam.regions(m, dilate=2)) == 1


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"dilate": -1}, {"min_area": 0}])
def test_regions_reject_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="expected"):
        cam.regions(_two_blobs(), **kwargs)


def test_overlay_blends_and_resizes() -> None:
    img = np.full((12, 18, 3), 0.25, np.float32)
    m = np.zeros((6, 9), np.float32)
    assert cam.overlay(img, m).shape == (12, 18, 3)
    np.testing.assert_allclose(cam.overlay(img, m, alpha=0.0), img)
    hot = cam.overlay(img, np.ones((12, 18)), alpha=1.0)
    np.testing.assert_allclose(hot[0, 0], [0.5, 0.0, 0.0], atol=0.01)  # jet at 1.0 is dark red
    with pytest.raises(ValueError, match="alpha"):
        cam.overlay(img, m, alpha=2)


def test_smoothgrad_is_repeatable_and_leaves_the_global_numpy_generator_alone(tiny_bundle: object) -> None:
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    a = cam.explain(tiny_bundle, _images(), method="smoothgrad")
    after = np.random.random()
    b = cam.explain(tiny_bundle, _images(), method="smoothgrad")
    assert after == expected_next
    for ma, mb in zip(a, b):
        np.testing.assert_array_equal(ma, mb)
