"""``harden run`` on the built-in demo data: wall time and round 0 vs last round.

Goals (issue: hardening): whole ``harden run --rounds 5`` <= 10 min on 2 cores; robust
accuracy at 8/255 >= 60%; clean accuracy down by at most 2 points; fpr at 95% recall
down; item recall up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def run(quick: bool = False) -> dict[str, Any]:
    """Run the loop (5 rounds; 1 with ``quick``) and compare the first and last rounds."""
    from hardening import HardenConfig
    from hardening.loop import run as run_loop
    from hardenkit.paths import ensure_demo_model

    ensure_demo_model()  # the baseline is trained once and cached, not part of the loop's time
    rounds = 1 if quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="hk-bench-harden-"))
    try:
        t = time.perf_counter()
        res = run_loop(HardenConfig(rounds=rounds, out=str(tmp / "run")))
        wall = time.perf_counter() - t
        # The demo baseline differs from machine to machine; the run records its weights' hash.
        saved = json.loads((tmp / "run" / "config.json").read_text())
        baseline, policy = saved["model_weights_sha256"], saved["training_policy"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m0, m1 = res.metrics[0], res.metrics[-1]
    rows = [{"name": f"harden run --rounds {rounds} wall time, min", "value": wall / 60,
             "goal": "<= 10 (5 rounds)", "met": (wall / 60 <= 10) if not quick else None}]
    for key, goal, ok in (
        ("robust_accuracy", ">= 0.60", m1["robust_accuracy"] >= 0.60),
        ("accuracy", "drop <= 0.02", m0["accuracy"] - m1["accuracy"] <= 0.02),
        ("fpr", "down", m1["fpr"] < m0["fpr"]),
        ("miss_rate", "", None),
        ("pointing_game", "", None),
        ("item_recall", "up", (m1["item_recall"] or 0) > (m0["item_recall"] or 0)),
        ("boxed_flagged", "", None),
        ("alone_flagged", "", None),
    ):
        v0, v1 = m0.get(key), m1.get(key)
        rows.append({"name": f"{key}: round 0 -> round {rounds}", "value": f"{v0:.3f} -> {v1:.3f}"
                     if v0 is not None and v1 is not None else "n/a", "goal": goal, "met": ok if goal else None})
    rows.append({"name": "demo baseline weights, SHA-256 (first 12 hex digits)", "value": baseline})
    rows.append({"name": "retraining precision (harden run's default on this CPU)", "value": policy})
    return {"rows": rows, "metrics": res.metrics, "wall_seconds": wall, "baseline_weights_sha256": baseline,
            "training_policy": policy}
