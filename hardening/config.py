"""The configuration of a hardening run (``harden run``), loadable from ``harden.toml``.

Example:
    >>> from hardening.config import HardenConfig
    >>> HardenConfig(rounds=2).eps
    0.03137254901960784
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hardenkit.errors import ConfigError

SAMPLE_KINDS = ("cam_erasure", "attention", "adversarial", "jacobian", "pool", "hard")

#: Each kind's weight when ``harden.toml`` does not set it.
DEFAULT_WEIGHTS = {k: 1.0 for k in SAMPLE_KINDS}

#: What a CAM erasure sample covers, see :func:`hardening.samples.erasure_samples`.
ERASURE_COVERS = ("region", "item", "found")

#: Which wrong training images the ``hard`` kind copies, see :func:`hardening.samples.hard_samples`.
HARD_CASES = ("both", "flagged", "missed")

#: The training attacks: ``pgd_steps`` of PGD (FGSM from a random start for 1), or N-FGSM.
TRAIN_ATTACKS = ("fgsm", "n-fgsm")

#: The training attack's budget over the measured one when ``train_eps`` is not set.
TRAIN_EPS_FACTOR = 1.25


@dataclass(frozen=True)
class HardenConfig:
    """Every knob of the hardening loop. Each sample kind has a weight; 0 switches it off.

    Attributes:
        rounds: Hardening rounds after the round-0 baseline evaluation. Defaults to 5.
        data: Dataset folder; None = the built-in demo data.
        model: Starting model; None = the cached demo baseline (trained on first use).
        out: Run folder. Defaults to ``runs/harden``.
        eps: L-inf budget of the PGD samples and of robust accuracy. Defaults to 8/255.
        train_eps: L-inf budget of the training attack; None = :data:`TRAIN_EPS_FACTOR` x
            ``eps`` (10/255 for the default 8/255). Training a little past the measured budget
            bought robustness at it on the demo data (``harden run`` with ``train_eps`` in
            ``harden.toml``): round 5 PGD-10 accuracy at 8/255 0.552 with ``train_eps = eps``,
            0.613 at 10/255 (clean accuracy 0.902 vs 0.908); further past it hurt everything:
            at 11/255 0.507, clean 0.872, fpr 0.230 (vs 0.595, 0.910, 0.135 at 10/255 with
            the same code). On a strong scenes baseline 10/255 made training overfit (robust
            0.000-0.025 at rounds 1-4) and 8/255 did not (round 5 robust 0.522), see
            ``train_attack``. Defaults to None.
        pgd_steps: PGD steps per batch of adversarial training; 1 = FGSM from a random start
            ("fast" adversarial training, Wong et al. 2020). Two steps on the scenes of
            ``bench_quality`` (baseline acc 0.710, fpr 0.910, robust 0.003, item recall 0.771,
            boxed_flagged 0.645; round 5, seeds 0 / 1, two runs at a time, one thread each):
            robust 0.635 / 0.648 against one step's 0.588 / 0.572, but fpr 0.160 / 0.250
            against 0.070 / 0.100, item recall 0.762 / 0.752 against 0.790 / 0.756,
            boxed_flagged 0.090 / 0.445 against 0.030 / 0.050, accuracy 0.885 / 0.865 against
            0.898 / 0.890, rounds about a tenth longer (seed 0's round 1 collapsed to one class
            and round 2 restarted from round 0, see :func:`hardening.loop.start_round`). On
            the demo data (seed 0, one thread) two steps measured 0.860 / 0.295 / 0.650 /
            0.950 / 0.100 (acc / fpr / robust / item recall / boxed_flagged) against one
            step's 0.850 / 0.330 / 0.610 / 0.937 / 0.115 (see ``erasure_confidence``): better
            there, worse on the scenes' fpr and item recall, one seed each. On the flagged
            ``hard`` default (AMD EPYC, float32, seed 0, one thread each, side by side) two
            steps lost on both: demo round 5 0.890 / 0.220 / 0.650 / 0.915 (acc / fpr / robust /
            item recall) against one step's 0.917 / 0.155 / 0.630 / 0.900, the fpr above round
            0's 0.195; on the strong scenes baseline of ``train_attack`` round 1 held 10/255
            (robust 0.233), round 2 overfit and was redone at 8/255, and round 3 read 0.868 /
            0.420 / 0.542 / 0.689 against one step's 0.917 / 0.155 / 0.435 / 0.778 (stopped
            there). Defaults to 1.
        train_attack: ``"fgsm"``: ``pgd_steps`` steps of PGD from a random start (FGSM for
            one step); ``"n-fgsm"``: N-FGSM (noise within twice ``train_eps``, one step of
            ``train_eps``, no projection; ``pgd_steps`` ignored), made to avoid the
            catastrophic overfitting of single-step training, see
            :class:`hardening.adversarial.AdversarialTrainer`. On a strong scenes baseline
            (``bench_quality``'s scenes, baseline trained with seed 1: val accuracy 0.933,
            round 0 acc 0.932 / fpr 0.155 / robust PGD-20 0.000 / item recall 0.844; seed 0,
            one thread each) the default overfit in every round (robust 0.025 / 0.005 / 0.000
            / 0.000 at rounds 1-4, training robust accuracy 0.87-0.96 above the clean
            0.84-0.91), and N-FGSM did too (round 1: robust 0.102, training robust 0.97 against
            validation PGD-3 0.26; stopped). ``pgd_steps = 2`` got further before it overfit:
            robust 0.318 / 0.133 / 0.125 / 0.005 at rounds 1-4 (fpr 0.600 / 0.240 / 0.095 /
            0.210). What avoided it was ``train_eps = eps`` (8/255) with the default attack:
            training robust 0.39-0.61, below the clean accuracy, and round 5 acc 0.912 / fpr
            0.105 / robust 0.522 (4/255: 0.820) / item recall 0.784 / boxed 0.115 / alone 0.766.
            Defaults to ``"fgsm"``.
        attack_predicted: The training attack raises the loss of the model's prediction, not
            of the true label (against label leaking, see
            :class:`hardening.adversarial.AdversarialTrainer`). On the strong scenes baseline of
            ``train_attack`` it did not stop the overfitting: robust 0.128 / 0.030 / 0.018 at
            rounds 1-3 (acc 0.902 / 0.922 / 0.912, fpr 0.300 / 0.180 / 0.115). Defaults to False.
        overfit_fallback: When a round's Adam phase ends catastrophically overfit (see
            :func:`hardening.loop.overfit_warning`), redo that phase from the round's starting
            model: at ``eps`` if the training attack's budget is above it, and, if it overfits at
            ``eps`` too with a single-step attack (``pgd_steps = 1`` or N-FGSM), once more with
            :data:`hardening.loop.OVERFIT_STEPS` (2) PGD steps. Every later round keeps that
            budget and those steps (``train_eps`` and ``train_steps`` in ``metrics.json``). False
            = only warn. The second rung on the strong scenes baseline (AMD EPYC, float32, one
            thread each, side by side; round 0 0.932 / 0.155 / 0.000 / 0.844, acc / fpr / robust
            / item recall): seed 0 with ``train_eps = 9/255`` overfit in round 1 at 9/255
            (training robust 0.86 against validation PGD-3 0.41) and again at 8/255 (0.62
            against 0.32); without the second rung every round went on overfit (robust 0.113 /
            0.030 / 0.010 at rounds 1-3, stopped there), with it 0.233 / 0.370 / 0.532 / 0.608 /
            0.595 at rounds 1-5, round 5 0.882 / 0.110 / 0.595 / 0.762. Seed 1 (default budget;
            round 1 at 8/255: 0.57 against 0.31, just past the gap) recovered without it: round 5
            0.910 / 0.070 / 0.557 / 0.759 without, 0.890 / 0.165 / 0.548 / 0.781 with. So: a
            collapsed run rescued, at 2 to 5 points of accuracy where it triggers; the demo data
            never trip either rung (seeds 0-3 of ``hard_cases``: no warning). The first rung,
            on the strong scenes baseline of
            ``train_attack`` (round 0 acc 0.932 / fpr 0.155 / robust 0.000 / item recall 0.844;
            seed 0, two threads) round 1 tripped it (training robust 0.88 against validation
            PGD-3 0.44) and the run went on at 8/255: round 5 acc 0.922 / fpr 0.075 / robust
            0.500 (4/255: 0.818) / item recall 0.784 / pointing 0.795 / boxed 0.085 / alone
            0.800, where without it every round overfit (robust 0.025 / 0.005 / 0.000 / 0.000
            at rounds 1-4). The demo data never trip it (seed 0: the last Adam epoch's training
            robust accuracy is 0.03-0.07 below the validation one in every round; figures
            unchanged). Defaults to True.
        eps_warmup: Adam epochs over which the training attack's budget ramps up (a third,
            two thirds, then all of it for 2; see :class:`hardening.adversarial.EpsWarmup`) in
            a round that retrains from round 0's model, the one never trained adversarially
            (round 1, or a round after a collapse). 0 = the full budget from the first epoch.
            Must be below ``epochs``. 2 on the scenes of ``bench_quality`` (seeds 0 / 1, two
            runs at a time, one thread each; acc / fpr / robust / item recall / boxed_flagged
            at round 5) measured 0.908 / 0.140 / 0.525 / 0.756 / 0.175 and 0.905 / 0.125 /
            0.578 / 0.727 / 0.075 against no warm-up's 0.898 / 0.070 / 0.588 / 0.790 / 0.030
            and 0.890 / 0.100 / 0.572 / 0.756 / 0.050 (see ``pgd_steps``): round 1 was gentler
            (accuracy 0.895 / 0.860, neither collapsed) but item recall ended lower on both
            seeds. With ``pgd_steps = 2`` (same seeds and conditions): 0.878 / 0.175 / 0.640 /
            0.752 / 0.080 and 0.850 / 0.165 / 0.645 / 0.743 / 0.190 against two steps without
            it, 0.885 / 0.160 / 0.635 / 0.762 / 0.090 and 0.865 / 0.250 / 0.648 / 0.752 / 0.445:
            no collapse, robust kept, item recall again lower. Defaults to 0.
        eval_steps: PGD steps when measuring robust accuracy each round. Defaults to 10. (The
            per-epoch validation that picks the best checkpoint uses at most 3: a quarter of
            the retraining time went into it with 5.)
        fgsm_mix: Share of adversarial samples made with FGSM instead of PGD. Defaults to 0.
        clean_fraction: Share of each training batch also trained on unperturbed (every
            image is trained on adversarially); 1 = clean + adversarial halves. 0.5 on the demo
            data (seed 1, baseline acc 0.882, fpr 0.180, two runs at a time, one thread each)
            measured 0.862 / 0.250 / 0.660 / 0.959 at round 5 against 1's 0.895 / 0.220 / 0.637 /
            0.922 (acc / fpr / robust / item recall), with round 2 at fpr 0.980 (1: 0.420), for
            rounds 1-5 only 6% shorter in all (1250 s vs 1336 s). Defaults to 1.
        objective: Adversarial training objective: ``"mix"`` (cross-entropy on clean and
            adversarial images) or ``"trades"`` (clean cross-entropy + ``trades_beta`` x KL to
            the adversarial prediction), see :class:`hardening.adversarial.AdversarialTrainer`.
            With the default single-step attack, ``"trades"`` overfit in round 1 on the demo data
            (AMD EPYC, float32, seeds 0 and 1, one thread each: training robust accuracy 0.55 and
            0.54 against validation PGD-3 0.17 and 0.25; ``overfit_fallback`` redid the round at
            8/255; runs stopped there), where ``"mix"`` does not. Defaults to ``"mix"``.
        trades_beta: TRADES robustness weight. Defaults to 6.
        attention_weight: Weight of the item-coverage loss in adversarial retraining (needs
            masks; 0 = off): every ground-truth item of a clean training image should reach
            ``attention_target`` of the maximum of its Grad-CAM map at the CAM layer, see
            :meth:`hardening.adversarial.AdversarialTrainer.attention_loss`. A training step
            costs 1.06x (demo CNN, batch 32, one core, interleaved). On the demo data (AMD EPYC,
            float32, seed 0, two threads; round 0 acc 0.892 / fpr 0.195 / robust 0.018 / item
            recall 0.890 / pointing 0.965) ``attention_weight = 1`` raised item recall in the
            middle rounds (0.884 / 0.915 / 0.962 / 0.947 at rounds 1-4 against 0.787 / 0.868 /
            0.918 / 0.912) at a lower accuracy there (0.843 / 0.782 / 0.812 / 0.840 against
            0.815 / 0.828 / 0.853 / 0.825) and ended level: round 5 0.860 / 0.310 / 0.620 /
            0.940, pointing 0.895, against 0.860 / 0.315 / 0.598 / 0.937, pointing 0.970. On
            the strong scenes baseline of ``train_attack`` (round 0 0.932 / 0.155 / 0.000 /
            0.844, pointing 0.815; seed 0, two threads; both runs fell back to 8/255 in round 1,
            see ``overfit_fallback``) round 5 read acc 0.945 / fpr 0.040 / robust 0.465 / item
            recall 0.832 / pointing 0.845 / boxed 0.040 / alone 0.863 against 0.922 / 0.075 /
            0.500 / 0.784 / 0.795 / 0.085 / 0.800 without it: better on all but robust accuracy
            (item recall 0.775 / 0.810 / 0.819 at rounds 2-4 against 0.756 / 0.768 / 0.775).
            On the demo data with seed 1 it cost accuracy: round 5 0.865 / 0.205 / 0.620 / 0.962,
            pointing 0.965, against 0.905 / 0.205 / 0.605 / 0.944, pointing 0.980, and its round
            2 overfit (training robust 0.86 against validation PGD-3 0.46; redone at 8/255 by
            ``overfit_fallback``). With ``hard_cases = "flagged"`` (the default since) on the
            scenes (seed 0, two threads) the same trade: round 5 0.932 / 0.040 / 0.442 / 0.810,
            pointing 0.820, against 0.910 / 0.055 / 0.583 / 0.781, pointing 0.800, without it
            (its round 2 overfit, training robust 0.59 against validation PGD-3 0.32).
            Defaults to 0.
        attention_target: See ``attention_weight``. Defaults to 0.6.
        max_clean_drop: A checkpoint (epoch or round) whose clean validation accuracy is more
            than this below the starting model's is never kept as best, however robust: a
            model collapsed to one class is "robust" on every image of that class. Defaults to 0.05.
        recall: fpr/miss rate are measured at the threshold (set on val) holding this recall.
        fpr_weight: Weight of the validation fpr (at ``recall``) in the score that picks the
            kept checkpoint, each epoch's and each round's (``best.keras``):
            ``(clean + robust + fpr_weight * (1 - fpr)) / (2 + fpr_weight)`` on the validation
            split; 0 = mean(clean, robust) alone. On the demo data (round 5, seeds 0-3,
            ``fpr_weight = 1`` vs off) it did not lower the test fpr: 0.180 / 0.255 / 0.200 /
            0.235 vs 0.135 / 0.200 / 0.230 / 0.220 (mean 0.218 vs 0.196), but robust accuracy
            rose on all four seeds: 0.620 / 0.602 / 0.627 / 0.588 vs 0.595 / 0.560 / 0.520 /
            0.585 (mean 0.609 vs 0.565), accuracy mean 0.884 vs 0.890, item recall 0.869 vs
            0.873. On another machine's baseline (acc 0.875, fpr 0.295, item recall 0.887;
            seeds 0-3, one thread each) the other way round: fpr 0.095 / 0.165 / 0.155 / 0.255
            vs 0.085 / 0.300 / 0.225 / 0.215 (mean 0.168 vs 0.206), robust 0.613 / 0.600 /
            0.568 / 0.582 vs 0.598 / 0.600 / 0.582 / 0.605 (mean 0.591 vs 0.596), accuracy
            mean 0.897 vs 0.893, item recall 0.892 vs 0.898. No consistent gain, so not the
            default. Defaults to 0.
        cam_method: CAM method; None = cam's default.
        cam_threshold: Relative map threshold for regions. Defaults to 0.5.
        erasure_min_remaining: With masks, an erased image stays sensitive if at least this
            share of its ground-truth area is uncovered. Defaults to 0.3.
        erasure_item_visible: With masks, an erased image also stays sensitive if one item
            (connected component of its mask) keeps at least this share of its own area
            uncovered; None = the area rule alone. At 0.5 it measured worse on the demo data
            (round 5, seed 0, one thread: item recall 0.862 vs 0.915, robust 0.568 vs 0.598,
            fpr 0.315 vs 0.085 with the area rule alone). Defaults to None.
        erasure_cover: What a CAM erasure sample covers: ``"region"`` (the top CAM region),
            ``"item"`` (with masks: the bounding box of each ground-truth item that region
            touches) or ``"found"`` (the box of every item the map's hot pixels touch), see
            :func:`hardening.samples.erasure_samples`. A hardened model's map is peaked (on the
            scenes its hot area fell from 6.1% to 1.9% of the image), so ``"region"`` covers a
            few pixels of one item: every such sample stayed sensitive, and the loop taught the
            model to flag noise itself (``boxed_flagged`` 0.99 on the scenes at round 5).
            Measured with ``erasure_confidence``, below. Defaults to ``"item"``.
        erasure_confidence: A CAM erasure sample is trained on if the current model gets it
            wrong or gives its label less than this probability; 0 = the wrong ones only.
            Round 5, ``"item"`` + 0.9 vs ``"region"`` + 0 (acc / fpr / robust / item recall /
            boxed_flagged, one thread each): demo seeds 0-3 (baseline 0.875 / 0.295 / 0.008 /
            0.887 / 0.415): 0.850 / 0.330 / 0.610 / 0.937 / 0.115, 0.880 / 0.230 / 0.650 /
            0.953 / 0.080, 0.912 / 0.175 / 0.648 / 0.928 / 0.060, 0.902 / 0.180 / 0.655 / 0.940
            / 0.045 (mean 0.886 / 0.229 / 0.641 / 0.940 / 0.075) vs means 0.901 / 0.168 / 0.616
            / 0.904 / 0.520; scenes of ``bench_quality`` seeds 0-1 (baseline 0.710 / 0.910 /
            0.003 / 0.771 / 0.665): 0.898 / 0.070 / 0.588 / 0.790 / 0.030 and 0.890 / 0.100 /
            0.572 / 0.756 / 0.050 vs 0.877 / 0.145 / 0.605 / 0.733 / 0.990 and 0.875 / 0.170 /
            0.592 / 0.759 / 0.980. So: the noise shortcut gone, item recall and pointing game
            up on both data sets, robust accuracy up on the demo and 0.02 down on the scenes,
            but the demo fpr up 0.06. ``"item"`` with 0 kept few samples and did not remove
            the shortcut (scenes: robust 0.552 / 0.465, boxed_flagged 0.775 / 0.935);
            ``"found"`` + 0.9 lost robustness on the scenes (0.485 / 0.530; demo seeds 0-1:
            0.855 / 0.270 / 0.623 / 0.962 and 0.898 / 0.260 / 0.642 / 0.975). 1.0 (train on
            every erasure sample) on the same scenes, seed 0: 0.898 / 0.130 / 0.550 / 0.781 /
            0.145 against 0.9's 0.898 / 0.070 / 0.588 / 0.790 / 0.030, rerun with the same
            code and figures as above. Defaults to 0.9.
        weights: Training weight per sample kind (0 = off). ``hard``: copies of the training
            images the current model gets wrong at its threshold that holds ``recall`` (normal
            images it flags, sensitive ones it misses; :func:`hardening.samples.hard_samples`),
            the cases that set the fpr. On the demo data (AMD EPYC, float32, seeds 0-3, one thread
            each, two runs at a time; round 0 acc 0.892 / fpr 0.195 / robust 0.012-0.018 / item
            recall 0.890) round 5 with ``hard = 1`` and ``hard_cases = "both"`` read acc 0.895 /
            0.907 / 0.905 / 0.907, fpr 0.205 / 0.150 / 0.180 / 0.180, robust 0.590 / 0.598 / 0.645
            / 0.618, item recall 0.893 / 0.884 / 0.918 / 0.890, miss rate 0.060 / 0.085 / 0.060 /
            0.065, alone_flagged 0.844 / 0.863 / 0.829 / 0.867, against ``hard = 0``'s 0.860 /
            0.905 / 0.897 / 0.897, 0.315 / 0.205 / 0.250 / 0.225, 0.598 / 0.605 / 0.618 / 0.625,
            0.937 / 0.944 / 0.931 / 0.944, 0.055 / 0.055 / 0.040 / 0.045, 0.815 / 0.825 / 0.810 /
            0.820 (means: acc 0.904 vs 0.890, fpr 0.179 vs 0.249, robust 0.613 vs 0.612, item
            recall 0.896 vs 0.939, miss rate 0.068 vs 0.049); 111-378 hard samples a round, rounds
            2% longer. The flagged normal images were mostly the skin-toned squares with a dark
            centre, the missed sensitive ones single small items. So: lower fpr and higher
            accuracy on every seed, item recall and miss rate worse. On the strong scenes baseline
            of ``train_attack`` (seed 0, one thread) it brought the catastrophic overfitting back:
            round 1 overfit at 10/255 and again at 8/255 after ``overfit_fallback`` (training
            robust 0.78 against validation PGD-3 0.47), robust accuracy 0.112 / 0.022 at rounds
            1-2 against 0.242 / 0.388 without it (fpr 0.490 / 0.195 against 0.310 / 0.250), and
            every later round overfit too: round 5 acc 0.938 / fpr 0.070 / robust 0.000 / item
            recall 0.863 against 0.922 / 0.075 / 0.500 / 0.784. ``hard_cases = "flagged"`` (the
            default) copies only the flagged normal images, and every kind defaults to 1. The
            Jacobian boundary samples carry a good part of the robustness on the demo data:
            without them (``jacobian = 0``, seed 0) round 5 PGD accuracy was 0.517 instead of
            0.595 (accuracy 0.888, fpr 0.140); with twice as many seeds (``jacobian_seeds = 600``)
            0.592, at fpr 0.265.
            ``cam_erasure = 2`` measured worse on the demo data (AMD EPYC baseline acc 0.888,
            fpr 0.190; round 5, seed 1, one thread each; acc / fpr / robust / item recall):
            0.838 / 0.345 / 0.608 / 0.947 against 0.882 / 0.175 / 0.637 / 0.937 (seed 0:
            0.882 / 0.240 / 0.613 / 0.931); on the scenes of ``bench_quality`` (seed 0) round 5
            read 0.897 / 0.175 / 0.583 / 0.759 against 0.905 / 0.180 / 0.560 / 0.756, but
            with the higher fpr and lower robust accuracy in rounds 1-4.
        hard_cases: Which wrong training images the ``hard`` kind copies: ``"both"``, ``"flagged"``
            (normal images flagged at the threshold: the fpr's cases) or ``"missed"``. On the demo
            data (same machine, seeds and conditions as ``weights``) ``hard = 1`` with
            ``"flagged"`` read at round 5 acc 0.917 / 0.900 / 0.917 / 0.912,
            fpr 0.155 / 0.220 / 0.115 / 0.145, robust 0.630 / 0.630 / 0.660 / 0.623, item recall
            0.900 / 0.897 / 0.900 / 0.934, miss rate 0.065 / 0.055 / 0.080 / 0.045, alone_flagged
            0.882 / 0.829 / 0.877 / 0.867 (means 0.912 / 0.159 / 0.636 / 0.908 / 0.061), against
            ``"both"``'s means 0.904 / 0.179 / 0.613 / 0.896 / 0.068 and ``hard = 0``'s 0.890 /
            0.249 / 0.612 / 0.939 / 0.049 (acc / fpr / robust / item recall / miss rate). On the
            strong scenes baseline (seed 0, two threads; round 0 0.932 / 0.155 / 0.000 / 0.844)
            it did not bring the overfitting back as ``"both"`` did: round 1 overfit at 10/255
            and was redone at 8/255 like ``hard = 0``'s, and round 5 read acc 0.910 / fpr 0.055 /
            robust 0.583 (4/255: 0.820) / item recall 0.781 / boxed 0.165 / alone 0.717 against
            ``hard = 0``'s 0.922 / 0.075 / 0.500 / 0.784 / 0.085 / 0.800 (its round 2 flagged
            the noise: fpr 0.675, boxed 0.900; round 3 0.155 / 0.310).
            So: fpr down on 3 of 4 demo seeds (``hard = 0``: 0 of 4), robust >= 0.60 on all four,
            item recall above round 0's on all four, robust up on the scenes, at 1.2 points of
            scenes accuracy. 71-500 hard samples a round; the five rounds took 1,492 / 1,504 s
            (seeds 0-1; seeds 2-3 beside a third run). Defaults to ``"flagged"``.
        max_per_kind: Cap on new samples of each kind per round (and on the images explained
            for them: CAM is the costly part of a round). Defaults to 500.
        jacobian_seeds: Seed images for Jacobian boundary samples per round. Defaults to 300.
        jacobian_lambda: Jacobian step size. Defaults to 0.03.
        replay_max: Samples of earlier rounds trained on again each round, at most (a seeded
            random subset; keeps rounds from slowing down as samples pile up). Defaults to 400.
        pool: Unlabelled pool folder to mine near-boundary images from (optional).
        pool_labels: CSV ``file,label`` labelling pool images; else they go to review.
        pool_top: Pool images taken per round. Defaults to 100.
        pool_keep: Labelled pool images (real data) are trained on in every later round,
            outside the ``replay_max`` cap; False = replayed like the other samples. On the
            demo data (round 5 on an AMD EPYC, whose baseline measures acc 0.882, fpr 0.270,
            robust 0.008, item recall 0.884; acc / fpr / robust / item recall, seed 0 and 1)
            True: 0.873 / 0.215 / 0.530 / 0.909 and 0.895 / 0.225 / 0.583 / 0.881; False:
            0.833 / 0.335 / 0.505 / 0.840 and 0.905 / 0.235 / 0.575 / 0.915 (two runs at a
            time, one thread each; seed 0 alone with two threads took another path: 0.858 /
            0.280 / 0.522 / 0.865, see bench/RESULTS.md); rounds about 4% longer. Defaults to True.
        epochs: Adam epochs per round. Five measured better than four on the demo data
            (round 5, seeds 0-3, one thread each, baseline acc 0.875, fpr 0.295, robust 0.008,
            item recall 0.887): robust 0.598 / 0.642 / 0.605 / 0.620 vs 0.598 / 0.600 / 0.582
            / 0.605 (mean 0.616 vs 0.596), fpr mean 0.168 vs 0.206, accuracy 0.901 vs 0.893,
            item recall 0.904 vs 0.898; rounds about a fifth longer. Six on the scenes of
            ``bench_quality`` (seed 0, baseline 0.710 / 0.910 / 0.003 / 0.771; acc / fpr /
            robust / item recall) measured 0.910 / 0.100 / 0.542 / 0.800 at round 5 against
            five's 0.898 / 0.070 / 0.588 / 0.790 (its round 4 read 0.598). Defaults to 5.
        refine_epochs: Adam epochs of a round that retrains an already hardened model (every
            round but one that starts from round 0's model: round 1, or a round after a
            collapse, see :func:`hardening.loop.start_round`), which refines what the round
            before learnt instead of starting adversarial training; None = ``epochs``. 3
            trains on a third fewer adversarial images in rounds 2-5 (12,152-12,864 against
            18,228-19,062 a round on the demo data) but measured worse at round 5 on an AMD
            EPYC whose demo baseline reads acc 0.888, fpr 0.190, robust 0.005, item recall
            0.890 (acc / fpr / robust / item recall): seed 0 (two threads) 0.842 / 0.270 /
            0.592 / 0.928 against 5 epochs' 0.860 / 0.230 / 0.625 / 0.931; seed 1 (one thread
            each, side by side) 0.860 / 0.305 / 0.545 / 0.878 against 0.882 / 0.175 / 0.637 /
            0.937. Where the best of five epochs came early the round was the same (seed 1's
            round 2 kept epoch 3, and 3 epochs gave identical metrics), but later rounds
            often keep epoch 4 or 5. Defaults to None.
        sgd_epochs: SGD finishing epochs per round at ``sgd_learning_rate``; the best of them
            is kept even if the round's best Adam epoch scored higher on validation. Keeping
            it only when it beats that epoch measured worse on the demo data (round 5 robust
            accuracy, ``fpr_weight = 1``, seeds 0 / 1, one thread each: 0.538 / 0.538 vs
            0.613 / 0.600; seed 2 collapsed to one class at round 2 and never recovered),
            presumably because a score over 200 attacked images is too noisy to overrule
            the low-rate finish. Defaults to 1.
        learning_rate: Adam learning rate. Defaults to 1e-3.
        final_learning_rate: Adam's rate at the end of each round's ``epochs``: a per-step
            cosine from ``learning_rate`` down to it; None = constant. On the demo data a
            cosine to 1e-4 measured worse at round 5 (robust 0.555, accuracy 0.855, fpr 0.285
            vs 0.595, 0.910, 0.135 constant, seed 0). Defaults to None.
        ema_momentum: Adam epochs keep an exponential moving average of the weights with
            this momentum, and the averaged weights are what each epoch is validated, kept
            and saved as; None = plain weights. On the demo data 0.99 measured worse at
            round 5 (seed 0: robust 0.570, accuracy 0.870, fpr 0.310; seed 1: 0.535, 0.842,
            0.315; plain weights: 0.595, 0.910, 0.135 and 0.560, 0.888, 0.200). Defaults to None.
        sgd_learning_rate: Defaults to 1e-3.
        batch_size: Defaults to 32 (twice the updates of 64 per epoch at the same cost).
        drift_images: Test images shown in the CAM-drift gallery. Defaults to 12.
        seed: Seeds every random choice. Defaults to 0.
        mixed_precision: ``"auto"`` (the default) trains in ``mixed_bfloat16`` on a CPU that
            computes bfloat16 in hardware (Intel AMX or AVX512-BF16) and in float32 elsewhere;
            ``true`` adds ``mixed_float16`` on a GPU; ``false`` is float32 everywhere (see
            :func:`hardenkit.distribute.training_policy`). Each round's model is rebuilt with
            that policy for its training and saved back in float32, so CAM, evaluation and the
            saved models stay float32 (:func:`hardenkit.distribute.with_dtype_policy`). On the
            demo data on an AMX CPU (seed 0, two threads), bfloat16 took the 5 rounds from
            10.0 min (float32, ``make demo``) to 7.0 (bench_harden): round 5 acc 0.880 / fpr
            0.190 / robust 0.600 / item recall 0.912 against float32's 0.882 / 0.225 / 0.605 /
            0.897 (round 0: 0.878 / 0.255 / 0.015 / 0.897); seed 1: 0.890 / 0.190 / 0.648 /
            0.909 against 0.832 / 0.260 / 0.618 / 0.934.
    """

    rounds: int = 5
    data: str | None = None
    model: str | None = None
    out: str = "runs/harden"
    eps: float = 8 / 255
    train_eps: float | None = None
    pgd_steps: int = 1
    train_attack: str = "fgsm"
    attack_predicted: bool = False
    overfit_fallback: bool = True
    eps_warmup: int = 0
    eval_steps: int = 10
    fgsm_mix: float = 0.0
    clean_fraction: float = 1.0
    objective: str = "mix"
    trades_beta: float = 6.0
    attention_weight: float = 0.0
    attention_target: float = 0.6
    max_clean_drop: float = 0.05
    recall: float = 0.95
    fpr_weight: float = 0.0
    cam_method: str | None = None
    cam_threshold: float = 0.5
    erasure_min_remaining: float = 0.3
    erasure_item_visible: float | None = None
    erasure_cover: str = "item"
    hard_cases: str = "flagged"
    erasure_confidence: float = 0.9
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    max_per_kind: int = 500
    jacobian_seeds: int = 300
    jacobian_lambda: float = 0.03
    replay_max: int = 400
    pool: str | None = None
    pool_labels: str | None = None
    pool_top: int = 100
    pool_keep: bool = True
    epochs: int = 5
    refine_epochs: int | None = None
    sgd_epochs: int = 1
    learning_rate: float = 1e-3
    final_learning_rate: float | None = None
    ema_momentum: float | None = None
    sgd_learning_rate: float = 1e-3
    batch_size: int = 32
    drift_images: int = 12
    seed: int = 0
    mixed_precision: bool | str = "auto"

    def __post_init__(self) -> None:
        ints = {"rounds": 1, "pgd_steps": 1, "eps_warmup": 0, "eval_steps": 1, "max_per_kind": 0, "jacobian_seeds": 0,
                "replay_max": 0,
                "pool_top": 0, "epochs": 1, "sgd_epochs": 0, "batch_size": 1, "drift_images": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"expected {name} >= {lo}, got {v!r}")
        if self.eps_warmup >= self.epochs:
            raise ConfigError(f"expected eps_warmup < epochs ({self.epochs}), got {self.eps_warmup}")
        for name in ("eps", "fgsm_mix", "clean_fraction", "max_clean_drop", "recall", "cam_threshold", "erasure_min_remaining", "erasure_confidence", "jacobian_lambda"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (0.0 <= v <= 1.0):
                raise ConfigError(f"expected 0.0 <= {name} <= 1.0, got {v!r}")
        for name in ("attack_predicted", "overfit_fallback", "pool_keep"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"expected {name} true or false, got {getattr(self, name)!r}")
        if not isinstance(self.mixed_precision, bool) and self.mixed_precision != "auto":
            raise ConfigError(f"expected mixed_precision true, false or \"auto\", got {self.mixed_precision!r}")
        if self.hard_cases not in HARD_CASES:
            raise ConfigError(f"expected hard_cases one of {', '.join(map(repr, HARD_CASES))}, got {self.hard_cases!r}")
        if self.erasure_cover not in ERASURE_COVERS:
            raise ConfigError(f"expected erasure_cover one of {', '.join(map(repr, ERASURE_COVERS))}, "
                              f"got {self.erasure_cover!r}")
        if self.train_attack not in TRAIN_ATTACKS:
            raise ConfigError(f"expected train_attack one of {', '.join(map(repr, TRAIN_ATTACKS))}, "
                              f"got {self.train_attack!r}")
        if self.objective not in ("mix", "trades"):
            raise ConfigError(f"expected objective 'mix' or 'trades', got {self.objective!r}")
        if not isinstance(self.attention_target, (int, float)) or not 0.0 < self.attention_target <= 1.0:
            raise ConfigError(f"expected 0.0 < attention_target <= 1.0, got {self.attention_target!r}")
        for name in ("trades_beta", "fpr_weight", "attention_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"expected {name} >= 0, got {v!r}")
        for name in ("learning_rate", "sgd_learning_rate"):
            v = getattr(self, name)
            if not (0 < v < 1):
                raise ConfigError(f"expected 0 < {name} < 1, got {v!r}")
        optional: dict[str, tuple[str, Callable[[float], bool]]] = {  # None = off, else a number in range
            "train_eps": ("0.0 < train_eps <= 1.0", lambda x: 0.0 < x <= 1.0),
            "erasure_item_visible": ("0.0 < erasure_item_visible <= 1.0", lambda x: 0.0 < x <= 1.0),
            "final_learning_rate": (f"0 < final_learning_rate <= learning_rate ({self.learning_rate})",
                                    lambda x: 0 < x <= self.learning_rate),
            "ema_momentum": ("0 < ema_momentum < 1", lambda x: 0 < x < 1),
            "refine_epochs": ("refine_epochs a whole number >= 1", lambda x: isinstance(x, int) and x >= 1),
        }
        for name, (expect, ok) in optional.items():
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not ok(v)):
                raise ConfigError(f"expected {expect}, got {v!r}")
        unknown = set(self.weights) - set(SAMPLE_KINDS)
        if unknown:
            raise ConfigError(f"expected sample kinds among {list(SAMPLE_KINDS)}, got {sorted(unknown)}")
        for k, w in self.weights.items():
            if not isinstance(w, (int, float)) or w < 0:
                raise ConfigError(f"expected weights.{k} >= 0, got {w!r}")
        full = {k: float(self.weights.get(k, DEFAULT_WEIGHTS[k])) for k in SAMPLE_KINDS}
        object.__setattr__(self, "weights", full)

    @property
    def attack_eps(self) -> float:
        """The L-inf budget adversarial training attacks with: ``train_eps``, else
        :data:`TRAIN_EPS_FACTOR` x ``eps`` (at most 1).

        Example:
            >>> round(HardenConfig().attack_eps * 255, 6), HardenConfig(train_eps=0.05).attack_eps
            (10.0, 0.05)
        """
        return float(self.train_eps) if self.train_eps is not None else min(1.0, TRAIN_EPS_FACTOR * self.eps)

    def round_schedule(self, start_from: int) -> tuple[int, int]:
        """(Adam epochs, eps warm-up epochs) of a round that retrains the model of round
        ``start_from``. From round 0's (never hardened) model a round starts adversarial
        training: ``epochs``, ramping the attack over ``eps_warmup`` of them. From a hardened
        model it refines: ``refine_epochs`` when set (else ``epochs``), no warm-up.

        Example:
            >>> cfg = HardenConfig(refine_epochs=3, eps_warmup=2)
            >>> cfg.round_schedule(0), cfg.round_schedule(2)
            ((5, 2), (3, 0))
        """
        if start_from == 0:
            return self.epochs, self.eps_warmup
        return (self.epochs if self.refine_epochs is None else self.refine_epochs), 0

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (saved as ``config.json`` in the run folder)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> "HardenConfig":
        """Read a ``harden.toml``; ``overrides`` (e.g. from the command line) win.

        The file holds the attribute names at top level and an optional ``[weights]`` table::

            rounds = 3
            eps = 0.0157
            [weights]
            jacobian = 0      # off
            adversarial = 2.0

        Raises:
            ConfigError: Unreadable file, unknown key, or a value out of range.

        Example:
            >>> HardenConfig.from_toml("harden.toml", rounds=2)  # doctest: +SKIP
        """
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{p}: cannot read config ({e})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {sorted(unknown)}; expected some of {sorted(names)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**{**raw, **given})
        except ConfigError as e:
            try:  # name the culprit: the file, or the command line overriding it
                cls(**raw)
                where = "command line"
            except ConfigError:
                where = str(p)
            raise ConfigError(f"{where}: {e}") from None
