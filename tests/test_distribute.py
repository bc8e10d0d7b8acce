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


@pytest.mark.parametrize("make", ["tiny_model", "nested_model"])
def test_with_dtype_policy_rebuilds_a_loaded_model_in_mixed_precision_and_back(make: str) -> None:
    import numpy as np

    from hardenkit import testkit
    from hardenkit.distribute import with_dtype_policy

    m = getattr(testkit, make)()
    mixed = with_dtype_policy(m, "mixed_bfloat16")
    convs = [layer for layer in mixed._flatten_layers() if "conv" in layer.name]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert mixed.layers[-1].compute_dtype == "float32" and mixed.output.dtype == "float32"  # a stable softmax
    x = np.random.default_rng(0).random((4, 8, 8, 3), np.float32)
    p, q = m.predict(x, verbose=0), mixed.predict(x, verbose=0)
    assert np.abs(p - q).max() < 0.02 and not np.array_equal(p, q)  # same weights, bfloat16 arithmetic
    back = with_dtype_policy(mixed, "float32")
    assert all(layer.compute_dtype == "float32" for layer in back._flatten_layers())
    np.testing.assert_array_equal(back.predict(x, verbose=0), p)


@pytest.mark.parametrize("text, has", [
    ("processor : 0\nflags : fpu sse avx2 avx512f amx_bf16 amx_tile\n", True),
    ("processor : 0\nflags\t\t: fpu avx2 avx512_bf16\n", True),
    ("processor : 0\nflags : fpu sse avx2 fma avx512f\n", False),  # AVX-512 alone has no bfloat16 units
    ("processor : 0\nFeatures : fp asimd bf16\n", False),  # not an x86 flags line
    ("", False),
])
def test_cpu_has_bf16_reads_the_flags_line(text: str, has: bool) -> None:
    from hardenkit.distribute import cpu_has_bf16

    assert cpu_has_bf16(text) is has


@pytest.mark.parametrize("wanted, gpu, bf16, policy", [
    ("auto", False, True, "mixed_bfloat16"),
    ("auto", False, False, "float32"),
    ("auto", True, True, "float32"),  # float16 on a GPU only when asked for
    (True, True, False, "mixed_float16"),
    (True, False, True, "mixed_bfloat16"),
    (True, False, False, "float32"),  # emulated bfloat16 is slower than float32
    (False, False, True, "float32"),
    (False, True, True, "float32"),
])
def test_training_policy_by_device(monkeypatch, wanted, gpu: bool, bf16: bool, policy: str) -> None:
    import tensorflow as tf

    from hardenkit import distribute

    monkeypatch.setattr(distribute, "cpu_has_bf16", lambda cpuinfo=None: bf16)
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/device:GPU:0"] if gpu and kind == "GPU" else [])
    assert distribute.training_policy(wanted) == policy
