"""cam.metrics: unit cases on arrays, then a model trained on planted squares must beat random
maps (pointing game, item recall, deletion/insertion), pass MPRT, and `cam eval` must say so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cam
from cam.cli import main
from cam.metrics import (auc, deletion_auc, evaluate, insertion_auc, item_recall, mprt_spearman,
                         perturbation_curves, pointing_game, random_maps)

SIZE = 16


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tiny_model trained for a few epochs to spot a bright 3x3 square; a test split on disk."""
    import keras

    from hardenkit.imageio import write_image
    from hardenkit.modelio import load_model, save_model
    from hardenkit.testkit import planted_batch, seed_everything, tiny_model

    seed_everything(0)
    x, y, _ = planted_batch(128, SIZE, seed=0)
    model = tiny_model(SIZE)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("planted")
    path = save_model(model, root / "planted.keras", ["normal", "sensitive"])
    xt, yt, mt = planted_batch(24, SIZE, seed=1)
    for i, (img, label, mask) in enumerate(zip(xt, yt, mt)):
        cls = "sensitive" if label else "normal"
        write_image(root / "data" / "test" / cls / f"{i:03d}.png", img)
        if label:
            write_image(root / "data" / "masks" / "test" / cls / f"{i:03d}.png", mask.astype(np.float32))
    bundle = load_model(path)
    assert (bundle.predict(xt).argmax(1) == yt).mean() >= 0.9  # the signal was learnt
    s = yt == 1
    return {"bundle": bundle, "x": xt[s], "masks": mt[s], "model": path, "data": root / "data"}


# -- arrays only -------------------------------------------------------------------------------------

def test_pointing_game_counts_only_images_with_a_mask() -> None:
    m = np.zeros((4, 4), np.float32)
    m[1, 1] = 1.0
    gt_hit, gt_miss = m > 0, np.zeros((4, 4), bool)
    gt_miss[3, 3] = True
    assert pointing_game([m, m, m], [gt_hit, gt_miss, np.zeros((4, 4), bool)]) == 0.5
    assert np.isnan(pointing_game([m], [np.zeros((4, 4), bool)]))


def test_item_recall_counts_regions_over_all_images() -> None:
    gt = np.zeros((8, 8), bool)
    gt[0:2, 0:2] = gt[6:8, 6:8] = True  # two items
    m = np.zeros((8, 8), np.float32)
    m[1, 1] = 1.0
    m[7, 7] = 0.4
    assert item_recall([m], [gt]) == 0.5
    assert item_recall([m], [gt], threshold=0.3) == 1.0
    assert item_recall([m, m], [gt, gt]) == 0.5
    assert item_recall(np.zeros((1, 4, 4)), [np.ones((8, 8), bool)]) == 0.0  # resized, all-zero map


def test_label_items_counts_8_connected_components() -> None:
    from cam import label_items

    gt = np.zeros((6, 6), np.uint8)
    gt[0, 0] = gt[1, 1] = 1  # diagonal neighbours: one item
    gt[4:6, 4:6] = 1
    n, labels = label_items(gt)
    assert n == 2 and labels[0, 0] == labels[1, 1] != labels[5, 5] and labels[3, 3] == 0
    assert label_items(np.zeros((3, 3), bool))[0] == 0


def test_random_maps_are_seeded_smooth_and_in_unit_range() -> None:
    a, b = random_maps([(16, 16), (9, 12)], seed=3), random_maps([(16, 16), (9, 12)], seed=3)
    assert [m.shape for m in a] == [(16, 16), (9, 12)]
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].min() == 0.0 and a[0].max() == pytest.approx(1.0)
    assert np.abs(np.diff(a[0], axis=1)).mean() < 0.2  # smoothed, not white noise


def test_auc_is_the_trapezoid_over_unit_interval() -> None:
    np.testing.assert_allclose(auc(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])), [1.0, 0.25])


# -- a model that learnt the planted square ------------------------------------------------------------

def test_gradcam_localises_the_planted_square_better_than_random(planted: dict) -> None:
    x, masks = planted["x"], planted["masks"]
    maps = cam.explain(planted["bundle"], x, method="gradcam")
    rand = random_maps([(SIZE, SIZE)] * len(x))
    assert pointing_game(maps, masks) >= 0.9 > pointing_game(rand, masks) + 0.3
    assert item_recall(maps, masks) > item_recall(rand, masks)


