"""Quality on real images: Fashion-MNIST scenes and the plain 10-class Madry comparison.

Stages (each one's failure becomes an error row; the others still run):

1. ``scenes``: :func:`bench.fmnist.build_scenes` (quick 600/150/150, full 2000/400/400).
2. ``baseline``: :func:`hardenkit.train.train_baseline` on the scenes.
3. ``harden``: :func:`hardening.loop.run` (quick 1 round, full 5); round 0 vs last round:
   accuracy, fpr and miss rate at 95% recall, robust accuracy at 4/255 and 8/255,
   pointing game, item recall.
4. ``cam``: :func:`cam.evaluate` of the hardened model on the test split.
5. ``mosaic``: :func:`mosaic.tune` on the val split picks the style and region threshold for
   the hardened model, then :func:`mosaic.blur_folder` on the test split with them;
   ground-truth coverage (censored gt pixels / gt pixels), censored area / gt area, and the
   leak rate (censored outputs still flagged).
6. ``madry``: plain 10-class Fashion-MNIST (28x28), baseline, then the loop with PGD samples
   only at eps = 0.1; clean and PGD-40 robust accuracy against Madry et al.'s adversarial
   training as reported by Croce et al. (AISTATS 2019, Table 1: test error 11.5%, robust
   error >= 21.5% at eps 0.1 L-inf, i.e. 88.5% clean, <= 78.5% robust). The budget is
   smaller than Madry's (a subset, a few rounds, the compact CNN, 2 CPU cores): see the
   ``budget`` row.

Data and runs go to ``bench/work/quality-{quick,full}/`` (git-ignored).
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"

#: Croce et al. (AISTATS 2019) Table 1, Fashion-MNIST, Madry et al.'s adversarial training.
MADRY_CLEAN, MADRY_ROBUST, MADRY_EPS = 0.885, 0.785, 0.1

_SIZES: dict[bool, dict[str, Any]] = {
    True: {"scenes": (600, 150, 150), "rounds": 1, "epochs": 20, "cam_images": 60,
           "plain": (5000, 1000), "madry_rounds": 1, "madry_epochs": 8, "madry_eval": 500},
    False: {"scenes": (2000, 400, 400), "rounds": 5, "epochs": 30, "cam_images": None,
            "plain": (8000, 2000), "madry_rounds": 5, "madry_epochs": 15, "madry_eval": 1000},
}


def _log(msg: str) -> None:
    print(f"[bench_quality] {msg}", file=sys.stderr, flush=True)


class _Stages:
    """Runs named stages, timing each; a failure becomes an error row, not an exception."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], Any], needs: tuple[str, ...] = ()) -> Any:
        missing = [n for n in needs if n in self.errors]
        if missing:
            self.errors[name] = f"skipped: stage {', '.join(missing)} failed"
            self.rows.append({"name": f"{name}: not run", "value": self.errors[name], "goal": "", "met": False})
            return None
        _log(f"stage {name} ...")
        t = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one failing stage must not hide the others
            traceback.print_exc()
            self.errors[name] = f"{type(e).__name__}: {e}"
            self.rows.append({"name": f"{name}: failed", "value": self.errors[name], "goal": "", "met": False})
            return None
        finally:
            self.seconds[name] = round(time.perf_counter() - t, 1)
            _log(f"stage {name}: {self.seconds[name]} s")

    def add(self, name: str, value: Any, goal: str = "", met: bool | None = None) -> None:
        self.rows.append({"name": name, "value": value, "goal": goal, "met": met})


def _pair(m0: dict[str, Any], m1: dict[str, Any], key: str, sub: str | None = None) -> tuple[Any, Any]:
    a, b = m0.get(key), m1.get(key)
    if sub is not None:
        a = (a or {}).get(sub)
        b = (b or {}).get(sub)
    return a, b


def _fmt_pair(a: Any, b: Any) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"

    return f"{f(a)} -> {f(b)}"


