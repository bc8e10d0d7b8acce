"""Run every benchmark in one go and rewrite ``bench/RESULTS.md``.

    python -m bench            # full (under 60 min on 2 cores)
    python -m bench --quick    # reduced (under 10 min)

Each benchmark module exposes ``run(quick: bool) -> dict`` whose figures are ratios
measured within one run (ours vs the floor, ours vs a peer), with the goal beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULES = ("bench_help", "bench_cam", "bench_pgd", "bench_mosaic", "bench_harden", "bench_quality", "bench_memory")


def _machine() -> str:
    try:
        import tensorflow as tf

        tfv = tf.__version__
    except ImportError:  # pragma: no cover
        tfv = "?"
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"TensorFlow {tfv}, {platform.platform()}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def render(results: dict[str, dict[str, Any]], quick: bool, seconds: float) -> str:
    """The RESULTS.md text for ``results`` (module -> figures dict)."""
    cmd = "python -m bench" + (" --quick" if quick else "")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{cmd}` (`make bench{'-quick' if quick else ''}`) on {_dt.date.today().isoformat()}, "
        f"in {seconds / 60:.1f} min. Machine: {_machine()}.",
        "Every figure below is measured by that command; rerun it to refresh this file.",
        "",
        "| benchmark | figure | measured | goal | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mod, res in results.items():
        if "error" in res:
            lines.append(f"| {mod} | (failed) | {res['error']} | | no |")
            continue
        for row in res.get("rows", []):
            met = row.get("met")
            lines.append(f"| {mod} | {row['name']} | {_fmt(row['value'])} | {row.get('goal', '')} | "
                         f"{'yes' if met else ('no' if met is not None else '')} |")
    lines += ["", "## Raw figures", "", "```json", json.dumps(results, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (under 10 minutes)")
    ap.add_argument("--only", default="", help="comma-separated module names to run")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HARDENKIT_NO_PROGRESS", "1")
    chosen = [m for m in MODULES if not args.only or m in args.only.split(",")]
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            results[name] = {"error": f"not available ({e})"}
            continue
        try:
            res = mod.run(quick=args.quick)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        results[name] = res
        print(json.dumps(res, default=str), file=sys.stderr, flush=True)
    text = render(results, args.quick, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    print(text)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
