"""hardenkit: the foundation package (IO, data, models, training) the toolkit's packages share.

Importing it fills in TensorFlow's CPU settings that :func:`cpu_defaults` picks, in the
environment, where they are not set already: they only count before TensorFlow starts,
and every command imports this package first.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping

__version__ = "0.1.0"


def cpu_defaults(environ: Mapping[str, str], gpu_device_files: bool) -> dict[str, str]:
    """The TensorFlow environment variables hardenkit sets when the user has not.

    * ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow turns its oneDNN kernels on by itself only on
      CPUs with AVX-512 VNNI / BF16 or AMX; on an AVX2-only CPU they are off, and the
      Eigen kernels run the compact CNN's adversarial training step slower.
    * ``TF_NUM_INTEROP_THREADS=1``, on a single CPU device only (no ``/dev/nvidia*``, no
      ``HARDENKIT_LOGICAL_CPUS`` > 1: collectives across replicas need ops to run side by
      side): one op at a time, each on all the intra-op threads, instead of two ops
      sharing them.

    ``python -m bench --only bench_cpu`` measures an adversarial training step with and
    without them, in one run.

    Example:
        >>> cpu_defaults({}, gpu_device_files=False)
        {'TF_ENABLE_ONEDNN_OPTS': '1', 'TF_NUM_INTEROP_THREADS': '1'}
        >>> cpu_defaults({"TF_ENABLE_ONEDNN_OPTS": "0", "HARDENKIT_LOGICAL_CPUS": "2"}, gpu_device_files=False)
        {}
    """
    out = {"TF_ENABLE_ONEDNN_OPTS": "1"}
    try:
        replicas = int(environ.get("HARDENKIT_LOGICAL_CPUS", "0") or 0)
    except ValueError:
        replicas = 0
    if not gpu_device_files and replicas <= 1:
        out["TF_NUM_INTEROP_THREADS"] = "1"
    return {k: v for k, v in out.items() if k not in environ}


for _k, _v in cpu_defaults(os.environ, bool(glob.glob("/dev/nvidia[0-9]*"))).items():
    os.environ[_k] = _v
