"""The closed loop: find what the model gets wrong, turn it into samples, retrain, measure.

Round 0 evaluates the starting model. Every round r >= 1 takes the previous round's model
(or, if that one collapsed to one class, the latest round that did not: :func:`start_round`) and:

1. covers the top CAM region of correctly flagged sensitive training images with noise
   (labelled from the masks, else queued for review) and keeps those the model now misjudges;
2. covers wrong-place attention (map peak outside the mask) with noise, label kept;
3. walks seeds toward the boundary (Jacobian samples), mines a pool, if given, and
   copies the training images the model gets wrong at its val threshold (``hard``: by
   default the normal images it flags, see ``HardenConfig.hard_cases``);
4. retrains it (Adam, then an SGD finish), class-balanced,
   each kind weighted by the config (samples of earlier rounds replayed, at most
   ``replay_max`` of them; labelled pool images, real data, every round), with
   Madry-style adversarial training: every batch is attacked with PGD (optionally partly
   FGSM) against the current weights and trained on with its true labels (:mod:`hardening.adversarial`); best epoch by validation
   score (mean of clean and PGD accuracy), or validation accuracy with adversarial off;
5. evaluates on the test split, the same way every round.

Everything a round produces is on disk before the round is marked done
(``round-K/DONE``), so ``resume=True`` continues a killed run losing only the round in
progress. Randomness is seeded per round, so a resumed run ends where an uninterrupted
one would.

Example:
    >>> from hardening import HardenConfig, run
    >>> result = run(HardenConfig(rounds=5, out="runs/demo"))  # doctest: +SKIP
    >>> result.metrics[-1]["robust_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hardenkit.cli import format_budget
from hardenkit.errors import UsageError
from hardenkit.imageio import atomic_write_text, iter_images, read_image, resize, write_image
from hardenkit.modelio import sensitive_score

from .config import SAMPLE_KINDS, HardenConfig
from .samples import SampleSet, attention_samples, erasure_samples, hard_samples, item_boxes, noise_fill

METRIC_KEYS = ("accuracy", "fpr", "miss_rate", "robust_accuracy", "pointing_game", "item_recall", "boxed_flagged",
               "alone_flagged")


@dataclass
class RunResult:
    """What ``run`` leaves behind: the per-round metrics and where everything is."""

    out: Path
    metrics: list[dict[str, Any]]
    best_round: int
    bad_files: list[str] = field(default_factory=list)


@dataclass
class _Data:
    train: Any
    val: Any
    test: Any
    class_names: tuple[str, ...]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r}"


def finished_rounds(out: str | Path) -> list[int]:
    """Rounds of a run folder that completed (their ``DONE`` marker exists).

    Example:
        >>> finished_rounds("/nonexistent")
        []
    """
    o = Path(out)
    if not o.is_dir():
        return []
    done = []
    for d in o.glob("round-*"):
        try:
            k = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "DONE").exists():
            done.append(k)
    return sorted(done)


def _cam_maps(bundle: Any, x: np.ndarray, method: str | None, batch_size: int = 64) -> np.ndarray:
    import cam

    if len(x) == 0:
        return np.zeros(x.shape[:3], np.float32)
    kw = {"method": method} if method else {}
    maps = cam.explain(bundle, x, target="sensitive", batch_size=batch_size, **kw)
    return np.stack([np.asarray(m, np.float32) for m in maps])


def _pgd(bundle: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int, seed: int) -> np.ndarray:
    from attacks import pgd_tf

    if len(x) == 0 or eps == 0:
        return x.copy()
    return np.asarray(pgd_tf(bundle, x, y, eps=eps, steps=steps, seed=seed), np.float32)


def _accuracy(bundle: Any, x: np.ndarray, y: np.ndarray) -> float:
    if len(x) == 0:
        return float("nan")
    return float((bundle.predict(x).argmax(axis=1) == y).mean())


#: Validation images attacked for the robust half of ``val_score`` (each round's, and each
#: retraining epoch's, which picks the checkpoint): a seeded random subset, the same every round.
VAL_ATTACK_IMAGES = 200


def val_subset(n: int, seed: int, k: int = VAL_ATTACK_IMAGES) -> np.ndarray:
    """Sorted indices of ``k`` of ``n`` validation images, seeded (all of them when ``n <= k``).

    Random, not the first ``k``: a split is listed class by class, so its first images are
    often all of one class.

    Example:
        >>> val_subset(5, 0).tolist(), len(val_subset(400, 0)), bool(val_subset(400, 0).max() > 200)
        ([0, 1, 2, 3, 4], 200, True)
    """
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).permutation(n)[:k])


def _val_threshold(bundle: Any, val: Any, recall: float) -> tuple[float, float]:
    """The sensitive-score threshold that holds ``recall`` on the split ``val``, and the fpr
    there at it: what :func:`evaluate` measures with and :func:`make_samples` picks ``hard`` by."""
    from attacks import threshold_at_recall

    from .adversarial import fpr_at

    yb = bundle.labels_binary(val.y)
    scores = bundle.sensitive_score(val.x)
    thr = float(threshold_at_recall(scores, yb, recall))
    return thr, fpr_at(scores, yb, thr)


def boxed_flagged(bundle: Any, x: np.ndarray, masks: np.ndarray, threshold: float, seed: int = 0) -> float:
    """Share of sensitive images still flagged once every ground-truth item is boxed with noise.

    Each item (connected component of the mask) is covered by its bounding box filled with
    Gaussian noise (:func:`hardening.samples.noise_fill`); nothing sensitive is left to see,
    so a model that still flags these has learned to flag the cover: a censored image would
    stay flagged, and noise would pass for content.

    Args:
        bundle: The model.
        x: (N, H, W, 3) sensitive images.
        masks: (N, H, W) their ground-truth masks.
        threshold: Sensitive-score threshold that flags.
        seed: Noise seed. Defaults to 0.

    Returns:
        Flagged / N (NaN for no image).

    Example:
        >>> boxed_flagged(bundle, test.x[sens], test.masks[sens], 0.5)  # doctest: +SKIP
        0.03
    """
    if not len(x):
        return float("nan")
    rng = np.random.default_rng([seed, 11])
    boxed = np.stack([noise_fill(im, item_boxes(gt, gt), rng) for im, gt in zip(x, masks)])
    return float((bundle.sensitive_score(boxed) >= threshold).mean())


def alone_flagged(bundle: Any, x: np.ndarray, masks: np.ndarray, threshold: float, seed: int = 0) -> float:
    """Share of sensitive items the model sees on their own, in images holding two or more items.

    Each item (connected component of the mask) of such an image is left in view while the
    bounding boxes of the others are filled with Gaussian noise (:func:`hardening.samples.noise_fill`);
    the item counts as seen if that view is flagged and the same image with every item boxed
    (:func:`boxed_flagged`'s view) is not: the item, not the noise, made the difference. This
    asks the model itself what CAM erasure samples train for, "does it still see the second
    region?", without going through a map: :func:`cam.metrics.item_recall` can fall while this
    rises, when a hardened model's map grows peaked on one item (its threshold is relative to
    the map's maximum). Arguments as :func:`boxed_flagged`'s.

    Returns:
        Items seen alone / items in images with two or more (NaN when there are none).

    Example:
        >>> alone_flagged(bundle, test.x[sens], test.masks[sens], 0.5)  # doctest: +SKIP
        0.68
    """
    from cam import label_items

    rng = np.random.default_rng([seed, 12])
    views: list[np.ndarray] = []
    boxed: list[np.ndarray] = []
    owner: list[int] = []
    for im, gt in zip(x, masks):
        n, labels = label_items(gt)
        if n < 2:
            continue
        for k in range(1, n + 1):
            others = (labels > 0) & (labels != k)
            views.append(noise_fill(im, item_boxes(gt, others) & (labels != k), rng))
            owner.append(len(boxed))
        boxed.append(noise_fill(im, item_boxes(gt, gt), rng))
    if not views:
        return float("nan")
    flagged = bundle.sensitive_score(np.stack(views + boxed)) >= threshold
    return float((flagged[: len(views)] & ~flagged[len(views):][owner]).mean())


def evaluate(bundle: Any, data: _Data, cfg: HardenConfig, seed: int, curve: bool = True) -> dict[str, Any]:
    """Measure one model the same way every round (test split; threshold set on val).

    ``curve`` adds robust accuracy at ``cfg.eps / 2`` to ``robust_by_eps`` (the report's
    robust-vs-eps plot, drawn for the first and last round only: one more PGD run over the
    test split, a third of this function's time on the demo data).

    Returns:
        ``accuracy``, ``fpr``, ``miss_rate``, ``robust_accuracy``, ``robust_by_eps``,
        ``pointing_game``, ``item_recall``, ``boxed_flagged``, ``alone_flagged`` (None without
        masks, see :func:`boxed_flagged` and :func:`alone_flagged`), ``threshold``,
        ``confusion`` ([[tn, fp], [fn, tp]] at the threshold), ``val_score`` (mean of clean
        and PGD accuracy on val), ``val_accuracy``, ``val_fpr`` (on val at the same threshold).

    Example:
        >>> m = evaluate(bundle, data, HardenConfig(), seed=0)  # doctest: +SKIP
        >>> sorted(m["robust_by_eps"])  # doctest: +SKIP
        ['0.0157', '0.0314']
    """
    from cam.metrics import item_recall, pointing_game

    test, val = data.test, data.val
    thr, val_fpr = _val_threshold(bundle, val, cfg.recall)
    probs = bundle.predict(test.x)
    s = probs[:, list(bundle.sensitive_indices)].sum(axis=1)
    yb = bundle.labels_binary(test.y)
    flagged = s >= thr
    tn, fp = int((~flagged & (yb == 0)).sum()), int((flagged & (yb == 0)).sum())
    fn, tp = int((~flagged & (yb == 1)).sum()), int((flagged & (yb == 1)).sum())
    acc = float((probs.argmax(1) == test.y).mean())
    by_eps = {}
    for e in sorted({cfg.eps / 2, cfg.eps} if curve else {cfg.eps}):
        adv = _pgd(bundle, test.x, test.y, e, cfg.eval_steps, seed)
        by_eps[f"{e:.4f}"] = _accuracy(bundle, adv, test.y)
    robust = by_eps[f"{cfg.eps:.4f}"]
    pg = ir = bf = af = None
    if test.masks is not None:
        sel = (yb == 1) & test.masks.any(axis=(1, 2))
        if sel.any():
            maps = _cam_maps(bundle, test.x[sel], cfg.cam_method)
            pg = float(pointing_game(maps, test.masks[sel]))
            ir = float(item_recall(maps, test.masks[sel], threshold=cfg.cam_threshold))
            bf = boxed_flagged(bundle, test.x[sel], test.masks[sel], thr, seed)
            af = alone_flagged(bundle, test.x[sel], test.masks[sel], thr, seed)
            af = None if np.isnan(af) else af
    sub = val_subset(len(val.x), cfg.seed)
    val_adv = _pgd(bundle, val.x[sub], val.y[sub], cfg.eps, cfg.eval_steps, seed)
    val_acc = _accuracy(bundle, val.x, val.y)
    val_score = 0.5 * (val_acc + _accuracy(bundle, val_adv, val.y[sub]))
    return {
        "accuracy": acc,
        "fpr": fp / max(1, fp + tn),
        "miss_rate": fn / max(1, fn + tp),
        "robust_accuracy": robust,
        "pointing_game": pg,
        "item_recall": ir,
        "boxed_flagged": bf,
        "alone_flagged": af,
        "threshold": thr,
        "robust_by_eps": by_eps,
        "confusion": [[tn, fp], [fn, tp]],
        "val_score": val_score,
        "val_accuracy": val_acc,
        "val_fpr": val_fpr,
    }


def _save_gallery(bundle: Any, data: _Data, cfg: HardenConfig, rdir: Path, drift_idx: np.ndarray) -> None:
    """CAM overlays of the fixed drift images, and the top-loss gallery with its CSV."""
    from cam import overlay

    test = data.test
    show = (160, 160)
    if len(drift_idx):
        maps = _cam_maps(bundle, test.x[drift_idx], cfg.cam_method)
        for j, i in enumerate(drift_idx):
            ov = overlay(resize(test.x[i], show), resize(maps[j], show))
            write_image(rdir / "drift" / f"{j:02d}-{test.samples[i].path.stem}.png", ov)
    probs = bundle.predict(test.x)
    loss = -np.log(np.clip(probs[np.arange(len(test.y)), test.y], 1e-7, 1.0))
    top = np.argsort(-loss)[: cfg.drift_images or 12]
    maps = _cam_maps(bundle, test.x[top], cfg.cam_method)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "true_label", "score", "loss", "overlay"])
    s = probs[:, list(bundle.sensitive_indices)].sum(axis=1)
    for j, i in enumerate(top):
        rel = f"{rdir.name}/top-loss/{j:02d}-{test.samples[i].path.stem}.png"
        write_image(rdir.parent / rel, overlay(resize(test.x[i], show), resize(maps[j], show)))
        w.writerow([str(test.samples[i].path), data.class_names[int(test.y[i])], f"{s[i]:.4f}",
                    f"{loss[i]:.4f}", rel])
    atomic_write_text(rdir / "top-loss.csv", buf.getvalue())


def _drift_indices(data: _Data, n: int, sensitive_idx: tuple[int, ...], seed: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, int)
    rng = np.random.default_rng(seed)
    sens = np.flatnonzero(np.isin(data.test.y, sensitive_idx))
    norm = np.flatnonzero(~np.isin(data.test.y, sensitive_idx))
    k = min(len(sens), (2 * n) // 3)
    pick = list(rng.choice(sens, k, replace=False)) + list(rng.choice(norm, min(len(norm), n - k), replace=False))
    return np.array(sorted(pick), int)


def _load_pool_labels(path: str | None, class_names: tuple[str, ...]) -> dict[str, int]:
    if not path:
        return {}
    labels = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row.get("label", "")
            if name not in class_names:
                raise UsageError(f"{path}: label {name!r} is not one of {list(class_names)}")
            labels[Path(row["file"]).name] = class_names.index(name)
    return labels


def with_demo_pool(cfg: HardenConfig, data_dir: str | Path) -> HardenConfig:
    """``cfg`` mining the demo data's own pool (``DATA/pool/`` + ``pool-labels.csv``) if it names none.

    The built-in demo data ships an unlabelled pool and its label file, so ``harden run``
    without ``--data`` shows pool mining too. An explicit ``pool``, a pool weight of 0, or a
    data folder without ``pool/`` leave ``cfg`` as it is.

    Example:
        >>> with_demo_pool(HardenConfig(), "/nonexistent").pool is None
        True
    """
    pool = Path(data_dir) / "pool"
    if cfg.pool is not None or cfg.weights["pool"] <= 0 or not pool.is_dir():
        return cfg
    labels = Path(data_dir) / "pool-labels.csv"
    return dataclasses.replace(cfg, pool=str(pool), pool_labels=str(labels) if labels.is_file() else None)


def make_samples(
    bundle: Any, data: _Data, cfg: HardenConfig, r: int, used_pool: set[str], progress: Callable[[str], None],
    threshold: float | None = None,
) -> list[SampleSet]:
    """All new samples of round ``r`` (review-queued ones included, flagged); ``threshold``:
    ``bundle``'s val threshold at ``cfg.recall``, which the ``hard`` kind needs (None: computed
    here from ``data.val``, as :func:`evaluate` does; :func:`run` passes the one in metrics.json)."""
    from attacks import jacobian_boundary

    rng = np.random.default_rng([cfg.seed, r])
    tr = data.train
    sens_idx = bundle.sensitive_indices
    normal_label = next(i for i in range(len(data.class_names)) if i not in sens_idx)
    shape = tr.x.shape[1:]
    sets: list[SampleSet] = []
    probs = bundle.predict(tr.x)
    pred = probs.argmax(1)
    yb = bundle.labels_binary(tr.y)
    right_sens = np.flatnonzero((yb == 1) & (pred == tr.y))
    cap = cfg.max_per_kind
    if cfg.weights["hard"] > 0:
        if threshold is None:
            threshold = _val_threshold(bundle, data.val, cfg.recall)[0]
        sets.append(hard_samples(tr.x, tr.y, sensitive_score(probs, sens_idx), yb == 1, threshold, cap,
                                 cfg.hard_cases))
    need_maps = cfg.weights["cam_erasure"] > 0 or cfg.weights["attention"] > 0
    if need_maps and len(right_sens):
        progress("cam")
        pick = right_sens if len(right_sens) <= cap else rng.choice(right_sens, cap, replace=False)
        maps = _cam_maps(bundle, tr.x[pick], cfg.cam_method)
        masks = tr.masks[pick] if tr.masks is not None else None
        if cfg.weights["cam_erasure"] > 0:
            er = erasure_samples(tr.x[pick], tr.y[pick], int(tr.y[pick][0]), normal_label, maps, masks, rng,
                                 cfg.cam_threshold, cfg.erasure_min_remaining, cfg.erasure_item_visible,
                                 cfg.erasure_cover)
            if len(er):
                er = er.weak(bundle.predict(er.x), cfg.erasure_confidence)
                er.source = pick[er.source] if len(er) else er.source
            sets.append(er)
        if cfg.weights["attention"] > 0 and masks is not None:
            at = attention_samples(tr.x[pick], tr.y[pick], maps, masks, rng, cfg.cam_threshold)
            at.source = pick[at.source] if len(at) else at.source
            sets.append(at)
    boundary = np.zeros((0, *shape), np.float32)
    if cfg.weights["jacobian"] > 0 or (cfg.pool and cfg.weights["pool"] > 0):
        progress("jacobian")
        k = min(cfg.jacobian_seeds, len(tr.x)) or min(100, len(tr.x))
        idx = rng.choice(len(tr.x), k, replace=False)
        boundary = np.asarray(jacobian_boundary(bundle, tr.x[idx], tr.y[idx], lam=cfg.jacobian_lambda), np.float32)
        if cfg.weights["jacobian"] > 0:
            sets.append(SampleSet("jacobian", boundary, tr.y[idx].astype(np.int32), np.zeros(k, bool), idx))
    if cfg.pool and cfg.weights["pool"] > 0 and cfg.pool_top > 0:
        progress("pool")
        from attacks import mine_pool

        labels = _load_pool_labels(cfg.pool_labels, data.class_names)
        paths = [p for p in iter_images([cfg.pool]) if str(p) not in used_pool]
        mined = mine_pool(bundle, paths, boundary, top=cfg.pool_top)
        xs, ys, rev = [], [], []
        for item in getattr(mined, "items", mined):
            p = Path(str(getattr(item, "path", item)))
            try:
                img = resize(read_image(p), bundle.image_size)
            except Exception:  # noqa: BLE001 - mine_pool already reported unreadable files
                continue
            used_pool.add(str(p))
            lab = labels.get(p.name)
            xs.append(img)
            ys.append(lab if lab is not None else -1)
            rev.append(lab is None)
        if xs:
            sets.append(SampleSet("pool", np.stack(xs), np.array(ys, np.int32), np.array(rev, bool),
                                  np.full(len(xs), -1)))
    return sets


def _write_review(out: Path, r: int, sets: list[SampleSet], class_names: tuple[str, ...]) -> int:
    rows = []
    for s in sets:
        for j in np.flatnonzero(s.review):
            rel = f"review/round-{r}/{s.kind}/{j:05d}.png"
            write_image(out / rel, s.x[j])
            guess = class_names[int(s.y[j])] if s.y[j] >= 0 else ""
            rows.append([r, s.kind, rel, guess])
    if not rows:
        return 0
    csv_path = out / "review" / "review.csv"
    old = csv_path.read_text() if csv_path.exists() else "round,kind,file,suggested_label\n"
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(csv_path, old + buf.getvalue())
    return len(rows)


def selection_score(m: dict[str, Any], min_clean: float, fpr_weight: float = 0.0) -> float:
    """How a round competes for ``best.keras``: its ``val_score`` (mean of clean and robust
    accuracy), with ``fpr_weight`` > 0 averaged with ``1 - val_fpr`` at that weight (the
    per-epoch ``val_select`` of :class:`~hardening.adversarial.FprSelectionScore`), unless its
    clean validation accuracy fell below ``min_clean`` (then ``val_accuracy - 1``: below every
    acceptable round). A round saved without ``val_fpr`` (an older run) competes on ``val_score``.

    Example:
        >>> selection_score({"val_score": 0.5, "val_accuracy": 0.5}, 0.8)  # collapsed to one class
        -0.5
        >>> selection_score({"val_score": 0.45, "val_accuracy": 0.85}, 0.8)
        0.45
        >>> selection_score({"val_score": 0.45, "val_accuracy": 0.85, "val_fpr": 0.3}, 0.8, fpr_weight=2)
        0.575
    """
    acc = m.get("val_accuracy")
    if acc is not None and acc < min_clean:
        return float(acc) - 1.0
    if fpr_weight > 0 and m.get("val_fpr") is not None:
        from .adversarial import select_value

        score = float(m["val_score"])  # mean(clean, robust): counts as both
        return select_value(score, score, float(m["val_fpr"]), fpr_weight)
    return float(m["val_score"])


def _retrain(bundle: Any, data: _Data, extra_x: np.ndarray, extra_y: np.ndarray, extra_w: np.ndarray,
             cfg: HardenConfig, r: int, out: Path, min_clean: float = 0.0, policy: str = "float32", *,
             epochs: int, warmup: int, train_eps: float | None = None,
             train_steps: int | None = None) -> tuple[Any, float, int]:
    """Retrain ``bundle``'s model on the training split plus the extra samples: Adam, then SGD.

    The training attack's budget is ``train_eps`` (default ``cfg.attack_eps``), its PGD steps
    ``train_steps`` (default :func:`round_train_steps`' for a first round). If the Adam phase
    ends catastrophically overfit (:func:`overfit_warning`) and ``cfg.overfit_fallback`` is on,
    it is redone from ``bundle``'s model: at ``cfg.eps`` if the budget was above it, and, if
    it overfits at ``cfg.eps`` with a single-step attack, with :data:`OVERFIT_STEPS`-step PGD.
    Returns the retrained (float32) model and the budget and steps it trained with.
    """
    import keras

    from hardenkit.distribute import get_strategy, with_dtype_policy
    from hardenkit.modelio import load_model
    from hardenkit.train import fit_arrays

    tr = data.train
    x = np.concatenate([tr.x, extra_x]) if len(extra_x) else tr.x
    y = np.concatenate([tr.y, extra_y]) if len(extra_y) else tr.y
    w = np.concatenate([np.ones(len(tr.x), np.float32), extra_w]) if len(extra_w) else None
    adv_w = cfg.weights["adversarial"]
    val_steps = min(cfg.eval_steps, 3)  # the per-epoch validation attack's steps
    eps = cfg.attack_eps if train_eps is None else train_eps
    steps = round_train_steps([], cfg) if train_steps is None else train_steps
    attention: dict[str, Any] = {}
    if cfg.attention_weight > 0 and adv_w > 0 and tr.masks is not None:
        from .adversarial import item_channel

        items = item_channel(tr.masks)
        if len(extra_x):
            items = np.concatenate([items, np.zeros((len(extra_x), *items.shape[1:]), np.float32)])
        x = np.concatenate([x, items], axis=-1)  # the trainer splits the item channel off
        attention = {"attention_weight": cfg.attention_weight, "attention_target": cfg.attention_target,
                     "sensitive_indices": tuple(bundle.sensitive_indices)}
    vx, vy = data.val.x, data.val.y
    monitor = "val_select" if cfg.fpr_weight > 0 else "val_score" if adv_w > 0 else "val_accuracy"
    if adv_w > 0:  # the attacked validation costs a sixth of a round: the same subset as evaluate's
        sub = val_subset(len(vx), cfg.seed)
        vx, vy = vx[sub], vy[sub]
    strategy = get_strategy()

    def adam(attack_eps: float, attack_steps: int, logs: str) -> tuple[Any, Any, list[Any], dict[str, list[float]]]:
        """A fresh copy of ``bundle``'s model, its trainer and selection callbacks, after the Adam phase."""
        inner = load_model(bundle.path).model
        if policy != "float32":  # mixed precision (training_policy): the loaded model is float32
            inner = with_dtype_policy(inner, policy)
        model = inner
        ramp: list[Any] = []
        if adv_w > 0:
            from .adversarial import AdversarialTrainer

            model = AdversarialTrainer(inner, eps=attack_eps, eval_eps=cfg.eps, steps=attack_steps,
                                       adversarial_weight=adv_w,
                                       fgsm_mix=cfg.fgsm_mix, eval_steps=val_steps,
                                       clean_fraction=cfg.clean_fraction, min_clean_accuracy=min_clean,
                                       objective=cfg.objective, trades_beta=cfg.trades_beta, dtype=policy,
                                       noise_fgsm=cfg.train_attack == "n-fgsm" and attack_steps == 1,
                                       predicted_labels=cfg.attack_predicted, **attention)
            if warmup:
                from .adversarial import EpsWarmup

                ramp = [EpsWarmup(model, warmup)]
        select: list[Any] = []
        if cfg.fpr_weight > 0:  # scores every validation image: the fpr needs the full split
            from .adversarial import FprSelectionScore

            select = [FprSelectionScore(inner, data.val.x, bundle.labels_binary(data.val.y), bundle.sensitive_indices,
                                        cfg.recall, cfg.fpr_weight, min_clean)]
        tb = keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard" / logs), write_graph=False,
                                         update_freq="epoch", profile_batch=0)
        hist = fit_arrays(model, x, y, vx, vy, epochs=epochs, batch_size=cfg.batch_size,
                          optimizer="adam", learning_rate=cfg.learning_rate, sample_weight=w, seed=cfg.seed * 1000 + r,
                          final_learning_rate=cfg.final_learning_rate, ema_momentum=cfg.ema_momentum,
                          callbacks=[*ramp, *select, tb], description=f"round {r} adam", monitor=monitor)
        return inner, model, select, hist

    with strategy.scope():
        inner, model, select, hist = adam(eps, steps, f"round-{r}")
        warning = overfit_warning(hist, r, val_steps)
        redone = 0
        while warning:
            _log(warning)
            if not (cfg.overfit_fallback and adv_w > 0):
                break
            if eps > cfg.eps:
                _log(f"round {r}: retraining at train_eps = eps ({format_budget(cfg.eps)} instead of "
                     f"{format_budget(eps)}), here and in every later round (overfit_fallback)")
                eps = cfg.eps
            elif steps < OVERFIT_STEPS:
                _log(f"round {r}: retraining with {OVERFIT_STEPS}-step PGD instead of a single-step attack, "
                     "here and in every later round (overfit_fallback)")
                steps = OVERFIT_STEPS
            else:
                break
            redone += 1
            inner, model, select, hist = adam(eps, steps, f"round-{r}-fallback" + (f"-{redone}" if redone > 1 else ""))
            warning = overfit_warning(hist, r, val_steps)
        if cfg.sgd_epochs:
            fit_arrays(model, x, y, vx, vy, epochs=cfg.sgd_epochs, batch_size=cfg.batch_size,
                       optimizer="sgd", learning_rate=cfg.sgd_learning_rate, sample_weight=w,
                       seed=cfg.seed * 1000 + r + 7, callbacks=select, description=f"round {r} sgd", monitor=monitor)
        if policy != "float32":  # saved and evaluated in float32, like the model it started from
            inner = with_dtype_policy(inner, "float32")
    return inner, eps, steps


def round_train_eps(metrics: list[dict[str, Any]], cfg: HardenConfig) -> float:
    """The training attack's budget for the next round: ``cfg.attack_eps``, or lower if an
    earlier round fell back to ``cfg.eps`` (see ``HardenConfig.overfit_fallback``); read from
    ``metrics`` so that ``--resume`` keeps it.

    Example:
        >>> cfg = HardenConfig()
        >>> round(round_train_eps([{"round": 0}], cfg) * 255, 6)
        10.0
        >>> round(round_train_eps([{"round": 0}, {"round": 1, "train_eps": 8 / 255}], cfg) * 255, 6)
        8.0
    """
    return min([cfg.attack_eps, *(float(m["train_eps"]) for m in metrics if m.get("train_eps") is not None)])


def round_train_steps(metrics: list[dict[str, Any]], cfg: HardenConfig) -> int:
    """The training attack's PGD steps for the next round: ``cfg.pgd_steps`` (1 for N-FGSM),
    or more if an earlier round overfit at ``cfg.eps`` and was redone with
    :data:`OVERFIT_STEPS` (see ``HardenConfig.overfit_fallback``); read from ``metrics``.

    Example:
        >>> cfg = HardenConfig()
        >>> round_train_steps([{"round": 0}], cfg), round_train_steps([{"round": 0}, {"round": 1, "train_steps": 2}], cfg)
        (1, 2)
    """
    own = 1 if cfg.train_attack == "n-fgsm" else cfg.pgd_steps
    return max([own, *(int(m["train_steps"]) for m in metrics if m.get("train_steps") is not None)])


#: Training (single-step) robust accuracy this far above the validation PGD one flags a round.
OVERFIT_GAP = 0.25

#: PGD steps of a round redone because its single-step training overfit at ``eps``.
OVERFIT_STEPS = 2


def overfit_warning(hist: dict[str, list[float]], r: int, val_steps: int) -> str | None:
    """A warning line when a round's last Adam epoch looks catastrophically overfit, else None.

    Adversarial training with a weak attack can learn to defeat that attack while PGD
    still breaks the model: the training robust accuracy then climbs far above the
    validation one. Seen on a strong Fashion-MNIST scenes baseline (val accuracy 0.93): in
    round 1-4 training robust accuracy 0.87-0.96 (above the clean 0.84-0.91), validation
    PGD-3 0.12-0.62, test PGD-20 0.000-0.025; a round-3 model classified 0.969 of 256
    training images right under its own FGSM attack (clean 0.953) and 0.020 under PGD-10
    at 8/255. N-FGSM, attacking the predicted label and two PGD steps all showed it too;
    training at the measured budget (``train_eps`` = ``eps`` instead of 1.25x) did not.

    Example:
        >>> overfit_warning({"robust_accuracy": [0.9], "val_robust_accuracy": [0.4]}, 2, 3)[:26]
        'warning: round 2: training'
        >>> overfit_warning({"robust_accuracy": [0.6], "val_robust_accuracy": [0.55]}, 2, 3) is None
        True
    """
    train, val = hist.get("robust_accuracy"), hist.get("val_robust_accuracy")
    if not train or not val or train[-1] - val[-1] <= OVERFIT_GAP:
        return None
    return (f"warning: round {r}: training robust accuracy {train[-1]:.2f} against {val[-1]:.2f} under PGD-{val_steps} "
            "on validation: the model may have learnt to defeat its training attack rather than to resist attacks "
            "(catastrophic overfitting); its robustness at test is likely far lower (on the scenes benchmark "
            "a train_eps equal to eps avoided it, see HardenConfig.train_attack)")


def _replay(xs: list[np.ndarray], ys: list[np.ndarray], ws: list[np.ndarray], cap: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This round's samples (the last of each list) plus at most ``cap`` seeded picks of earlier ones."""
    old_x, old_y, old_w = np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), np.concatenate(ws[:-1])
    if len(old_x) > cap:
        keep = np.sort(rng.choice(len(old_x), cap, replace=False))
        old_x, old_y, old_w = old_x[keep], old_y[keep], old_w[keep]
    return (np.concatenate([old_x, xs[-1]]), np.concatenate([old_y, ys[-1]]), np.concatenate([old_w, ws[-1]]))


def _training_samples(xs: list[np.ndarray], ys: list[np.ndarray], ws: list[np.ndarray], kept: list[np.ndarray],
                      cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The extra samples one round trains on: every ``kept`` one (labelled pool images: real
    data), plus the others through :func:`_replay` (this round's, and at most ``cap`` older).

    Example:
        >>> x = [np.zeros((0, 1)), np.ones((3, 1)), 2 * np.ones((2, 1))]
        >>> y = [np.zeros(0, int), np.array([0, 1, 1]), np.array([1, 0])]
        >>> w = [np.zeros(0), np.ones(3), np.ones(2)]
        >>> k = [np.zeros(0, bool), np.array([True, False, False]), np.zeros(2, bool)]
        >>> len(_training_samples(x, y, w, k, 0, np.random.default_rng(0))[0])  # 1 kept + this round's 2
        3
    """
    keep = [k.astype(bool) for k in kept]
    rx, ry, rw = _replay([a[~k] for a, k in zip(xs, keep)], [a[~k] for a, k in zip(ys, keep)],
                         [a[~k] for a, k in zip(ws, keep)], cap, rng)
    return (np.concatenate([rx, *(a[k] for a, k in zip(xs, keep))]),
            np.concatenate([ry, *(a[k] for a, k in zip(ys, keep))]),
            np.concatenate([rw, *(a[k] for a, k in zip(ws, keep))]))


def _min_clean(metrics: list[dict[str, Any]], cfg: HardenConfig) -> float:
    """The clean validation accuracy a checkpoint must keep: round 0's minus ``max_clean_drop``."""
    first = next((m for m in metrics if m["round"] == 0), None)
    if first is None or first.get("val_accuracy") is None:
        return 0.0
    return float(first["val_accuracy"]) - cfg.max_clean_drop


def _best(metrics: list[dict[str, Any]], cfg: HardenConfig) -> dict[str, Any]:
    """The round that ``best.keras`` holds (see :func:`selection_score`)."""
    floor = _min_clean(metrics, cfg)
    return max(metrics, key=lambda d: selection_score(d, floor, cfg.fpr_weight))


#: A model within this much of the validation accuracy of always answering the largest class has collapsed.
COLLAPSE_MARGIN = 0.02


def start_round(metrics: list[dict[str, Any]], chance: float) -> int:
    """The finished round whose model the next round mines and retrains from: the last one,
    unless it collapsed (validation accuracy within :data:`COLLAPSE_MARGIN` of ``chance``, the
    share of the largest class: a model that answers one class whatever the image, and is
    "robust" on every image of it); then the latest round that did not (round 0 if none).
    A round merely below the clean floor (see :func:`selection_score`) is built on: adversarial
    training costs clean accuracy first and wins it back later (on the demo data with six
    epochs per round, restarting from the best round whenever the last fell below the floor
    restarted rounds 2 and 3 from round 0, and robust accuracy read 0.155 / 0.370 / 0.370 at
    rounds 1-3, test accuracy 0.795 / 0.800 / 0.802 against round 0's 0.875).

    Example:
        >>> ms = [{"round": 0, "val_score": 0.45, "val_accuracy": 0.9},
        ...       {"round": 1, "val_score": 0.7, "val_accuracy": 0.8}]
        >>> start_round(ms, chance=0.5)  # below a 0.05 clean floor (0.85), not collapsed
        1
        >>> start_round(ms + [{"round": 2, "val_score": 0.5, "val_accuracy": 0.51}], chance=0.5)  # collapsed
        1
    """
    def fine(m: dict[str, Any]) -> bool:
        return m.get("val_accuracy") is None or m["val_accuracy"] > chance + COLLAPSE_MARGIN

    ordered = sorted(metrics, key=lambda d: d["round"])
    return int(next((m for m in reversed(ordered) if fine(m)), ordered[0])["round"])


def _render_report(out: Path) -> None:
    try:
        from reports import render_hardening
    except ImportError:
        return
    render_hardening(out)


def run(cfg: HardenConfig, resume: bool = False) -> RunResult:
    """Run (or resume) the hardening loop described by ``cfg``.

    Args:
        cfg: The configuration.
        resume: Continue the run in ``cfg.out`` from its last finished round.

    Returns:
        The :class:`RunResult`.

    Raises:
        UsageError: ``cfg.out`` holds a run already and ``resume`` is False, or nothing to
            resume.

    Example:
        >>> run(HardenConfig(rounds=1, out="runs/x"))  # doctest: +SKIP
    """
    from hardenkit.data import load_split, scan_split
    from hardenkit.modelio import load_model, save_model
    from hardenkit.paths import ensure_demo_data, ensure_demo_model
    from hardenkit.progress import progress_bar
    from hardenkit.testkit import seed_everything
    from reports.hardening import format_round_line

    try:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    except (ImportError, RuntimeError, AttributeError):
        pass
    out = Path(cfg.out)
    done = finished_rounds(out)
    if done and not resume:
        raise UsageError(f"{out}: holds a run already (rounds {done} done); pass --resume or another --out")
    if resume and not done and not (out / "config.json").exists():
        raise UsageError(f"{out}: nothing to resume (no run there); drop --resume to start one")
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        if saved.get("seed") != cfg.seed:
            raise UsageError(f"{out}: was run with seed {saved.get('seed')}, got {cfg.seed}; resume needs the same")
    data_dir = cfg.data or str(ensure_demo_data())
    if cfg.data is None:
        cfg = with_demo_pool(cfg, data_dir)
    model_path = cfg.model or str(ensure_demo_model())
    from hardenkit.distribute import training_policy

    policy = training_policy(cfg.mixed_precision)
    out.mkdir(parents=True, exist_ok=True)
    bundle0 = load_model(model_path)
    atomic_write_text(out / "config.json", json.dumps({**cfg.to_dict(), "data": data_dir, "model": model_path,
                                                       "model_weights_sha256": bundle0.fingerprint(),
                                                       "training_policy": policy}, indent=2))
    if policy != "float32":
        _log(f"note: retraining in {policy} (mixed_precision = {cfg.mixed_precision!r}; "
             "--no-mixed-precision for float32)")
    names = bundle0.class_names
    size = bundle0.image_size
    bad: list[str] = []
    splits = {}
    for name in ("train", "val", "test"):
        sp = scan_split(data_dir, name, names)
        with progress_bar(len(sp), f"load {name}") as adv:
            splits[name] = load_split(sp, size, progress=adv)
        bad += [str(e) for e in splits[name].errors]
    for b in bad:
        _log(f"skipped: {b}")
    data = _Data(splits["train"], splits["val"], splits["test"], names)
    chance = float(np.bincount(data.val.y).max() / len(data.val.y)) if len(data.val.y) else 1.0
    drift_idx = _drift_indices(data, cfg.drift_images, bundle0.sensitive_indices, cfg.seed)
    metrics: list[dict[str, Any]] = []
    if (out / "metrics.json").exists() and done:
        metrics = [m for m in json.loads((out / "metrics.json").read_text()) if m["round"] in done]
    extra_x = [np.zeros((0, *size, 3), np.float32)]
    extra_y = [np.zeros(0, np.int32)]
    extra_w = [np.zeros(0, np.float32)]
    kept: list[np.ndarray] = [np.zeros(0, bool)]  # per sample: trained on every later round (not replayed)
    used_pool: set[str] = set()
    for k in done:
        f = _round_dir(out, k) / "samples.npz"
        if f.exists():
            z = np.load(f)
            extra_x.append(z["x"])
            extra_y.append(z["y"])
            extra_w.append(z["w"])
            kept.append(z["kept"] if "kept" in z.files else np.zeros(len(z["y"]), bool))
            used_pool.update(str(p) for p in z["pool"])
    start = (max(done) + 1) if done else 0
    for r in range(start, cfg.rounds + 1):
        t0 = time.perf_counter()
        phases: dict[str, float] = {}
        rdir = _round_dir(out, r)
        if rdir.exists():
            shutil.rmtree(rdir)  # partial work of a killed round
        rdir.mkdir(parents=True)
        seed_everything(cfg.seed * 1000 + r)
        added = {k: 0 for k in SAMPLE_KINDS}
        if r == 0:
            save_model(bundle0.model, rdir / "model.keras", names, bundle0.sensitive_names)
            bundle = load_model(rdir / "model.keras")
            np.savez(rdir / "samples.npz", x=extra_x[0], y=extra_y[0], w=extra_w[0], kept=kept[0],
                     pool=np.array([], str))
        else:
            start_from = start_round(metrics, chance)
            if start_from != r - 1:
                _log(f"round {r}: round {r - 1} collapsed to one class (val accuracy "
                     f"{metrics[-1]['val_accuracy']:.3f}); starting from round {start_from}, the latest that did not")
            prev = load_model(_round_dir(out, start_from) / "model.keras")
            with progress_bar(None, f"round {r} samples") as adv:
                thr = next(m["threshold"] for m in metrics if m["round"] == start_from)
                sets = make_samples(prev, data, cfg, r, used_pool, lambda phase: adv(1), thr)
            phases["samples"] = time.perf_counter() - t0
            n_review = _write_review(out, r, sets, names)
            keep_x, keep_y, keep_w, keep_k = [], [], [], []
            for s in sets:
                t = s.trainable()
                added[s.kind] += len(t)
                keep_x.append(t.x); keep_y.append(t.y); keep_w.append(np.full(len(t), cfg.weights[s.kind], np.float32))  # noqa: E702
                keep_k.append(np.full(len(t), s.kind == "pool" and cfg.pool_keep, bool))
            pool_used = np.array(sorted(used_pool), str)
            kx = np.concatenate(keep_x) if keep_x else extra_x[0]
            ky = np.concatenate(keep_y) if keep_y else extra_y[0]
            kw = np.concatenate(keep_w) if keep_w else extra_w[0]
            kk = np.concatenate(keep_k) if keep_k else kept[0]
            extra_x.append(kx); extra_y.append(ky); extra_w.append(kw); kept.append(kk)  # noqa: E702
            ax, ay, aw = _training_samples(extra_x, extra_y, extra_w, kept, cfg.replay_max,
                                           np.random.default_rng([cfg.seed, r, 1]))
            epochs, warmup = cfg.round_schedule(start_from)
            if cfg.weights["adversarial"] > 0:  # made on the fly, one per training image and epoch
                added["adversarial"] = (len(data.train.x) + len(ax)) * (epochs + cfg.sgd_epochs)
            t1 = time.perf_counter()
            planned, planned_steps = round_train_eps(metrics, cfg), round_train_steps(metrics, cfg)
            model, train_eps, train_steps = _retrain(prev, data, ax, ay, aw, cfg, r, out, _min_clean(metrics, cfg),
                                                     warmup=warmup, policy=policy, epochs=epochs, train_eps=planned,
                                                     train_steps=planned_steps)
            phases["retrain"] = time.perf_counter() - t1
            save_model(model, rdir / "model.keras", names, prev.sensitive_names)
            bundle = load_model(rdir / "model.keras")
            np.savez(rdir / "samples.npz", x=kx, y=ky, w=kw, kept=kk, pool=pool_used)
            if n_review:
                _log(f"round {r}: {n_review} samples queued for review in {out / 'review'}")
        t1 = time.perf_counter()
        m = evaluate(bundle, data, cfg, cfg.seed * 1000 + r, curve=r in (0, cfg.rounds))
        phases["evaluate"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        _save_gallery(bundle, data, cfg, rdir, drift_idx)
        phases["gallery"] = time.perf_counter() - t1
        m = {"round": r, **m, "start_round": None if r == 0 else start_from,
             "train_eps": None if r == 0 or cfg.weights["adversarial"] == 0 else train_eps,
             "train_steps": None if r == 0 or cfg.weights["adversarial"] == 0 else train_steps,
             "overfit_fallback": r > 0 and (train_eps < planned or train_steps > planned_steps), "samples_added": added,
             "seconds": time.perf_counter() - t0, "phase_seconds": {k: round(v, 2) for k, v in phases.items()}}
        metrics.append(m)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        if _best(metrics, cfg)["round"] == r:
            for suffix in (".keras", ".classes.json"):
                src = rdir / f"model{suffix}"
                tmp = out / f".best{suffix}.tmp"
                shutil.copyfile(src, tmp)
                tmp.replace(out / f"best{suffix}")
        _render_report(out)
        (rdir / "DONE").write_text("ok\n")
        print(format_round_line(m), flush=True)
    return RunResult(out, metrics, int(_best(metrics, cfg)["round"]), bad)
