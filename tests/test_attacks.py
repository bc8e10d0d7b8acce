"""attacks/: every attack on a briefly trained tiny model, boundary samples, mining, metrics, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import attacks
from attacks import ATTACKS
from hardenkit.errors import ConfigError, DataError, UsageError

L2_EPS = 2.0  # the planted 3x3 square needs a large budget to hide: the model is robust at 8/255
LINF_EPS = 0.3


@pytest.fixture(scope="module")
def trained() -> Any:
    """tiny_model (8x8) fitted on planted squares: clean accuracy 1.0 on held-out planted images."""
    from hardenkit.modelio import bundle_from_model
    from hardenkit.testkit import planted_batch, seed_everything, tiny_model

    seed_everything(0)
    x, y, _ = planted_batch(64, size=8, seed=0)
    m = tiny_model()
    import keras

    m.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=30, batch_size=16, verbose=0)
    return bundle_from_model(m, ["normal", "sensitive"])


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    from hardenkit.testkit import planted_batch

    x, y, _ = planted_batch(16, size=8, seed=1)
    return x, y.astype(np.int64)


def _acc(bundle: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((bundle.predict(x).argmax(1) == y).mean())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_lowers_accuracy_within_bounds(name: str, trained: Any, held_out: Any) -> None:
    x, y = held_out
    assert _acc(trained, x, y) == 1.0
    cls = ATTACKS[name]
    eps = L2_EPS if cls.norm == "l2" else LINF_EPS
    res = attacks.generate(trained, x, y, attack=name, eps=eps, batch_size=8)
    adv = res.adversarial
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).reshape(len(x), -1)
    if cls.norm == "linf":
        assert np.abs(d).max() <= eps + 1e-6
    else:
        assert np.sqrt((d.astype(np.float64) ** 2).sum(axis=1)).max() <= eps + 1e-5
    pred = trained.predict(adv).argmax(1)
    np.testing.assert_array_equal(res.success, pred != y)
    assert _acc(trained, adv, y) < 1.0
    assert res.attack == name and res.eps == eps and res.steps <= 5


def test_eps_zero_is_identity_and_small_eps_is_weaker(trained: Any, held_out: Any) -> None:
    x, y = held_out
    res = attacks.generate(trained, x, y, attack="pgd", eps=0)
    np.testing.assert_array_equal(res.adversarial, x)
    assert not res.success.any()
    weak = attacks.generate(trained, x, y, attack="pgd", eps=0.01)
    strong = attacks.generate(trained, x, y, attack="pgd", eps=LINF_EPS)
    assert weak.success.mean() < strong.success.mean()


@pytest.mark.parametrize("kwargs, err, match", [
    ({"attack": "nope"}, UsageError, "unknown attack 'nope'"),
    ({"eps": -0.1}, ConfigError, "expected eps >= 0"),
    ({"steps": 0}, ConfigError, "expected steps >= 1"),
    ({"batch_size": 0}, ConfigError, "expected batch_size >= 1"),
    ({"labels": np.zeros(3, np.int64)}, UsageError, "expected 16 labels"),
    ({"labels": np.full(16, 7)}, UsageError, r"expected labels in \[0, 1\]"),
    ({"images": np.zeros((16, 9, 9, 3), np.float32)}, UsageError, "at the model's input size"),
    ({"images": np.full((16, 8, 8, 3), 2.0, np.float32)}, UsageError, r"expected pixel values in \[0, 1\]"),
])
def test_generate_errors(kwargs: dict[str, Any], err: type, match: str, trained: Any, held_out: Any) -> None:
    x, y = held_out
    args = {"images": x, "labels": y, **kwargs}
    with pytest.raises(err, match=match):
        attacks.generate(trained, **args)


def test_numpy2_int32_labels_regression(trained: Any, held_out: Any) -> None:
    """eagerpy 0.30 + NumPy 2: int32-vs-int64 tensor comparison dies in np.find_common_type.

    The adapter casts labels to int64 (tf.argmax's dtype); int32 labels must give the same
    result as int64 ones, while the raw eagerpy/foolbox path with int32 labels fails.
    """
    import eagerpy as ep
    import foolbox as fb
    import tensorflow as tf

    x, y = held_out
    if not hasattr(np, "find_common_type"):  # NumPy 2: show the trap is real
        with pytest.raises(AttributeError, match="find_common_type"):
            _ = ep.astensor(tf.constant([0, 1], tf.int32)) == ep.astensor(tf.constant([0, 1], tf.int64))
        raw = fb.TensorFlowModel(trained.prob_model, bounds=(0, 1), device="/CPU:0")
        with pytest.raises(AttributeError, match="find_common_type"):
            fb.attacks.FGSM()(raw, tf.constant(x), tf.constant(y.astype(np.int32)), epsilons=0.1)
    r32 = attacks.generate(trained, x, y.astype(np.int32), attack="fgsm", eps=LINF_EPS)
    r64 = attacks.generate(trained, x, y, attack="fgsm", eps=LINF_EPS)
    np.testing.assert_array_equal(r32.adversarial, r64.adversarial)
    np.testing.assert_array_equal(r32.success, r64.success)
    # the decision-based path compares labels with argmax too
    assert attacks.generate(trained, x, y.astype(np.int32), attack="hopskipjump", eps=LINF_EPS).success.any()


def test_logits_views() -> None:
    import keras

    from attacks._compiled import compiled
    from hardenkit.testkit import dummy_image, nested_model, tiny_model

    x = dummy_image()[None]
    m = tiny_model()
    c = compiled(m)
    assert c.logits_kind == "pre-softmax" and compiled(m) is c
    np.testing.assert_allclose(keras.ops.softmax(c.logits(x)).numpy(), m(x).numpy(), atol=1e-6)
    inp = keras.Input((8, 8, 3))
    raw = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    assert compiled(raw).logits_kind == "model"
    assert attacks.embed(nested_model(), x).shape == (1, 4)  # pooled base features, not the conv map


def test_pgd_tf(trained: Any, held_out: Any) -> None:
    x, y = held_out
    adv = attacks.pgd_tf(trained, x, y, eps=LINF_EPS, steps=5, seed=3, batch_size=5)
    assert adv.dtype == np.float32 and np.abs(adv - x).max() <= LINF_EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert _acc(trained, adv, y) < 0.5
    np.testing.assert_array_equal(adv, attacks.pgd_tf(trained, x, y, eps=LINF_EPS, steps=5, seed=3, batch_size=5))
    other = attacks.pgd_tf(trained, x, y, eps=LINF_EPS, steps=1, seed=4, step_size=1e-4)
    assert not np.array_equal(adv, other)
    np.testing.assert_array_equal(attacks.pgd_tf(trained, x, y, eps=0.0), x)
    with pytest.raises(ConfigError, match="expected eps >= 0"):
        attacks.pgd_tf(trained, x, y, eps=-1)


def _p_label(bundle: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return bundle.predict(x)[np.arange(len(y)), y]


def test_jacobian_moves_toward_boundary(trained: Any, held_out: Any) -> None:
    x, y = held_out
    before = _p_label(trained, x, y)
    walked = attacks.jacobian_boundary(trained, x, y, lam=0.05, steps=5)
    after = _p_label(trained, walked, y)
    assert walked.shape == x.shape and walked.min() >= 0 and walked.max() <= 1
    assert np.abs(walked - x).max() <= 5 * 0.05 + 1e-6
    assert (after < before).all()  # every seed is classified right, so every label prob drops
    assert np.abs(after - 0.5).mean() < np.abs(before - 0.5).mean()
    with pytest.raises(ConfigError, match="expected lam > 0"):
        attacks.jacobian_boundary(trained, x, y, lam=0)


def test_jacobian_stops_after_crossing(trained: Any, held_out: Any) -> None:
    x, y = held_out
    far = attacks.jacobian_boundary(trained, x, y, lam=0.2, steps=5, refine=False)
    flipped = trained.predict(far).argmax(1) != y
    assert flipped.any()
    # unrefined: stopped right after the flip, so seeds that flipped in one step moved once
    one = attacks.jacobian_boundary(trained, x, y, lam=0.2, steps=1, refine=False)
    one_flip = trained.predict(one).argmax(1) != y
    np.testing.assert_array_equal(far[one_flip], one[one_flip])
    # refined: the crossing step is bisected, landing just past the boundary
    near = attacks.jacobian_boundary(trained, x, y, lam=0.2, steps=5)
    p_far, p_near = _p_label(trained, far, y), _p_label(trained, near, y)
    np.testing.assert_array_equal(trained.predict(near).argmax(1) != y, flipped)
    assert (p_near[flipped] < 0.5).all() and (p_near[flipped] > 0.4).all()
    assert (p_near[flipped] >= p_far[flipped]).all()
    assert np.abs(near - x).max() <= np.abs(far - x).max() + 1e-6


def test_bisect_lands_on_the_flip(trained: Any, held_out: Any) -> None:
    x, y = held_out
    adv = attacks.generate(trained, x, y, attack="pgd", eps=LINF_EPS).adversarial
    c0 = trained.predict(x).argmax(1)
    flips = trained.predict(adv).argmax(1) != c0
    assert flips.sum() >= 4
    tol = 1e-3
    pts, t = attacks.bisect_boundary(trained, x, adv, tol=tol, return_t=True)
    d = adv - x
    inside = x + np.maximum(t - tol, 0).reshape(-1, 1, 1, 1).astype(np.float32) * d
    np.testing.assert_array_equal(trained.predict(pts).argmax(1)[flips], 1 - c0[flips])
    np.testing.assert_array_equal(trained.predict(inside).argmax(1)[flips], c0[flips])
    assert (t[flips] < 1).all() and (t[flips] > 0).all()
    # a pair with no flip comes back as its second image
    same, t_same = attacks.bisect_boundary(trained, x[:1], x[:1] * 0.99, return_t=True)
    np.testing.assert_array_equal(same, x[:1] * 0.99)
    assert t_same[0] == 1.0


def _near_boundary(bundle: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    adv = attacks.generate(bundle, x, y, attack="pgd", eps=LINF_EPS).adversarial
    return attacks.bisect_boundary(bundle, x, adv)


def test_mine_pool_ranks_planted_boundary_images_first(trained: Any, tmp_path: Path) -> None:
    from hardenkit.imageio import write_image
    from hardenkit.testkit import planted_batch

    xs, ys, _ = planted_batch(32, size=8, seed=5)
    boundary = _near_boundary(trained, xs[:16], ys[:16])  # the reference set
    planted = _near_boundary(trained, xs[16:22], ys[16:22])  # 6 boundary-ish pool images
    clear, _, _ = planted_batch(20, size=8, seed=9)  # clearly classified pool images
    pool = np.concatenate([clear[:10], planted, clear[10:]])
    res = attacks.mine_pool(trained, pool, boundary, top=8)
    assert [m.rank for m in res] == list(range(1, 9))
    assert sorted(m.index for m in res.items[:6]) == list(range(10, 16))
    assert all(a.distance <= b.distance for a, b in zip(res.items, res.items[1:]))
    # the same pool as files, one of them broken: skipped and reported, not fatal
    for i, im in enumerate(pool):
        write_image(tmp_path / f"{i:02d}.png", im)
    (tmp_path / "99-broken.png").write_bytes(b"not an image")
    res_files = attacks.mine_pool(trained, tmp_path, boundary, top=6)
    assert sorted(int(Path(str(m.path)).stem) for m in res_files) == list(range(10, 16))
    assert len(res_files.errors) == 1 and "99-broken.png" in str(res_files.errors[0])
    assert res_files.n_pool == len(pool)
    with pytest.raises(UsageError, match="at least one boundary sample"):
        attacks.mine_pool(trained, pool, pool[:0])


def test_threshold_and_binary_metrics() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.7, 0.1])
    yb = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    # 5 positives: 95% recall needs all 5 -> the lowest positive score
    assert attacks.threshold_at_recall(scores, yb, 0.95) == 0.4
    assert attacks.threshold_at_recall(scores, yb, 0.8) == 0.6  # 4 of 5
    assert attacks.threshold_at_recall(scores, yb, 0.6) == 0.8  # 3 of 5
    for r in (0.6, 0.8, 0.95):
        thr = attacks.threshold_at_recall(scores, yb, r)
        assert attacks.binary_metrics(scores, yb, thr)["recall"] >= r
        assert attacks.binary_metrics(scores, yb, np.nextafter(thr, 1))["recall"] < r
    m = attacks.binary_metrics(scores, yb, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 3, 1)
    assert m["fpr"] == 0.25 and m["miss_rate"] == 0.2
    with pytest.raises(DataError, match="no sensitive samples"):
        attacks.threshold_at_recall(scores, np.zeros(9, int))
    with pytest.raises(ConfigError, match="expected 0 < recall <= 1"):
        attacks.threshold_at_recall(scores, yb, 0)


def test_robustness(trained: Any, held_out: Any) -> None:
    x, y = held_out
    r = attacks.robustness(trained, x, y, attacks=("fgsm", "pgd"), eps=0.15, threshold=0.5)
    assert set(r) >= {"accuracy", "fpr", "miss_rate", "robust_accuracy", "robust_accuracy_per_attack", "n"}
    assert r["n"] == len(x) and r["accuracy"] == 1.0
    for k in ("accuracy", "fpr", "miss_rate", "robust_accuracy"):
        assert 0.0 <= r[k] <= 1.0
    per = r["robust_accuracy_per_attack"]
    assert set(per) == {"fgsm", "pgd"}
    assert r["robust_accuracy"] <= min(per.values()) <= r["accuracy"]
    assert r["robust_accuracy"] < 1.0


@pytest.fixture(scope="module")
def tiny16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hardenkit.modelio import save_model
    from hardenkit.testkit import tiny_model

    p = tmp_path_factory.mktemp("m16") / "m16.keras"
    save_model(tiny_model(size=16), p, ["normal", "sensitive"])
    return p


def _harden(args: list[str]) -> Any:
    from click.testing import CliRunner

    from hardening.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_cli_eval_json(tiny16: Path, tiny_data: Path) -> None:
    res = _harden(["eval", "--model", str(tiny16), "--data", str(tiny_data), "--attack", "fgsm,pgd",
                   "--recall", "0.95", "--json"])
    assert res.exit_code == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["n"] == 16 and set(m["robust_accuracy_per_attack"]) == {"fgsm", "pgd"}
    assert m["miss_rate"] <= 0.05 + 1e-9 and 0 <= m["fpr"] <= 1
    assert m["robust_accuracy"] <= m["accuracy"]


def test_cli_eval_bad_files_and_errors(tiny16: Path, tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "test", data / "test")
    (data / "test" / "normal" / "zz-empty.jpg").write_bytes(b"")
    res = _harden(["eval", "--model", str(tiny16), "--data", str(data), "--attack", "fgsm", "--max-images", "50"])
    assert res.exit_code == 1
    assert "zz-empty.jpg" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "robust_accuracy" in res.stdout
    bad = _harden(["eval", "--model", str(tiny16), "--data", str(data), "--attack", "pgd,nope"])
    assert bad.exit_code == 2 and "Error: expected attacks among" in bad.stderr
    both = _harden(["eval", "--model", str(tiny16), "--data", str(data), "--threshold", "0.5", "--recall", "0.9"])
    assert both.exit_code == 2 and "got both" in both.stderr


def test_cli_mine(tiny16: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mined.csv"
    res = _harden(["mine", "--model", str(tiny16), "--pool", str(tiny_data / "pool"), "--seeds", str(tiny_data),
                   "--top", "5", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "rank,path,distance" and len(rows) == 6
    dist = [float(r.split(",")[-1]) for r in rows[1:]]
    assert dist == sorted(dist)
    assert json.loads(res.stdout)["items"] == 5
