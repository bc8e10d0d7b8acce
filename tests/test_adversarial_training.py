"""hardening.adversarial: on-the-fly PGD training (Madry-style) inside Keras fit."""

from __future__ import annotations

import numpy as np
import pytest

from hardenkit.testkit import planted_batch, seed_everything, tiny_model


def _robust(model, x, y, eps):
    from attacks import pgd_tf

    adv = pgd_tf(model, x, y, eps=eps, steps=10, seed=1)
    return float((model.predict(adv, verbose=0).argmax(1) == y).mean())


def test_adversarial_batch_stays_in_the_eps_ball_and_raises_the_loss() -> None:
    import keras

    from hardening.adversarial import AdversarialTrainer

    seed_everything(0)
    x, y, _ = planted_batch(16)
    t = AdversarialTrainer(tiny_model(), eps=0.05, steps=3)
    xa = np.asarray(t.adversarial_batch(x, y))
    assert np.abs(xa - x).max() <= 0.05 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    loss = keras.losses.SparseCategoricalCrossentropy()
    assert float(loss(y, t.inner(xa))) > float(loss(y, t.inner(x)))
    mixed = AdversarialTrainer(tiny_model(), eps=0.05, steps=3, fgsm_mix=0.5)
    xm = np.asarray(mixed.adversarial_batch(x, y))
    assert xm.shape == x.shape and np.abs(xm - x).max() <= 0.05 + 1e-6
    with pytest.raises(ValueError):
        AdversarialTrainer(tiny_model(), eps=0.05, steps=0)
    with pytest.raises(ValueError, match="objective"):
        AdversarialTrainer(tiny_model(), eps=0.05, objective="free")


@pytest.mark.parametrize("objective", ["mix", "trades"])
def test_fit_reports_robust_accuracy_and_score_and_hardens_the_model(objective: str) -> None:
    from hardening.adversarial import AdversarialTrainer
    from hardenkit.train import fit_arrays

    x, y, _ = planted_batch(256, seed=1)
    xv, yv, _ = planted_batch(64, seed=2)
    xt, yt, _ = planted_batch(128, seed=3)
    eps = 0.12
    seed_everything(0)
    plain = tiny_model(seed=0)
    fit_arrays(plain, x, y, xv, yv, epochs=12, batch_size=32, learning_rate=3e-2, seed=0, monitor="val_accuracy")
    seed_everything(0)
    inner = tiny_model(seed=0)
    trainer = AdversarialTrainer(inner, eps=eps, steps=2, objective=objective)
    hist = fit_arrays(trainer, x, y, xv, yv, epochs=12, batch_size=32, learning_rate=3e-2, seed=0,
                      monitor="val_score")
    for key in ("loss", "robust_accuracy", "val_robust_accuracy", "val_clean_accuracy", "val_score"):
        assert key in hist and len(hist[key]) == 12
    assert all(0 < v for v in hist["loss"])
    assert hist["val_score"] == pytest.approx(
        [0.5 * (a + b) for a, b in zip(hist["val_clean_accuracy"], hist["val_robust_accuracy"])])
    r_plain, r_adv = _robust(plain, xt, yt, eps), _robust(inner, xt, yt, eps)
    assert r_adv > r_plain + 0.1, (r_plain, r_adv)


@pytest.mark.parametrize("fraction, rows", [(1.0, 16), (0.5, 12), (0.0, 8)])
def test_clean_fraction_sets_how_much_of_the_batch_is_also_trained_clean(fraction: float, rows: int) -> None:
    import keras

    from hardening.adversarial import AdversarialTrainer

    seed_everything(0)
    x, y, _ = planted_batch(8)
    t = AdversarialTrainer(tiny_model(), eps=0.05, steps=1, clean_fraction=fraction)
    t.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"], run_eagerly=True)
    seen = []
    orig = t.compute_loss

    def spy(**kw):
        seen.append(int(kw["y_pred"].shape[0]))
        return orig(**kw)

    t.compute_loss = spy
    t.train_step((x, y))
    assert seen == [rows]
    with pytest.raises(ValueError):
        AdversarialTrainer(tiny_model(), eps=0.05, clean_fraction=1.5)


