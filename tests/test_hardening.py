from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from hardenkit.errors import ConfigError, UsageError
from hardenkit.modelio import load_model
from hardening.config import HardenConfig
from hardening.samples import SampleSet, attention_samples, erasure_samples, hard_samples


def _blob_map(h: int, w: int, centers: list[tuple[int, int]], r: int = 2) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    for (cy, cx) in centers:
        m[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1] = 1.0
    return m


def test_erasure_label_follows_the_mask_rule() -> None:
    rng = np.random.default_rng(0)
    x = np.full((3, 16, 16, 3), 0.2, np.float32)
    y = np.ones(3, np.int32)
    masks = np.zeros((3, 16, 16), bool)
    masks[0] = _blob_map(16, 16, [(4, 4), (11, 11)]) > 0  # two items; CAM covers one
    masks[1] = _blob_map(16, 16, [(4, 4)]) > 0  # one item; CAM covers it
    maps = np.stack([_blob_map(16, 16, [(4, 4)])] * 3)
    s = erasure_samples(x, y, 1, 0, maps, masks, rng, cover="region")
    assert s.y.tolist() == [1, 0, 1]
    assert s.review.tolist() == [False, False, True]  # image 2 has no mask: review, label kept
    covered = maps[0] > 0
    assert not np.allclose(s.x[0][covered], 0.2) and np.allclose(s.x[0][~covered], 0.2)


def test_erasure_item_rule_keeps_a_small_whole_second_item_sensitive() -> None:
    rng = np.random.default_rng(0)
    x = np.full((2, 20, 20, 3), 0.2, np.float32)
    y = np.ones(2, np.int32)
    masks = np.zeros((2, 20, 20), bool)
    masks[:, 1:10, 1:10] = True  # a big item (81 px), covered by the CAM region below
    masks[0, 15:17, 15:17] = True  # a small item (4 px), left whole: 4 / 85 of the area
    masks[1, 15:17, 15:17] = True
    maps = np.zeros((2, 20, 20), np.float32)
    maps[0, 1:10, 1:10] = 1.0
    maps[1, 1:16, 1:17] = 1.0  # one region over the big item and half of the small one
    area_only = erasure_samples(x, y, 1, 0, maps, masks, rng, threshold=0.5, min_remaining=0.3, cover="region")
    assert area_only.y.tolist() == [0, 0]
    by_item = erasure_samples(x, y, 1, 0, maps, masks, rng, threshold=0.5, min_remaining=0.3, item_visible=0.9,
                              cover="region")
    assert by_item.y.tolist() == [1, 0]  # the half-covered small item is not "in view"


def test_erasure_item_cover_boxes_the_whole_touched_item() -> None:
    rng = np.random.default_rng(0)
    x = np.full((3, 20, 20, 3), 0.2, np.float32)
    y = np.ones(3, np.int32)
    masks = np.zeros((3, 20, 20), bool)
    masks[:, 2:12, 3:7] = True  # a tall item (40 px)
    masks[0, 14:19, 14:19] = True  # a second item (25 px) in image 0 only
    maps = np.zeros((3, 20, 20), np.float32)
    maps[:2, 5:7, 4:6] = 1.0  # a peaked map: 4 pixels of the tall item
    maps[2, 14:18, 14:18] = 1.0  # image 2: the map is off the item
    region = erasure_samples(x, y, 1, 0, maps, masks, rng, cover="region")
    assert region.y.tolist() == [1, 1, 1]  # a few pixels covered: everything stays sensitive
    item = erasure_samples(x, y, 1, 0, maps, masks, rng, cover="item")
    assert item.y.tolist() == [1, 0, 1]  # 25 / 65 of image 0's area left: the second item
    box = np.zeros((20, 20), bool)
    box[2:12, 3:7] = True
    assert not np.allclose(item.x[1][box], 0.2) and np.allclose(item.x[1][~box], 0.2)
    assert np.allclose(item.x[2][masks[2]], 0.2)  # an untouched item is not covered
    found = erasure_samples(x, y, 1, 0, maps, masks, rng, cover="found")
    assert found.y.tolist() == item.y.tolist()  # one hot region per map here: the same items
    two = maps.copy()
    two[0, 15:17, 15:17] = 0.8  # image 0's map also finds the second item: nothing left
    assert erasure_samples(x, y, 1, 0, two, masks, rng, cover="found").y.tolist() == [0, 0, 1]
    assert erasure_samples(x, y, 1, 0, two, masks, rng, cover="item").y.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="expected cover one of 'region', 'item', 'found'"):
        erasure_samples(x, y, 1, 0, maps, masks, rng, cover="box")