def test_deletion_and_insertion_beat_random_maps(planted: dict) -> None:
    b, x = planted["bundle"], planted["x"]
    maps = cam.explain(b, x, method="gradcam")
    rand = random_maps([(SIZE, SIZE)] * len(x))
    assert deletion_auc(b, x, maps) < deletion_auc(b, x, rand)
    assert insertion_auc(b, x, maps) > insertion_auc(b, x, rand)
    curves = perturbation_curves(b, x, maps, "deletion", steps=4)
    assert curves.shape == (len(x), 5)
    np.testing.assert_allclose(curves[:, 0], b.sensitive_score(x), atol=1e-5)  # step 0 = intact image


def test_mprt_randomising_weights_decorrelates_the_maps(planted: dict) -> None:
    rho = mprt_spearman(planted["bundle"], planted["x"], "gradcam")
    assert rho < 0.5


def test_evaluate_returns_every_metric_and_curves(planted: dict) -> None:
    res = evaluate(planted["bundle"], planted["data"], methods=["gradcam", "layercam"], steps=4)
    assert set(res) == {"gradcam", "layercam", "random", "curves"}
    for key in ("deletion_auc", "insertion_auc", "pointing_game", "item_recall", "mprt_spearman", "seconds"):
        assert key in res["gradcam"] and key in res["random"]
    assert res["random"]["mprt_spearman"] is None
    assert len(res["curves"]["gradcam"]["deletion"]) == 5
    json.dumps(res)  # JSON-ready: no NaN


def test_cam_eval_cli_beats_random_and_saves_json(planted: dict, tmp_path: Path) -> None:
    res = _runner().invoke(main, ["eval", "--model", str(planted["model"]), "--data", str(planted["data"]),
                                  "--method", "gradcam", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) == {"gradcam", "random"}
    g, r = out["gradcam"], out["random"]
    assert g["pointing_game"] > r["pointing_game"] and g["item_recall"] > r["item_recall"]
    assert g["deletion_auc"] < r["deletion_auc"] and g["insertion_auc"] > r["insertion_auc"]
    saved = json.loads((tmp_path / "cam-eval.json").read_text())
    assert "curves" in saved and saved["gradcam"] == out["gradcam"]
    assert "gradcam" in (tmp_path / "cam-eval.html").read_text()


def test_cam_eval_cli_table_and_bad_split(planted: dict) -> None:
    res = _runner().invoke(main, ["eval", "--model", str(planted["model"]), "--data", str(planted["data"]),
                                  "--method", "gradcam", "--max-images", "10", "--steps", "2"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("method") and lines[1].startswith("gradcam") and lines[-1].startswith("random")
    bad = _runner().invoke(main, ["eval", "--model", str(planted["model"]), "--data", str(planted["data"]),
                                  "--split", "val"])
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "saliency"])
def test_gradient_maps_survive_a_saturated_softmax_and_do_not_depend_on_the_batch(planted: dict,
                                                                                  method: str) -> None:
    """Logits x 1000: probabilities round to exactly 0 and 1, whose gradient is zero or noise.
    Gradient methods score log-odds from the logits, so the maps stay the unsaturated model's
    maps (up to the per-image scale the normalisation removes), one image alone or in a batch."""
    import keras

    from cam import Explainer
    from hardenkit.modelio import bundle_from_model, load_model

    x = planted["x"]
    hot = load_model(planted["model"]).model
    dense = hot.get_layer("probs") if any(layer.name == "probs" for layer in hot.layers) else \
        next(layer for layer in reversed(hot.layers) if isinstance(layer, keras.layers.Dense))
    dense.kernel.assign(dense.kernel * 1000.0)
    dense.bias.assign(dense.bias * 1000.0)
    hot_bundle = bundle_from_model(hot, ["normal", "sensitive"])
    assert (hot_bundle.predict(x)[:, 0] < 1e-12).mean() >= 0.5  # saturated far below float32 rounding
    ex_hot = Explainer(hot_bundle, method)
    maps_hot = np.stack(ex_hot(list(x)))
    alone = np.stack([ex_hot([im])[0] for im in x[:4]])
    assert np.abs(alone - maps_hot[:4]).max() < 1e-4
    maps = np.stack(Explainer(planted["bundle"], method)(list(x)))
    assert pointing_game(maps_hot, planted["masks"]) >= pointing_game(maps, planted["masks"]) - 0.1
    assert pointing_game(maps_hot, planted["masks"]) >= 0.8
    assert all(m.max() > 0.99 for m in maps_hot)  # no all-zero map from a vanished gradient