def test_score_ranks_an_epoch_below_the_clean_floor_under_every_acceptable_one() -> None:
    import keras

    from hardening.adversarial import AdversarialTrainer

    seed_everything(0)
    x, y, _ = planted_batch(16)
    for floor in (0.0, 1.01):  # 1.01: no epoch can reach it
        t = AdversarialTrainer(tiny_model(), eps=0.05, steps=1, min_clean_accuracy=floor)
        t.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        res = t.evaluate(x, y, verbose=0, return_dict=True)
        clean, robust = res["clean_accuracy"], res["robust_accuracy"]
        want = 0.5 * (clean + robust) if floor == 0.0 else clean - 1.0
        assert res["score"] == pytest.approx(want, abs=1e-6)


def test_training_and_validation_attacks_use_their_own_budgets() -> None:
    import tensorflow as tf

    from hardening.adversarial import AdversarialTrainer

    seed_everything(0)
    x, y, _ = planted_batch(16)
    t = AdversarialTrainer(tiny_model(), eps=0.08, eval_eps=0.02, steps=2)
    train_delta = np.abs(np.asarray(t.adversarial_batch(x, y)) - x).max()
    val_delta = np.abs(np.asarray(t._attack(tf.constant(x), tf.constant(y), 3, 0.01, eps=t.eval_eps)) - x).max()
    assert 0.02 + 1e-6 < train_delta <= 0.08 + 1e-6  # the training attack goes past the validation budget
    assert val_delta <= 0.02 + 1e-6
    assert AdversarialTrainer(tiny_model(), eps=0.05).eval_eps == 0.05  # defaults to eps
    with pytest.raises(ValueError, match="eval_eps"):
        AdversarialTrainer(tiny_model(), eps=0.05, eval_eps=2.0)


def test_eps_warmup_ramps_the_training_budget_only() -> None:
    import tensorflow as tf

    from hardening.adversarial import AdversarialTrainer, EpsWarmup
    from hardenkit.train import fit_arrays

    seed_everything(0)
    x, y, _ = planted_batch(64)
    t = AdversarialTrainer(tiny_model(), eps=0.08, steps=2)
    t.eps_scale.assign(0.25)
    assert np.abs(np.asarray(t.adversarial_batch(x, y)) - x).max() <= 0.02 + 1e-6
    val_delta = np.abs(np.asarray(t._attack(tf.constant(x), tf.constant(y), 2, 0.1, eps=t.eval_eps)) - x).max()
    assert val_delta > 0.02 + 1e-3  # the validation attack keeps its full budget
    t.eps_scale.assign(0.0)  # the compiled train step reads the scale: at 0 the "attacked" half is the clean one
    hist = fit_arrays(t, x, y, x[:16], y[:16], epochs=1, batch_size=32, seed=0, monitor="val_score")
    assert hist["robust_accuracy"] == hist["clean_accuracy"]
    t.eps_scale.assign(1.0)
    hist = fit_arrays(t, x, y, x[:16], y[:16], epochs=3, batch_size=32, seed=0, monitor="val_score",
                      callbacks=[EpsWarmup(t, 2)])
    assert hist["eps_scale"] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert float(t.eps_scale.numpy()) == 1.0  # back to the full budget after the fit
    with pytest.raises(ValueError, match="epochs >= 0"):
        EpsWarmup(t, -1)


class _Fixed:
    """A stand-in classifier whose predictions are given (FprSelectionScore only calls predict)."""

    def __init__(self, sensitive_scores):
        s = np.asarray(sensitive_scores, np.float32)
        self.probs = np.stack([1 - s, s], axis=1)

    def predict(self, x, batch_size=None, verbose=0):
        return self.probs[: len(x)]