def test_weak_keeps_wrong_unsure_and_review_samples() -> None:
    s = SampleSet("cam_erasure", np.zeros((4, 2, 2, 3), np.float32), np.array([1, 1, 0, 1]),
                  np.array([False, False, False, True]), np.arange(4))
    probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.05, 0.95], [0.01, 0.99]])
    assert s.weak(probs).source.tolist() == [0, 2, 3]  # wrong, wrong, for review
    assert s.weak(probs, 0.9).source.tolist() == [0, 1, 2, 3]  # and the unsure one (0.8 < 0.9)
    assert len(SampleSet.empty("cam_erasure", (2, 2, 3)).weak(np.zeros((0, 2)), 0.9)) == 0


def test_boxed_flagged_counts_images_flagged_with_every_item_covered() -> None:
    from hardening.loop import boxed_flagged

    class Stub:  # flags an image by its item-coloured (exactly 0.9) pixels
        def sensitive_score(self, x: np.ndarray) -> np.ndarray:
            return (x == np.float32(0.9)).mean(axis=(1, 2, 3)) * 100

    x = np.full((2, 16, 16, 3), 0.2, np.float32)
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 2:6, 2:6] = True
    x[:, 2:6, 2:6] = 0.9
    x[1, 10:14, 10:14] = 0.9  # image 1: sensitive content the mask misses stays in view
    assert boxed_flagged(Stub(), x, masks, threshold=1.0) == 0.5
    assert np.isnan(boxed_flagged(Stub(), x[:0], masks[:0], threshold=1.0))


def test_alone_flagged_asks_about_each_item_with_the_others_boxed() -> None:
    from hardening.loop import alone_flagged

    class Stub:  # flags an image by its item-coloured (exactly 0.9) pixels: needs two items' worth
        def sensitive_score(self, x: np.ndarray) -> np.ndarray:
            return (x == np.float32(0.9)).mean(axis=(1, 2, 3)) * 100

    x = np.full((3, 16, 16, 3), 0.2, np.float32)
    masks = np.zeros((3, 16, 16), bool)
    masks[:, 1:3, 1:3] = masks[:, 10:14, 10:14] = True  # two items: 4 and 16 pixels
    x[masks] = 0.9
    masks[2, 10:14, 10:14] = False  # image 2 holds one item: not asked about
    # 16 pixels of 256 score 6.25, 4 score 1.56: at 3 only the big item is flagged alone
    assert alone_flagged(Stub(), x, masks, threshold=3.0) == 0.5
    assert alone_flagged(Stub(), x, masks, threshold=1.0) == 1.0
    assert np.isnan(alone_flagged(Stub(), x[2:], masks[2:], threshold=1.0))
    x[1, 5:9, 5:9] = 0.9  # image 1: unmasked content stays in view even with every item boxed, so
    assert alone_flagged(Stub(), x, masks, threshold=1.0) == 0.5  # its items made no difference


def test_attention_samples_cover_wrong_place_never_the_truth() -> None:
    rng = np.random.default_rng(0)
    x = np.full((2, 16, 16, 3), 0.2, np.float32)
    y = np.ones(2, np.int32)
    masks = np.stack([_blob_map(16, 16, [(11, 11)]) > 0] * 2)
    maps = np.stack([_blob_map(16, 16, [(4, 4)]), _blob_map(16, 16, [(11, 11)])])  # wrong, right
    s = attention_samples(x, y, maps, masks, rng)
    assert len(s) == 1 and s.source.tolist() == [0] and s.y.tolist() == [1]
    assert np.allclose(s.x[0][masks[0]], 0.2)  # ground truth untouched
    assert not np.allclose(s.x[0][maps[0] > 0], 0.2)


def test_hard_samples_are_the_wrong_side_of_the_threshold_furthest_first() -> None:
    x = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((6, 2, 2, 3), np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.6, 0.1, 0.2, 0.45, 0.8])  # flagged normals 0, 1; missed sensitive 3, 4
    s = hard_samples(x, y, scores, y == 1, threshold=0.5, cap=10, cases="both")
    assert s.kind == "hard" and s.source.tolist() == [0, 1, 3, 4] and s.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(s.x, x[[0, 1, 3, 4]]) and not s.review.any()
    assert hard_samples(x, y, scores, y == 1, 0.5, cap=2, cases="both").source.tolist() == [0, 3]  # 0.4, 0.3 past
    assert len(hard_samples(x, y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), y == 1, 0.5, cap=10, cases="both")) == 0
    # the default is the config's: the flagged normal images only (HardenConfig.hard_cases)
    assert hard_samples(x, y, scores, y == 1, 0.5, cap=10).source.tolist() == [0, 1]
    assert hard_samples(x, y, scores, y == 1, 0.5, cap=10, cases="flagged").source.tolist() == [0, 1]
    assert hard_samples(x, y, scores, y == 1, 0.5, cap=10, cases="missed").source.tolist() == [3, 4]
    with pytest.raises(ValueError, match="cases"):
        hard_samples(x, y, scores, y == 1, 0.5, cap=10, cases="normal")


