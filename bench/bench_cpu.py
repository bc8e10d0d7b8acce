"""hardenkit's TensorFlow CPU setting (:func:`hardenkit.cpu_defaults`: oneDNN on) against TensorFlow's own.

One adversarial training step of the demo CNN (batch 32, 64x64, FGSM with a random start,
as ``harden run`` trains) in fresh processes, since the settings count only before
TensorFlow starts: oneDNN on (hardenkit's default), off (TensorFlow's default on a CPU
without the newer AVX-512 / AMX features), and each with one inter-op thread
(``TF_NUM_INTEROP_THREADS=1``, tried and not adopted). The settings take turns, three
processes each; the figure is each process's median step, then the median over processes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

_STEP = r"""
import json, sys, time
import numpy as np
from hardenkit.testkit import seed_everything
from hardenkit.train import build_classifier
from hardening.adversarial import AdversarialTrainer
import tensorflow as tf
seed_everything(0)
rng = np.random.default_rng(0)
x = tf.constant(rng.random((32, 64, 64, 3), np.float32))
y = tf.constant(rng.integers(0, 2, 32))
t = AdversarialTrainer(build_classifier(64, 2), eps=10 / 255, steps=1)
t.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
step = tf.function(t.train_step)
float(step((x, y))["loss"])
times = []
for _ in range(int(sys.argv[1])):
    s = time.perf_counter()
    float(step((x, y))["loss"])
    times.append(time.perf_counter() - s)
print(json.dumps(sorted(times)[len(times) // 2]))
"""

#: name -> the variables set (none: hardenkit's default).
SETTINGS = {
    "oneDNN on (hardenkit's default)": {},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "oneDNN on, 1 inter-op thread": {"TF_NUM_INTEROP_THREADS": "1"},
    "oneDNN off, 1 inter-op thread": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTEROP_THREADS": "1"},
}


def _step_ms(env: dict[str, str], steps: int) -> float:
    full = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS")}
    full.update(env, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _STEP, str(steps)], env=full, check=True, capture_output=True,
                         text=True)
    return 1000 * float(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    """Median adversarial training step (ms) per setting, and each against hardenkit's."""
    steps, reps = (20, 1) if quick else (100, 3)
    ms: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(reps):
        for name, env in SETTINGS.items():
            ms[name].append(_step_ms(env, steps))
    med = {k: statistics.median(v) for k, v in ms.items()}
    rows: list[dict[str, Any]] = [{"name": f"adversarial training step, ms (median): {k}", "value": v}
                                  for k, v in med.items()]
    ratio = med["oneDNN off"] / med["oneDNN on (hardenkit's default)"]
    rows.append({"name": "step time, oneDNN off / on", "value": ratio, "goal": "> 1", "met": ratio > 1})
    return {"rows": rows, "ms": ms, "cpu_count": os.cpu_count()}