def test_fpr_selection_score_measures_fpr_at_the_recall_and_mixes_it_in() -> None:
    from hardening.adversarial import FprSelectionScore

    x = np.zeros((4, 8, 8, 3), np.float32)
    yb = np.array([1, 1, 0, 0])
    cb = FprSelectionScore(_Fixed([0.9, 0.8, 0.85, 0.1]), x, yb, (1,), recall=1.0, fpr_weight=1.0,
                           min_clean_accuracy=0.8)
    logs = {"val_clean_accuracy": 0.9, "val_robust_accuracy": 0.6}
    cb.on_epoch_end(0, logs)  # threshold 0.8 holds recall 1: one of two normals (0.85) flagged
    assert logs["val_fpr"] == 0.5 and logs["val_select"] == pytest.approx((0.9 + 0.6 + 0.5) / 3)
    logs = {"val_accuracy": 0.9}  # a plain classifier: its accuracy stands for clean and robust
    cb.on_epoch_end(0, logs)
    assert logs["val_select"] == pytest.approx((0.9 + 0.9 + 0.5) / 3)
    logs = {"val_clean_accuracy": 0.7, "val_robust_accuracy": 0.99}  # below the clean floor
    cb.on_epoch_end(0, logs)
    assert logs["val_select"] == pytest.approx(0.7 - 1)
    heavy = FprSelectionScore(_Fixed([0.9, 0.8, 0.85, 0.1]), x, yb, (1,), recall=0.5, fpr_weight=2.0)
    logs = {"val_clean_accuracy": 0.9, "val_robust_accuracy": 0.6}
    heavy.on_epoch_end(0, logs)  # recall 0.5: threshold 0.9, no normal flagged
    assert logs["val_fpr"] == 0.0 and logs["val_select"] == pytest.approx((0.9 + 0.6 + 2.0) / 4)


def test_fit_keeps_the_epoch_with_the_best_fpr_selection_score() -> None:
    from attacks import threshold_at_recall
    from hardening.adversarial import FprSelectionScore
    from hardenkit.train import fit_arrays

    x, y, _ = planted_batch(128, seed=1)
    xv, yv, _ = planted_batch(64, seed=2)
    seed_everything(0)
    model = tiny_model(seed=0)
    cb = FprSelectionScore(model, xv, yv == 1, (1,), recall=0.95, fpr_weight=1.0)
    hist = fit_arrays(model, x, y, xv, yv, epochs=6, batch_size=32, learning_rate=3e-2, seed=0,
                      callbacks=[cb], monitor="val_select")
    assert len(hist["val_fpr"]) == len(hist["val_select"]) == 6
    p = model.predict(xv, verbose=0)
    acc = float((p.argmax(1) == yv).mean())
    thr = threshold_at_recall(p[:, 1], yv == 1, 0.95)
    fpr = float((p[yv == 0, 1] >= thr).mean())
    assert (2 * acc + (1 - fpr)) / 3 == pytest.approx(max(hist["val_select"]), abs=1e-6)  # the kept weights


def _attention_trainer(target: float = 0.6):
    import numpy as np

    from hardening.adversarial import AdversarialTrainer

    inner = tiny_model()
    dense = inner.get_layer("probs")
    dense.set_weights([np.stack([-np.ones(4), np.ones(4)], axis=1).astype(np.float32), np.zeros(2, np.float32)])
    return AdversarialTrainer(inner, eps=0.03, attention_weight=1.0, attention_target=target, sensitive_indices=(1,))


def test_attention_loss_is_the_shortfall_of_each_item_under_the_target_share_of_the_map_maximum() -> None:
    import tensorflow as tf

    from hardening.adversarial import item_channel

    t = _attention_trainer(0.6)
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 0:2, 0:2] = True   # item 1 in every image
    masks[:2, 6:8, 6:8] = True  # item 2 in the first two
    items = item_channel(masks)[..., 0]
    pattern = np.zeros((3, 8, 8), np.float32)
    pattern[:, 0:2, 0:2] = 1.0
    pattern[0, 6:8, 6:8] = 0.2  # image 0: the second item at a fifth of the maximum
    pattern[1, 6:8, 6:8] = 0.9  # image 1: both items above the target
    acts = tf.constant(np.repeat(pattern[..., None], 4, axis=-1))  # every channel alike: map ~ pattern
    per_image = [float(t.attention_loss(acts[i:i + 1], items[i:i + 1])) for i in range(3)]
    assert per_image == pytest.approx([(0.6 - 0.2) / 2, 0.0, 0.0], abs=1e-4)
    assert float(t.attention_loss(acts, np.zeros_like(items))) == 0.0  # no items, no loss
    with tf.GradientTape() as tape:
        tape.watch(acts)
        loss = t.attention_loss(acts[:1], items[:1])
    grad = tape.gradient(loss, acts).numpy()[0]
    assert grad[6:8, 6:8].sum() < 0  # raising the weak item's activations lowers the loss
    with pytest.raises(ValueError, match="sensitive_indices"):
        from hardening.adversarial import AdversarialTrainer

        AdversarialTrainer(tiny_model(), eps=0.03, attention_weight=1.0)