def test_hard_kind_is_on_for_flagged_normals_by_default() -> None:
    assert HardenConfig().weights["hard"] == 1.0 and HardenConfig().hard_cases == "flagged"
    assert HardenConfig(weights={"hard": 0}).weights == {**HardenConfig().weights, "hard": 0.0}


def test_make_samples_adds_the_hard_cases_at_the_start_models_threshold() -> None:
    from hardening.loop import _Data, make_samples
    from hardenkit.data import LoadedSplit
    from hardenkit.modelio import ModelBundle
    from hardenkit.testkit import tiny_model

    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 3), np.float32)
    y = np.tile([0, 1], 20).astype(np.int32)
    split = LoadedSplit(x, y, None, [], ("normal", "sensitive"))
    bundle = ModelBundle(tiny_model(), ("normal", "sensitive"), ("sensitive",))
    data = _Data(split, split, split, ("normal", "sensitive"))
    score = bundle.sensitive_score(x)
    thr = float(np.median(score))
    wrong = np.flatnonzero(np.where(y == 1, score < thr, score >= thr))
    off = {"cam_erasure": 0, "attention": 0, "adversarial": 0, "jacobian": 0, "pool": 0}
    sets = make_samples(bundle, data, HardenConfig(weights={**off, "hard": 1}, hard_cases="both"), 1, set(),
                        lambda phase: None, thr)
    assert [s.kind for s in sets] == ["hard"] and len(wrong) > 0
    assert sorted(sets[0].source.tolist()) == wrong.tolist() and sets[0].y.tolist() == y[wrong].tolist()
    assert make_samples(bundle, data, HardenConfig(weights={**off, "hard": 0}), 1, set(), lambda p: None, thr) == []
    flagged = make_samples(bundle, data, HardenConfig(weights=off), 1, set(), lambda p: None, thr)  # the default
    assert sorted(flagged[0].source.tolist()) == [i for i in wrong.tolist() if y[i] == 0] and (y[wrong] == 0).any()
    from attacks import threshold_at_recall

    own = threshold_at_recall(score, y, HardenConfig().recall)  # no threshold given: val's at cfg.recall
    mine = make_samples(bundle, data, HardenConfig(weights=off), 1, set(), lambda p: None)
    assert sorted(mine[0].source.tolist()) == np.flatnonzero((y == 0) & (score >= own)).tolist() and len(mine[0])


