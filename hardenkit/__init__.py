"""hardenkit: the foundation package (IO, data, models, training) the toolkit's packages share.

Importing it turns TensorFlow's oneDNN kernels on where the environment does not say
otherwise (:func:`cpu_defaults`): the setting only counts before TensorFlow starts, and
every command imports this package first.
"""

from __future__ import annotations

import os
from typing import Mapping

__version__ = "0.1.0"


def cpu_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The TensorFlow environment variables hardenkit sets when the user has not.

    ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow turns its oneDNN kernels on by itself only on
    CPUs with the newer AVX-512 / AMX features; on an AVX2-only AMD EPYC they stayed off and
    its Eigen kernels ran the adversarial training step slower. ``python -m bench --only bench_cpu``
    times the step with and without it.

    Example:
        >>> cpu_defaults({})
        {'TF_ENABLE_ONEDNN_OPTS': '1'}
        >>> cpu_defaults({"TF_ENABLE_ONEDNN_OPTS": "0"})  # the user's own is kept
        {}
    """
    return {k: v for k, v in {"TF_ENABLE_ONEDNN_OPTS": "1"}.items() if k not in environ}


os.environ.update(cpu_defaults(os.environ))
