"""hardening: the closed loop from CAM and attacks back into retraining.

Example:
    >>> from hardening import HardenConfig
    >>> HardenConfig(rounds=3).rounds
    3
"""

from __future__ import annotations

from typing import Any

from .config import SAMPLE_KINDS as SAMPLE_KINDS
from .config import HardenConfig as HardenConfig

__all__ = ["HardenConfig", "SAMPLE_KINDS", "run", "evaluate", "finished_rounds"]


def __getattr__(name: str) -> Any:
    # the loop imports numpy-heavy helpers; keep `import hardening` (and --help) light
    if name in ("run", "evaluate", "finished_rounds", "RunResult", "make_samples"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)