@pytest.mark.parametrize("kw, match", [
    ({"rounds": 0}, "expected rounds >= 1, got 0"),
    ({"eps": 2.0}, r"expected 0.0 <= eps <= 1.0, got 2.0"),
    ({"weights": {"bogus": 1.0}}, "expected sample kinds among"),
    ({"weights": {"jacobian": -1}}, "expected weights.jacobian >= 0, got -1"),
    ({"learning_rate": 0}, "expected 0 < learning_rate < 1"),
    ({"clean_fraction": -0.1}, r"expected 0.0 <= clean_fraction <= 1.0, got -0.1"),
    ({"objective": "madry"}, r"expected objective 'mix' or 'trades', got 'madry'"),
    ({"trades_beta": -1}, r"expected trades_beta >= 0, got -1"),
    ({"fpr_weight": -0.5}, r"expected fpr_weight >= 0, got -0.5"),
    ({"train_eps": 0}, r"expected 0.0 < train_eps <= 1.0, got 0"),
    ({"train_eps": 1.5}, r"expected 0.0 < train_eps <= 1.0, got 1.5"),
    ({"erasure_item_visible": 0}, r"expected 0.0 < erasure_item_visible <= 1.0, got 0"),
    ({"erasure_cover": "box"}, r"expected erasure_cover one of 'region', 'item', 'found', got 'box'"),
    ({"hard_cases": "normal"}, r"expected hard_cases one of 'both', 'flagged', 'missed', got 'normal'"),
    ({"erasure_confidence": 1.5}, r"expected 0.0 <= erasure_confidence <= 1.0, got 1.5"),
    ({"final_learning_rate": 2e-3}, r"expected 0 < final_learning_rate <= learning_rate \(0.001\), got 0.002"),
    ({"final_learning_rate": 0}, r"expected 0 < final_learning_rate <= learning_rate"),
    ({"ema_momentum": 1.0}, r"expected 0 < ema_momentum < 1, got 1.0"),
    ({"pool_keep": "yes"}, r"expected pool_keep true or false, got 'yes'"),
    ({"attack_predicted": 1}, r"expected attack_predicted true or false, got 1"),
    ({"overfit_fallback": "no"}, r"expected overfit_fallback true or false, got 'no'"),
    ({"train_attack": "pgd"}, r"expected train_attack one of 'fgsm', 'n-fgsm', got 'pgd'"),
    ({"attention_weight": -1}, r"expected attention_weight >= 0, got -1"),
    ({"attention_target": 0}, r"expected 0.0 < attention_target <= 1.0, got 0"),
    ({"mixed_precision": 1}, r"expected mixed_precision true, false or \"auto\", got 1"),
    ({"mixed_precision": "bf16"}, r"expected mixed_precision true, false or \"auto\", got 'bf16'"),
    ({"eps_warmup": -1}, r"expected eps_warmup >= 0, got -1"),
    ({"eps_warmup": 5}, r"expected eps_warmup < epochs \(5\), got 5"),
    ({"refine_epochs": 0}, r"expected refine_epochs a whole number >= 1, got 0"),
    ({"refine_epochs": 2.5}, r"expected refine_epochs a whole number >= 1, got 2.5"),
])
def test_config_validation(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HardenConfig(**kw)


def test_config_from_toml(tmp_path: Path) -> None:
    p = tmp_path / "harden.toml"
    p.write_text("rounds = 3\neps = 0.01\n[weights]\njacobian = 0\n")
    cfg = HardenConfig.from_toml(p, rounds=2)
    assert cfg.rounds == 2 and cfg.eps == 0.01 and cfg.weights["jacobian"] == 0.0 and cfg.weights["pool"] == 1.0
    p.write_text("roundz = 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        HardenConfig.from_toml(p)
    p.write_text('rounds = "x"\n')  # a bad value names the file ...
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(p))}: expected rounds >= 1, got 'x'$"):
        HardenConfig.from_toml(p)
    p.write_text("rounds = 3\n")  # ... or the command line, when an override is the bad one
    with pytest.raises(ConfigError, match=r"^command line: expected 0.0 <= eps <= 1.0, got 3.0$"):
        HardenConfig.from_toml(p, eps=3.0)
    assert HardenConfig.from_toml(p, rounds=None).rounds == 3  # None = not given


def test_resume_without_a_run_is_a_usage_error(tmp_path: Path) -> None:
    from hardening import loop

    with pytest.raises(UsageError, match="nothing to resume"):
        loop.run(HardenConfig(rounds=1, out=str(tmp_path / "typo")), resume=True)
    assert not (tmp_path / "typo").exists()  # nothing written


def _start_model(tmp_path: Path) -> Path:
    from hardenkit.modelio import save_model
    from hardenkit.testkit import tiny_model

    return save_model(tiny_model(size=16), tmp_path / "start.keras", ["normal", "sensitive"])


def _cfg(tiny_data: Path, tmp_path: Path, out: str, **kw) -> HardenConfig:
    base = dict(rounds=2, data=str(tiny_data), model=str(_start_model(tmp_path)), out=str(tmp_path / out),
                epochs=1, sgd_epochs=1, pgd_steps=2, eval_steps=2, jacobian_seeds=6, drift_images=4,
                pool=str(tiny_data / "pool"), pool_top=3, batch_size=16, seed=3)
    base.update(kw)
    return HardenConfig(**base)


