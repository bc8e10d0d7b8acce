from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, numpy as np
from hardenkit.distribute import get_strategy
from hardenkit.testkit import planted_batch, tiny_model
from hardenkit.train import fit_arrays
s = get_strategy()
x, y, _ = planted_batch(32)
with s.scope():
    m = tiny_model()
    h = fit_arrays(m, x, y, x, y, epochs=2, batch_size=8)
print(json.dumps({"replicas": s.num_replicas_in_sync, "epochs": len(h["loss"])}))
"""


@pytest.mark.slow
def test_training_mirrors_over_two_logical_devices() -> None:
    env = {**os.environ, "HARDENKIT_LOGICAL_CPUS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"replicas": 2, "epochs": 2}


def test_default_strategy_has_one_replica() -> None:
    from hardenkit.distribute import get_strategy

    assert get_strategy().num_replicas_in_sync == 1
