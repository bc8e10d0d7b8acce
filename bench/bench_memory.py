"""Peak memory of ``cam show`` over 2,000 images (500 with ``--quick``), against two floors.

Each figure is the peak resident set size of a child process (``getrusage``, max RSS):

* ``cam show`` over N demo images (train + val split folders, 64x64 PNGs),
* ``cam show`` over N/10 of them: if the command streams, the peak does not grow with N
  (goal: ratio <= 1.1);
* a process that only imports TensorFlow, loads the model and predicts one image (the
  floor every command pays).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_FLOOR = """
import sys
from hardenkit.modelio import load_model
import numpy as np
b = load_model(sys.argv[1])
b.predict(np.zeros((1, *b.image_size, 3), np.float32))
"""


def _child_peak_mb(cmd: list[str]) -> float:
    """Run ``cmd`` in a fresh process (via a small wrapper) and return its peak RSS in MB."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
               "if r.returncode: sys.exit(r.stderr[-2000:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                         env={**os.environ, "HARDENKIT_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}...: {out.stderr.strip()[-500:]}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0  # Linux reports KiB


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the figures (``rows`` for ``bench/RESULTS.md``)."""
    from hardenkit.imageio import iter_images
    from hardenkit.paths import ensure_demo_data, ensure_demo_model

    n = 500 if quick else 2000
    data = ensure_demo_data(quiet=True)
    model = str(ensure_demo_model(quiet=True))
    files = [p for split in ("train", "val", "test") for p in iter_images([data / split])][:n]
    cam = str(Path(sys.executable).parent / "cam")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        big, small = work / "big", work / "small"
        for folder, chosen in ((big, files), (small, files[: n // 10])):
            folder.mkdir()
            for i, p in enumerate(chosen):
                shutil.copyfile(p, folder / f"{i:05d}{p.suffix}")
        floor = _child_peak_mb([sys.executable, "-c", _FLOOR, model])
        peak_small = _child_peak_mb([cam, "show", str(small), "--model", model, "--out", str(work / "o1")])
        peak_big = _child_peak_mb([cam, "show", str(big), "--model", model, "--out", str(work / "o2")])
        written = len(list((work / "o2").glob("*.png")))
    growth = peak_big / peak_small
    return {
        "images": n, "overlays_written": written, "peak_mb": peak_big, "peak_mb_tenth": peak_small,
        "floor_mb": floor, "rusage_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rows": [
            {"name": f"`cam show` peak memory over {n} images, MB", "value": peak_big, "goal": "", "met": None},
            {"name": f"peak memory {n} images / {n // 10} images (streaming)", "value": growth,
             "goal": "<= 1.1", "met": growth <= 1.1},
            {"name": f"peak memory {n} images / (import + load model + one predict)", "value": peak_big / floor,
             "goal": "", "met": None},
        ],
    }