def test_training_with_item_maps_lowers_the_attention_loss() -> None:
    from hardening.adversarial import AdversarialTrainer, item_channel
    from hardenkit.train import fit_arrays

    x, y, masks = planted_batch(64, size=12, seed=4)
    for i in np.flatnonzero(y):  # a second, dimmer and smaller item opposite the planted one
        r, c = (9, 9) if masks[i, :6, :6].any() else (1, 1)
        x[i, r:r + 2, c:c + 2] = 0.45
        masks[i, r:r + 2, c:c + 2] = True
    items = item_channel(masks)
    x4 = np.concatenate([x, items], axis=-1)
    after = {}
    for weight in (0.0, 5.0):
        seed_everything(0)
        t = AdversarialTrainer(tiny_model(size=12, seed=0), eps=0.03, steps=1, attention_weight=weight or 1.0,
                               sensitive_indices=(1,))
        t.attention_weight = weight  # 0: the same trainer without the loss in its steps
        fit_arrays(t, x4 if weight else x, y, x[:16], y[:16], epochs=8, batch_size=16, learning_rate=3e-2, seed=0,
                   monitor="val_score")
        after[weight] = float(t.attention_loss(t._split.lo(x[y == 1]), items[y == 1, ..., 0]))
    assert after[5.0] < after[0.0], after


def test_noise_fgsm_goes_past_the_budget_by_its_noise_and_raises_the_loss() -> None:
    import keras
    import tensorflow as tf

    from hardening.adversarial import AdversarialTrainer

    seed_everything(0)
    x, y, _ = planted_batch(32)
    t = AdversarialTrainer(tiny_model(), eps=0.05, noise_fgsm=True)
    xa = np.asarray(t.adversarial_batch(tf.constant(x), tf.constant(y)))
    d = np.abs(xa - x)
    assert d.max() <= 3 * 0.05 + 1e-6 and (d > 0.05 + 1e-6).mean() > 0.2  # noise 2 eps + a step of eps, unprojected
    assert xa.min() >= 0 and xa.max() <= 1
    noisy = np.clip(x + np.random.default_rng(0).uniform(-0.1, 0.1, x.shape), 0, 1).astype(np.float32)
    loss = keras.losses.SparseCategoricalCrossentropy()
    assert float(loss(y, t.inner(xa))) > float(loss(y, t.inner(noisy)))  # the step is an attack, not noise
    t.eps_scale.assign(0.0)
    assert np.allclose(np.asarray(t.adversarial_batch(tf.constant(x), tf.constant(y))), x)


def test_predicted_labels_attack_the_models_own_prediction_not_the_true_label() -> None:
    import tensorflow as tf

    from hardening.adversarial import AdversarialTrainer

    x, y, _ = planted_batch(32)
    inner = tiny_model()
    pred = inner.predict(x, verbose=0).argmax(1).astype(np.int32)
    wrong = 1 - pred  # true labels the model gets wrong everywhere
    own = AdversarialTrainer(inner, eps=0.05, steps=1, predicted_labels=True)
    plain = AdversarialTrainer(inner, eps=0.05, steps=1)

    def attack(t, labels):
        tf.random.set_seed(7)
        return np.asarray(t.adversarial_batch(tf.constant(x), tf.constant(labels)))

    assert np.allclose(attack(own, wrong), attack(plain, pred))
    assert not np.allclose(attack(own, wrong), attack(plain, wrong))