def harden_rows(st: _Stages, metrics: list[dict[str, Any]], eps: float = 8 / 255,
                max_clean_drop: float = 0.05) -> None:
    """Table rows comparing round 0 with the last round of a hardening run.

    A robustness gain only counts while clean accuracy holds (drop <= ``max_clean_drop``,
    the loop's own rule): a model collapsed to one class is "robust" on that whole class.
    """
    m0, m1 = metrics[0], metrics[-1]
    r = m1.get("round", len(metrics) - 1)
    acc0, acc1 = m0.get("accuracy"), m1.get("accuracy")
    holds = acc0 is not None and acc1 is not None and float(acc0) - float(acc1) <= max_clean_drop
    robust_goal = f"up, clean drop <= {max_clean_drop:g}"
    spec = [
        ("accuracy", None, "clean accuracy", "drop <= 0.02", lambda a, b: a - b <= 0.02),
        ("fpr", None, "fpr at 95% recall", "down", lambda a, b: b < a),
        ("miss_rate", None, "miss rate at the 95%-recall threshold", "", None),
        ("robust_by_eps", f"{eps / 2:.4f}", "robust accuracy at 4/255", robust_goal, lambda a, b: b > a and holds),
        ("robust_by_eps", f"{eps:.4f}", "robust accuracy at 8/255", robust_goal, lambda a, b: b > a and holds),
        ("pointing_game", None, "pointing game", "", None),
        ("item_recall", None, "item recall", "up", lambda a, b: b > a),
        ("boxed_flagged", None, "sensitive scenes still flagged with every item boxed with noise", "", None),
        ("alone_flagged", None, "sensitive items flagged alone (the scene's other items boxed with noise)", "", None),
    ]
    for key, sub, label, goal, ok in spec:
        a, b = _pair(m0, m1, key, sub)
        met = ok(float(a), float(b)) if ok is not None and a is not None and b is not None else None
        st.add(f"scenes {label}: round 0 -> round {r}", _fmt_pair(a, b), goal, met)


def _censored_mask(src: np.ndarray, out: np.ndarray) -> np.ndarray:
    # censoring styles change every pixel they touch by far more than one grey level
    return (np.abs(out - src) > 1.5 / 255).any(axis=2)


def mosaic_figures(data_dir: Path, out_dir: Path, report_rows: list[Any], threshold: float) -> dict[str, Any]:
    """Coverage, area ratio and leak rate of a ``blur_folder`` run on ``data_dir/test``.

    Args:
        data_dir: Scenes dataset (``test/<class>``, ``masks/test/sensitive``).
        out_dir: ``blur_folder``'s output for ``data_dir/test``.
        report_rows: Its :class:`mosaic.MosaicRow` list.
        threshold: The sensitive-score threshold the run censored at.

    Returns:
        ``gt_coverage`` (censored gt pixels / gt pixels, all sensitive test scenes),
        ``gt_coverage_flagged`` (the same over censored ones), ``area_ratio`` (censored
        pixels / gt pixels, censored sensitive scenes), ``area_ratio_regions`` (the same over
        those censored by regions, not whole), ``unresolved_sensitive`` (share of censored
        sensitive scenes censored whole), ``leak_rate`` (censored outputs still
        scoring >= threshold), ``censored_sensitive``, ``censored_normal`` (shares), ``n``.

    Example:
        >>> mosaic_figures(Path("scenes"), Path("out"), rows, 0.5)["leak_rate"]  # doctest: +SKIP
        0.0
    """
    from hardenkit.imageio import read_image, read_mask

    by_path = {r.path: r for r in report_rows}
    gt_px = cov_px = gt_px_flag = cov_px_flag = cens_px_flag = 0
    gt_px_reg = cens_px_reg = n_unresolved = 0
    n_sens = n_sens_cens = n_norm = n_norm_cens = 0
    censored = leaked = 0
    for rel, row in by_path.items():
        cls = Path(rel).parts[0]
        done = row.status in ("censored", "unresolved")
        if done:
            censored += 1
            leaked += int(row.score_after is not None and row.score_after >= threshold)
        if cls != "sensitive":
            n_norm += 1
            n_norm_cens += int(done)
            continue
        n_sens += 1
        mp = data_dir / "masks" / "test" / "sensitive" / (Path(rel).stem + ".png")
        if not mp.exists():
            continue
        gt = read_mask(mp)
        gt_px += int(gt.sum())
        if not done:
            continue
        n_sens_cens += 1
        cm = _censored_mask(read_image(data_dir / "test" / rel), read_image(out_dir / rel))
        cov = int((cm & gt).sum())
        cov_px += cov
        gt_px_flag += int(gt.sum())
        cov_px_flag += cov
        cens_px_flag += int(cm.sum())
        if row.status == "censored":  # regions only, not censored whole
            gt_px_reg += int(gt.sum())
            cens_px_reg += int(cm.sum())
        else:
            n_unresolved += 1
    nan = float("nan")
    return {
        "gt_coverage": cov_px / gt_px if gt_px else nan,
        "gt_coverage_flagged": cov_px_flag / gt_px_flag if gt_px_flag else nan,
        "area_ratio": cens_px_flag / gt_px_flag if gt_px_flag else nan,
        "area_ratio_regions": cens_px_reg / gt_px_reg if gt_px_reg else nan,
        "unresolved_sensitive": n_unresolved / n_sens_cens if n_sens_cens else nan,
        "leak_rate": leaked / censored if censored else nan,
        "censored_sensitive": n_sens_cens / n_sens if n_sens else nan,
        "censored_normal": n_norm_cens / n_norm if n_norm else nan,
        "n": len(by_path),
    }