@pytest.mark.slow
def test_run_writes_rounds_and_resume_matches_uninterrupted(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    from hardening import loop

    hard = {"weights": {"hard": 1.0}}  # the kind that reads the start round's threshold back from metrics.json
    full = loop.run(_cfg(tiny_data, tmp_path, "full", **hard))
    out = Path(full.out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        for k in ("accuracy", "fpr", "miss_rate", "robust_accuracy", "pointing_game", "item_recall", "boxed_flagged",
                  "alone_flagged", "samples_added", "val_fpr"):
            assert k in m
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["robust_accuracy"] <= 1
    # the robust-vs-eps curve (eps / 2 too) is measured for the report's first and last round only
    eps = [f"{e:.4f}" for e in (4 / 255, 8 / 255)]
    assert [sorted(m["robust_by_eps"]) for m in metrics] == [eps, eps[1:], eps]
    assert all(m["robust_by_eps"][eps[1]] == m["robust_accuracy"] for m in metrics)
    assert metrics[0]["samples_added"] == {k: 0 for k in metrics[0]["samples_added"]}
    # adversarial examples are made on the fly: one per training image (48 + the kept new samples) per epoch
    kept = sum(v for k, v in metrics[1]["samples_added"].items() if k != "adversarial")
    assert metrics[1]["samples_added"]["adversarial"] == (48 + kept) * 2
    assert (out / "round-2" / "model.keras").exists() and (out / "best.keras").exists()
    assert len(list((out / "round-2" / "drift").glob("*.png"))) == 4
    assert (out / "review" / "review.csv").exists()  # pool images without labels are queued
    best = max(metrics, key=lambda m: m["val_score"])["round"]
    assert (out / "best.keras").read_bytes() == (out / f"round-{best}" / "model.keras").read_bytes()
    saved = json.loads((out / "config.json").read_text())  # the starting model is named by its weights
    assert saved["model_weights_sha256"] == load_model(out / "round-0" / "model.keras").fingerprint()
    from hardenkit.distribute import training_policy

    assert saved["mixed_precision"] == "auto" and saved["training_policy"] == training_policy("auto")

    # kill during round 2, then resume: same final metrics, round 1 not redone
    real = loop._retrain
    calls = []

    def dying(prev, data, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(prev, data, *a, **k)

    monkeypatch.setattr(loop, "_retrain", dying)
    cfg = _cfg(tiny_data, tmp_path, "killed", **hard)
    with pytest.raises(KeyboardInterrupt):
        loop.run(cfg)
    assert loop.finished_rounds(cfg.out) == [0, 1]
    monkeypatch.setattr(loop, "_retrain", real)
    with pytest.raises(UsageError, match="holds a run already"):
        loop.run(cfg)
    resumed = loop.run(cfg, resume=True)
    keys = ("accuracy", "fpr", "miss_rate", "robust_accuracy", "item_recall", "samples_added")
    assert [[m[k] for k in keys] for m in resumed.metrics] == [[m[k] for k in keys] for m in full.metrics]


@pytest.mark.slow
def test_a_round_that_collapsed_is_not_built_on(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    from hardening import loop

    real_retrain, real_evaluate = loop._retrain, loop.evaluate
    starts, warmups, epochs = [], [], []

    def retrain(prev, *a, **k):
        starts.append(Path(prev.path).parent.name)
        warmups.append(k.get("warmup"))
        epochs.append(k.get("epochs"))
        return real_retrain(prev, *a, **k)

    def evaluate(bundle, *a, **k):  # round 1's model measures as collapsed on validation, round 2's as not
        m = real_evaluate(bundle, *a, **k)
        return {**m, "val_accuracy": {"round-1": 0.0, "round-2": 1.0}.get(Path(bundle.path).parent.name, m["val_accuracy"])}

    monkeypatch.setattr(loop, "_retrain", retrain)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    res = loop.run(_cfg(tiny_data, tmp_path, "collapse", pool=None, weights={"pool": 0}, rounds=3,
                        epochs=2, eps_warmup=1, refine_epochs=1))
    assert starts == ["round-0", "round-0", "round-2"]  # round 2 starts again from round 0, the latest round that did not collapse
    assert warmups == [1, 1, 0]  # the budget ramps up only when retraining round 0's model
    assert epochs == [2, 2, 1]  # ... and a hardened model is refined for refine_epochs
    new = [sum(v for k, v in m["samples_added"].items() if k != "adversarial") for m in res.metrics[1:]]
    images = [48 + sum(new[: i + 1]) for i in range(3)]  # every earlier sample is replayed (under replay_max)
    assert [m["samples_added"]["adversarial"] for m in res.metrics[1:]] == [images[0] * 3, images[1] * 3, images[2] * 2]
    assert [m["start_round"] for m in res.metrics] == [None, 0, 0, 2]
    assert res.best_round != 1


@pytest.mark.slow
def test_attention_weight_and_train_attack_reach_the_trainer(tiny_data: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    import hardenkit.train
    from hardening import loop

    real_fit = hardenkit.train.fit_arrays
    seen = []

    def fit(model, x, *a, **k):
        seen.append((x.shape[-1], getattr(model, "attention_weight", None), x[..., 3:].max() if x.shape[-1] == 4 else 0,
                     model.noise_fgsm))
        hist = real_fit(model, x, *a, **k)
        return {**hist, "robust_accuracy": [0.95], "val_robust_accuracy": [0.3]}  # as if overfit

    monkeypatch.setattr(hardenkit.train, "fit_arrays", fit)
    loop.run(_cfg(tiny_data, tmp_path, "att", rounds=1, pool=None, weights={"pool": 0}, attention_weight=2.0,
                  train_attack="n-fgsm", overfit_fallback=False))  # every fit "overfits": warn, keep N-FGSM
    assert seen and all(c == 4 and w == 2.0 and top >= 1 and nf for c, w, top, nf in seen)  # item numbers 1.. in channel 4
    assert "round 1: training robust accuracy 0.95 against 0.30 under PGD-2 on validation" in capsys.readouterr().err
    seen.clear()
    loop.run(_cfg(tiny_data, tmp_path, "plain", rounds=1, pool=None, weights={"pool": 0}))
    assert seen and all(c == 3 and w == 0.0 and not nf for c, w, _, nf in seen)


def _overfit_fits(monkeypatch, n_overfit: int, record) -> list:
    """Patch the loop's fits: each appends ``record(model, kwargs)`` to the returned list, and the
    first ``n_overfit`` report a training robust accuracy far above the validation one."""
    import hardenkit.train

    real_fit = hardenkit.train.fit_arrays
    seen: list = []

    def fit(model, *a, **k):
        seen.append(record(model, k))
        hist = real_fit(model, *a, **k)
        if len(seen) <= n_overfit:
            hist = {**hist, "robust_accuracy": [0.95], "val_robust_accuracy": [0.3]}
        return hist

    monkeypatch.setattr(hardenkit.train, "fit_arrays", fit)
    return seen


@pytest.mark.slow
def test_overfit_fallback_retrains_at_eps_and_later_rounds_stay_there(tiny_data: Path, tmp_path: Path, monkeypatch,
                                                                      capsys) -> None:
    from hardening import loop

    # only round 1's first Adam phase ends overfit
    seen = _overfit_fits(monkeypatch, 1, lambda model, k: (k["description"], round(model.eps * 255, 6)))
    cfg = _cfg(tiny_data, tmp_path, "fallback", pool=None, weights={"pool": 0})
    res = loop.run(cfg)
    assert seen == [("round 1 adam", 10.0), ("round 1 adam", 8.0), ("round 1 sgd", 8.0),
                    ("round 2 adam", 8.0), ("round 2 sgd", 8.0)]
    assert [m["train_eps"] for m in res.metrics] == [None, cfg.eps, cfg.eps]
    assert [m["overfit_fallback"] for m in res.metrics] == [False, True, False]
    out, err = capsys.readouterr()
    assert "round 1: retraining at train_eps = eps (8/255 instead of 10/255)" in err
    # the note names the attack it retrained with: this config's two PGD steps
    assert "(overfit: retrained at 8/255, PGD-2)" in out.splitlines()[1] and "overfit" not in out.splitlines()[2]
    assert (Path(cfg.out) / "tensorboard" / "round-1-fallback").is_dir()
    seen.clear()  # switched off: only the warning, and the configured budget throughout
    res = loop.run(_cfg(tiny_data, tmp_path, "warn-only", rounds=1, pool=None, weights={"pool": 0},
                        overfit_fallback=False))
    assert seen == [("round 1 adam", 10.0), ("round 1 sgd", 10.0)]
    assert res.metrics[1]["train_eps"] == cfg.attack_eps


@pytest.mark.slow
def test_overfit_fallback_at_eps_retrains_with_two_step_pgd(tiny_data: Path, tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    from hardening import loop

    # round 1 overfits at 10/255 and again at 8/255 with one step
    seen = _overfit_fits(monkeypatch, 2, lambda model, k: (k["description"], round(model.eps * 255, 6), model.steps,
                                                           model.noise_fgsm))
    cfg = _cfg(tiny_data, tmp_path, "ladder", pool=None, weights={"pool": 0}, train_attack="n-fgsm")
    res = loop.run(cfg)
    assert seen == [("round 1 adam", 10.0, 1, True), ("round 1 adam", 8.0, 1, True), ("round 1 adam", 8.0, 2, False),
                    ("round 1 sgd", 8.0, 2, False), ("round 2 adam", 8.0, 2, False), ("round 2 sgd", 8.0, 2, False)]
    assert [m["train_steps"] for m in res.metrics] == [None, 2, 2]
    assert [m["overfit_fallback"] for m in res.metrics] == [False, True, False]
    out, err = capsys.readouterr()
    assert "round 1: retraining with 2-step PGD instead of a single-step attack" in err
    assert "(overfit: retrained at 8/255, PGD-2)" in out.splitlines()[1]
    assert (Path(cfg.out) / "tensorboard" / "round-1-fallback-2").is_dir()
    seen.clear()  # resumed after round 1: round 2 keeps the two steps (read back from metrics.json)
    shutil.rmtree(Path(cfg.out) / "round-2")
    loop.run(cfg, resume=True)
    assert seen == [("round 2 adam", 8.0, 2, False), ("round 2 sgd", 8.0, 2, False)]


def test_start_round_is_the_last_round_unless_it_collapsed() -> None:
    from hardening.loop import start_round

    ms = [{"round": 0, "val_score": 0.45, "val_accuracy": 0.88},
          {"round": 1, "val_score": 0.60, "val_accuracy": 0.86},
          {"round": 2, "val_score": 0.55, "val_accuracy": 0.70}]
    assert start_round(ms, chance=0.5) == 2  # worse than round 1 and below the clean floor, not collapsed
    ms.append({"round": 3, "val_score": 0.70, "val_accuracy": 0.51})
    assert start_round(ms, chance=0.5) == 2  # collapsed: back to the latest round that did not
    assert start_round(ms, chance=0.4) == 3  # the same accuracy is no collapse when one class is 40%
    assert start_round([ms[0], {"round": 1, "val_score": 0.5, "val_accuracy": 0.5}], chance=0.5) == 0
    assert start_round([{"round": 0, "val_score": 0.4}], chance=0.5) == 0


def test_replay_keeps_this_round_and_caps_earlier_rounds() -> None:
    from hardening.loop import _replay

    xs = [np.zeros((0, 2, 2, 3), np.float32), np.full((5, 2, 2, 3), 1, np.float32), np.full((4, 2, 2, 3), 2, np.float32)]
    ys = [np.zeros(0, np.int32), np.ones(5, np.int32), np.zeros(4, np.int32)]
    ws = [np.zeros(0, np.float32), np.ones(5, np.float32), np.full(4, 0.5, np.float32)]
    x, y, w = _replay(xs, ys, ws, 3, np.random.default_rng(0))
    assert len(x) == 3 + 4 and (x[-4:] == 2).all() and (y[:3] == 1).all() and (w[-4:] == 0.5).all()
    x2, _, _ = _replay(xs, ys, ws, 3, np.random.default_rng(0))
    assert (x2 == x).all()
    assert len(_replay(xs, ys, ws, 100, np.random.default_rng(0))[0]) == 9
    with pytest.raises(ConfigError, match="replay_max"):
        HardenConfig(replay_max=-1)


def test_kept_samples_skip_the_replay_cap() -> None:
    from hardening.loop import _training_samples

    xs = [np.zeros((0, 1), np.float32), np.arange(6, dtype=np.float32)[:, None], np.full((2, 1), 9, np.float32)]
    ys = [np.zeros(0, np.int32), np.arange(6, dtype=np.int32), np.full(2, 9, np.int32)]
    ws = [np.zeros(0, np.float32), np.ones(6, np.float32), np.ones(2, np.float32)]
    kept = [np.zeros(0, bool), np.array([1, 1, 0, 0, 0, 0], bool), np.array([0, 1], bool)]
    x, y, w = _training_samples(xs, ys, ws, kept, 1, np.random.default_rng(0))
    # one replayed older sample (of 2..5), this round's unkept one, and every kept one (0, 1, this round's 9)
    assert len(x) == 1 + 1 + 3 and sorted(y[-3:].tolist()) == [0, 1, 9]
    assert 2 <= y[0] <= 5 and y[1] == 9 and (x[:, 0] == y).all() and len(w) == 5
    none_kept = [np.zeros(len(a), bool) for a in xs]
    assert len(_training_samples(xs, ys, ws, none_kept, 1, np.random.default_rng(0))[0]) == 1 + 2


def test_demo_pool_is_mined_unless_a_pool_is_named_or_switched_off(tiny_data: Path, tmp_path: Path) -> None:
    from hardening.loop import with_demo_pool

    cfg = with_demo_pool(HardenConfig(), tiny_data)
    assert cfg.pool == str(tiny_data / "pool")
    assert cfg.pool_labels == str(tiny_data / "pool-labels.csv")
    assert with_demo_pool(HardenConfig(pool="mine"), tiny_data).pool == "mine"
    assert with_demo_pool(HardenConfig(weights={"pool": 0}), tiny_data).pool is None
    assert with_demo_pool(HardenConfig(), tmp_path).pool is None  # no pool/ folder


@pytest.mark.slow
def test_fpr_weight_picks_epochs_and_rounds_by_the_operating_point(tiny_data: Path, tmp_path: Path) -> None:
    from hardening import loop

    cfg = _cfg(tiny_data, tmp_path, "fpr", rounds=1, fpr_weight=1.0, pool=None, weights={"pool": 0})
    res = loop.run(cfg)
    metrics = json.loads((Path(res.out) / "metrics.json").read_text())
    assert all(0 <= m["val_fpr"] <= 1 for m in metrics)
    floor = loop._min_clean(metrics, cfg)
    assert res.best_round == max(metrics, key=lambda m: loop.selection_score(m, floor, 1.0))["round"]


def test_best_round_never_a_model_that_lost_its_clean_accuracy() -> None:
    from hardening.loop import selection_score

    rounds = [{"round": 0, "val_score": 0.45, "val_accuracy": 0.88},
              {"round": 1, "val_score": 0.50, "val_accuracy": 0.50},   # collapsed: "robust" on half
              {"round": 2, "val_score": 0.48, "val_accuracy": 0.85}]
    floor = 0.88 - HardenConfig().max_clean_drop
    assert max(rounds, key=lambda m: selection_score(m, floor))["round"] == 2
    assert max(rounds[:2], key=lambda m: selection_score(m, floor))["round"] == 0
    rounds[0]["val_fpr"], rounds[2]["val_fpr"] = 0.1, 0.4  # with fpr weighed in, round 0 wins
    assert max(rounds, key=lambda m: selection_score(m, floor, fpr_weight=1.0))["round"] == 0


def test_training_attack_budget_defaults_past_the_measured_one() -> None:
    assert HardenConfig().attack_eps == pytest.approx(10 / 255)  # 1.25 x the default 8/255
    assert HardenConfig(eps=4 / 255).attack_eps == pytest.approx(5 / 255)
    assert HardenConfig(train_eps=8 / 255).attack_eps == pytest.approx(8 / 255)
    assert HardenConfig(eps=0.9).attack_eps == 1.0


def test_val_subset_is_seeded_and_spans_a_class_sorted_split() -> None:
    from hardening.loop import val_subset

    y = np.repeat([0, 1], 200)  # a split as scan_split lists it: class by class
    sub = val_subset(len(y), seed=0)
    assert len(sub) == 200 and np.array_equal(sub, val_subset(len(y), seed=0))
    assert 0.35 < y[sub].mean() < 0.65  # not the first 200 (all class 0)
    assert not np.array_equal(sub, val_subset(len(y), seed=1))


def test_round_line_names_a_restart_from_an_earlier_round() -> None:
    from reports.hardening import format_round_line

    m = {"round": 2, "accuracy": 0.9, "fpr": 0.1, "miss_rate": 0.05, "robust_accuracy": 0.5, "pointing_game": None,
         "item_recall": None, "samples_added": {"jacobian": 3}, "seconds": 12.0, "start_round": 0}
    assert format_round_line(m).endswith("+3 samples  12s (from round 0)")
    assert format_round_line({**m, "start_round": 1}).endswith("12s")  # the round before: nothing to say
    assert format_round_line({**m, "round": 0, "start_round": None}).endswith("12s")
    assert "acc 90.0%  fpr 10.0%  miss 5.0%  robust 50.0%  pointing -" in format_round_line(m)


@pytest.mark.slow
def test_mixed_precision_trains_the_loaded_model_mixed_and_saves_it_float32(tiny_data: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    import keras

    from hardenkit import distribute
    from hardening import loop

    real = distribute.with_dtype_policy
    seen = []

    def spy(model, policy):
        out = real(model, policy)
        seen.append((policy, out.get_layer("conv").compute_dtype))
        return out

    monkeypatch.setattr(distribute, "with_dtype_policy", spy)
    monkeypatch.setattr(distribute, "training_policy", lambda wanted: "mixed_bfloat16" if wanted else "float32")  # a GPU's float16
    res = loop.run(_cfg(tiny_data, tmp_path, "mixed", rounds=1, pool=None, weights={"pool": 0}, mixed_precision=True))
    assert keras.mixed_precision.global_policy().name == "float32"  # CAM and evaluation stay float32
    assert seen == [("mixed_bfloat16", "bfloat16"), ("float32", "float32")]
    saved = load_model(Path(res.out) / "round-1" / "model.keras").model
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    start = load_model(Path(res.out) / "round-0" / "model.keras").model
    assert any((a != b).any() for a, b in zip(saved.get_weights(), start.get_weights()))  # it trained
