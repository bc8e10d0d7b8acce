"""hardenkit's TensorFlow CPU settings against TensorFlow's own, per adversarial training step.

One adversarial training step of the demo CNN (batch 32, 64x64, FGSM with a random start,
as ``harden run`` trains) in fresh processes, since the settings count only before
TensorFlow starts: float32 with oneDNN on (:func:`hardenkit.cpu_defaults`; TensorFlow's own
default only on CPUs with the newer AVX-512 / AMX features) and off (TensorFlow's default on
other CPUs), and ``mixed_bfloat16`` with oneDNN on (what ``harden run`` trains in on a CPU with
bfloat16 units, :func:`hardenkit.distribute.training_policy`; elsewhere TensorFlow emulates
it). The settings take turns, three processes each; the figure is each process's median step,
then the median over processes; on a CPU without bfloat16 units, whose emulated steps take
about 13x as long, the bfloat16 processes time a tenth as many steps. (One inter-op thread, ``TF_NUM_INTEROP_THREADS=1``, was
measured here at stop 27 and not adopted: 220 ms against 176 ms without, oneDNN on, AMD EPYC.)
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
from hardenkit.distribute import with_dtype_policy
from hardenkit.testkit import seed_everything
from hardenkit.train import build_classifier
from hardening.adversarial import AdversarialTrainer
import tensorflow as tf
seed_everything(0)
policy = sys.argv[2]
rng = np.random.default_rng(0)
x = tf.constant(rng.random((32, 64, 64, 3), np.float32))
y = tf.constant(rng.integers(0, 2, 32))
model = build_classifier(64, 2)
if policy != "float32":
    model = with_dtype_policy(model, policy)
t = AdversarialTrainer(model, eps=10 / 255, steps=1, dtype=policy)
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

ON = "float32, oneDNN on (hardenkit's default on CPUs without bfloat16 units)"
OFF = "float32, oneDNN off"
BF16 = "mixed_bfloat16, oneDNN on (hardenkit's default on CPUs with bfloat16 units)"
#: name -> (variables set, Keras dtype policy).
SETTINGS = {ON: ({}, "float32"), OFF: ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32"), BF16: ({}, "mixed_bfloat16")}


def _step_ms(env: dict[str, str], policy: str, steps: int) -> float:
    full = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS")}
    full.update(env, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _STEP, str(steps), policy], env=full, check=True,
                         capture_output=True, text=True)
    return 1000 * float(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    """Median adversarial training step (ms) per setting, and the ratios between them."""
    from hardenkit.distribute import cpu_has_bf16

    steps, reps = (20, 1) if quick else (50, 3)
    bf16 = cpu_has_bf16()
    ms: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(reps):
        for name, (env, policy) in SETTINGS.items():
            # emulated bfloat16 steps take ~13x as long (2.6 s, AMD EPYC): a few show the ratio
            n = steps if bf16 or policy == "float32" else max(3, steps // 10)
            ms[name].append(_step_ms(env, policy, n))
    med = {k: statistics.median(v) for k, v in ms.items()}
    rows: list[dict[str, Any]] = [{"name": "CPU computes bfloat16 in hardware (AMX-BF16 / AVX512-BF16 flag)",
                                   "value": "yes" if bf16 else "no"}]
    rows += [{"name": f"adversarial training step, ms (median): {k}", "value": v} for k, v in med.items()]
    off = med[OFF] / med[ON]
    rows.append({"name": "step time, float32: oneDNN off / on", "value": off, "goal": "> 1", "met": off > 1})
    half = med[ON] / med[BF16]
    rows.append({"name": "step time, float32 / mixed_bfloat16 (oneDNN on)", "value": half,
                 "goal": "> 1 with bfloat16 units, < 1 without (harden run's pick)",
                 "met": (half > 1) == bf16})
    return {"rows": rows, "ms": ms, "cpu_count": os.cpu_count(), "cpu_bf16": bf16}
