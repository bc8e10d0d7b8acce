"""``--help`` latency of the three console scripts (median of 5 runs each), goal < 1 s."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run(quick: bool = False) -> dict[str, Any]:
    """Median wall time of ``harden --help``, ``cam --help``, ``mosaic --help``."""
    bindir = Path(sys.executable).parent
    rows = []
    for tool in ("harden", "cam", "mosaic"):
        times = []
        for _ in range(3 if quick else 5):
            t = time.perf_counter()
            subprocess.run([str(bindir / tool), "--help"], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append({"name": f"`{tool} --help` seconds (median)", "value": med, "goal": "< 1 s", "met": med < 1.0})
    return {"rows": rows}