def _robust_pgd40(bundle: Any, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, float]:
    from attacks import pgd_tf

    pred = bundle.predict(x).argmax(1)
    adv = pgd_tf(bundle, x, y, eps=eps, steps=40, seed=0)
    pred_adv = bundle.predict(adv).argmax(1)
    return float((pred == y).mean()), float(((pred == y) & (pred_adv == y)).mean())


def run(quick: bool = False) -> dict[str, Any]:
    """Run every stage and return the table rows plus the raw figures."""
    from bench import fmnist

    cfg = _SIZES[quick]
    work = WORK / f"quality-{'quick' if quick else 'full'}"
    work.mkdir(parents=True, exist_ok=True)
    st = _Stages()
    raw: dict[str, Any] = {}
    scenes = work / "scenes"

    def build() -> Path:
        n_tr, n_va, n_te = cfg["scenes"]
        t = time.perf_counter()
        out = fmnist.build_scenes(scenes, n_tr, n_va, n_te, seed=0)
        raw["build_scenes_seconds"] = round(time.perf_counter() - t, 1)
        st.add(f"build_scenes {n_tr}/{n_va}/{n_te} (64x64, PNG), s", raw["build_scenes_seconds"])
        return out

    st.run("scenes", build)

    def baseline() -> Path:
        from hardenkit.train import TrainConfig, train_baseline

        res = train_baseline(TrainConfig(data=str(scenes), out=str(work / "baseline.keras"),
                                         sensitive=("sensitive",), epochs=cfg["epochs"], patience=8))
        raw["baseline"] = {"val_accuracy": res.val_accuracy, "epochs": res.epochs_run, "seconds": res.seconds}
        st.add("scenes baseline val accuracy", res.val_accuracy, ">= 0.65 (well above chance, 0.5)",
               res.val_accuracy >= 0.65)
        return res.path

    model = st.run("baseline", baseline, needs=("scenes",))

    def harden() -> Any:
        from hardening.config import HardenConfig
        from hardening.loop import run as run_loop

        out = work / "harden"
        shutil.rmtree(out, ignore_errors=True)
        hc = HardenConfig(rounds=cfg["rounds"], data=str(scenes), model=str(model), out=str(out),
                          eval_steps=10 if quick else 20, jacobian_seeds=100 if quick else 300,
                          drift_images=6 if quick else 12)
        res = run_loop(hc)
        raw["harden_metrics"] = res.metrics
        harden_rows(st, res.metrics, hc.eps, hc.max_clean_drop)
        return res

    hres = st.run("harden", harden, needs=("baseline",))

    def final_model() -> tuple[Any, str, float]:
        """The hardened model, or the baseline if the loop failed; with its 95%-recall threshold."""
        from attacks import threshold_at_recall
        from hardenkit.data import load_split, scan_split
        from hardenkit.modelio import load_model

        if hres is not None:
            rnd = hres.metrics[-1]["round"]
            return (load_model(Path(hres.out) / f"round-{rnd}" / "model.keras"), f"round {rnd}",
                    float(hres.metrics[-1]["threshold"]))
        bundle = load_model(model)
        val = load_split(scan_split(scenes, "val", bundle.class_names), bundle.image_size, with_masks=False)
        thr = threshold_at_recall(bundle.sensitive_score(val.x), bundle.labels_binary(val.y), 0.95)
        return bundle, "baseline (loop failed)", float(thr)

    def cam_eval() -> None:
        import cam

        methods = tuple(dict.fromkeys((cam.DEFAULT_METHOD, "gradcam++")))
        bundle, which, _ = final_model()
        res = cam.evaluate(bundle, scenes, split="test", methods=methods, max_images=cfg["cam_images"],
                           mprt_images=8 if quick else 16)
        raw["cam"] = {k: v for k, v in res.items() if k != "curves"}
        rnd = res.get("random", {})
        for m in methods:
            r = res[m]
            st.add(f"cam {m} ({which} model): pointing game / item recall / deletion AUC",
                   f"{r['pointing_game']:.3f} / {r['item_recall']:.3f} / {r['deletion_auc']:.3f}",
                   f"pointing game > random ({rnd.get('pointing_game', float('nan')):.3f})",
                   r["pointing_game"] > rnd.get("pointing_game", 1.0))

    st.run("cam", cam_eval, needs=("baseline",))

    def mosaic_eval() -> None:
        import mosaic

        bundle, which, thr = final_model()
        out = work / "mosaic-out"
        shutil.rmtree(out, ignore_errors=True)
        # style and region threshold picked for this model on the val split (mosaic tune), as a
        # team would; the demo model's defaults do not carry over to another model
        t = time.perf_counter()
        tuned = mosaic.tune(bundle, scenes, mosaic.MosaicConfig(threshold=thr), split="val")
        tune_s = time.perf_counter() - t
        rep = mosaic.blur_folder(scenes / "test", out, tuned.config, bundle=bundle)
        fig = mosaic_figures(scenes, out, rep.rows, thr)
        raw["mosaic"] = {**fig, "model": which, "threshold": thr, "counts": rep.counts, "seconds": rep.seconds,
                         "tune": tuned.to_json(), "tune_seconds": round(tune_s, 1)}
        st.add(f"mosaic tune on val ({which}): picked", f"{tuned.options()} (val coverage {tuned.best.coverage:.3f}, "
               f"area {tuned.best.area_ratio:.2f}, {tuned.images} images, {tune_s:.0f} s)", "", None)
        st.add(f"mosaic blur ({which}): gt pixel coverage (all sensitive test scenes)", fig["gt_coverage"], ">= 0.9",
               fig["gt_coverage"] >= 0.9)
        st.add(f"mosaic blur ({which}): gt pixel coverage (censored scenes)", fig["gt_coverage_flagged"], ">= 0.95",
               fig["gt_coverage_flagged"] >= 0.95)
        st.add(f"mosaic blur ({which}): censored area / gt area", fig["area_ratio"], "<= 3", fig["area_ratio"] <= 3)
        st.add(f"mosaic blur ({which}): ... of it, scenes censored by regions / sensitive scenes censored whole "
               "(unresolved: the model still flags the censored scene)",
               f"{fig['area_ratio_regions']:.2f} / {fig['unresolved_sensitive']:.3f}", "", None)
        st.add(f"mosaic blur ({which}): leak rate (censored outputs still flagged)", fig["leak_rate"], "0",
               fig["leak_rate"] == 0)
        st.add(f"mosaic blur ({which}): normal test scenes censored", fig["censored_normal"], "", None)

    st.run("mosaic", mosaic_eval, needs=("baseline",))

    def madry() -> None:
        import os

        from hardening.config import HardenConfig
        from hardening.loop import run as run_loop
        from hardenkit.data import load_split, scan_split
        from hardenkit.modelio import load_model
        from hardenkit.train import TrainConfig, train_baseline

        t0 = time.perf_counter()
        n_tr, n_te = cfg["plain"]
        plain = work / "plain"
        marker = plain / "README.txt"
        if not (marker.exists() and f"n_train={n_tr}, n_test={n_te};" in marker.read_text()):
            fmnist.build_plain(plain, n_tr, n_te)
        sens = (fmnist.PLAIN_NAMES[6],)  # any class: the accuracy figures ignore it
        base = train_baseline(TrainConfig(data=str(plain), out=str(work / "plain-baseline.keras"), image_size=28,
                                          sensitive=sens, epochs=cfg["madry_epochs"], patience=4))
        out = work / "plain-harden"
        shutil.rmtree(out, ignore_errors=True)
        hc = HardenConfig(rounds=cfg["madry_rounds"], data=str(plain), model=str(base.path), out=str(out),
                          eps=MADRY_EPS, train_eps=MADRY_EPS, pgd_steps=7, eval_steps=10, clean_fraction=0.0,  # Madry: adversarial only
                          weights={"cam_erasure": 0, "attention": 0, "adversarial": 1, "jacobian": 0, "pool": 0},
                          max_per_kind=n_tr, drift_images=0)
        res = run_loop(hc)
        bundle = load_model(out / f"round-{res.metrics[-1]['round']}" / "model.keras")
        base_bundle = load_model(base.path)
        test = load_split(scan_split(plain, "test", bundle.class_names), bundle.image_size, with_masks=False)
        k = min(cfg["madry_eval"], len(test.x))
        pick = np.random.default_rng(0).permutation(len(test.x))[:k]
        clean0, rob0 = _robust_pgd40(base_bundle, test.x[pick], test.y[pick], MADRY_EPS)
        clean, rob = _robust_pgd40(bundle, test.x[pick], test.y[pick], MADRY_EPS)
        wall = time.perf_counter() - t0
        raw["madry"] = {"baseline_clean": clean0, "baseline_robust_pgd40": rob0, "clean": clean,
                        "robust_pgd40": rob, "eval_images": k, "n_train": n_tr, "rounds": hc.rounds,
                        "loop_metrics": res.metrics, "seconds": wall}
        st.add(f"plain 10-class clean accuracy (baseline -> {hc.rounds}-round PGD hardening)",
               f"{clean0:.3f} -> {clean:.3f}", f"within 0.02 of {MADRY_CLEAN} (Madry, Croce et al. 2019)",
               abs(clean - MADRY_CLEAN) <= 0.02)
        st.add("plain 10-class PGD-40 robust accuracy at eps 0.1 (baseline -> hardened)",
               f"{rob0:.3f} -> {rob:.3f}", f"within 0.05 of {MADRY_ROBUST} (Madry, Croce et al. 2019)",
               abs(rob - MADRY_ROBUST) <= 0.05)
        st.add("plain 10-class budget", f"{wall / 60:.1f} min on {os.cpu_count()} CPU cores: {n_tr} train images, "
               f"{cfg['madry_epochs']} baseline epochs, {hc.rounds} rounds x ({hc.epochs} Adam + {hc.sgd_epochs} "
               f"SGD epochs, PGD-{hc.pgd_steps} samples), robust figures on {k} test images",
               "Madry: 100k+ steps of PGD-40 training on a GPU", None)

    st.run("madry", madry)
    return {"rows": st.rows, "seconds": st.seconds, "errors": st.errors, "figures": raw}


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
