"""Run every benchmark in one go and rewrite ``bench/RESULTS.md``.

    python -m bench                          # full (under 60 min on 2 cores)
    python -m bench --quick                  # reduced (under 10 min)
    python -m bench --only bench_mosaic      # rerun one module, keep the others' rows

Each benchmark module exposes ``run(quick: bool) -> dict`` whose figures are ratios
measured within one run (ours vs the floor, ours vs a peer), with the goal beside them.
Every module's figures carry the date, commit and mode they were measured with, so a
``--only`` rerun updates its own rows and leaves the others as they were measured, saying so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODULES = ("bench_help", "bench_cpu", "bench_cam", "bench_pgd", "bench_mosaic", "bench_harden", "bench_quality", "bench_memory")


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``?`` where there is none): trained
    models, and so the hardening figures, differ from one CPU model to another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _machine() -> str:
    try:
        import tensorflow as tf

        tfv = tf.__version__
    except ImportError:  # pragma: no cover
        tfv = "?"
    return (f"{platform.machine()} ({_cpu_model()}), {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"TensorFlow {tfv}, {platform.platform()}")


def _commit() -> str:
    """The checked-out commit (``+dirty`` with uncommitted changes), or ``?`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return rev + ("+dirty" if dirty else "")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def previous_results(path: Path) -> dict[str, dict[str, Any]]:
    """The per-module figures in the raw JSON block of an earlier RESULTS.md ({} if none).

    Example:
        >>> previous_results(Path("/nonexistent"))
        {}
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    m = re.search(r"## Raw figures\s*```json\n(.*?)\n```", text, re.S)
    if not m:
        return {}
    try:
        raw = json.loads(m.group(1))
    except json.JSONDecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    # files written before modules carried their own ``measured``: the header's date and mode
    date = re.search(r"\bon (\d{4}-\d{2}-\d{2})", text)
    legacy = {"date": date.group(1) if date else "?", "commit": "?",
              "mode": "quick" if "bench --quick" in text.split("\n| ")[0] else "full"}
    out = {k: v if "measured" in v else {**v, "measured": legacy} for k, v in raw.items() if isinstance(v, dict)}
    machine = re.search(r"Machine: (.*?)\.\n", text)  # figures written before they carried their machine
    if machine:
        for v in out.values():
            v["measured"].setdefault("machine", machine.group(1))
    return out


def render(results: dict[str, dict[str, Any]], quick: bool, seconds: float, rerun: tuple[str, ...] = ()) -> str:
    """The RESULTS.md text for ``results`` (module -> figures dict, each with its ``measured``).

    ``rerun`` names the modules this invocation measured (all of them when empty); the
    header says which rows are older.

    Example:
        >>> text = render({"bench_help": {"rows": [{"name": "x", "value": 0.5, "goal": "< 1", "met": True}],
        ...                               "measured": {"date": "2026-12-01", "commit": "abc", "mode": "full"}}},
        ...               quick=False, seconds=60)
        >>> "| bench_help | x | 0.5 | < 1 | yes | 2026-12-01 abc |" in text
        True
    """
    cmd = "python -m bench" + (" --quick" if quick else "") + (f" --only {','.join(rerun)}" if rerun else "")
    older = sorted(m for m in results if rerun and m not in rerun)
    here = _machine()
    elsewhere: dict[str, list[str]] = {}  # another machine -> the modules measured on it
    for m in older:
        other = results[m].get("measured", {}).get("machine")
        if other and other != here:
            elsewhere.setdefault(other, []).append(m)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{cmd}` on {_dt.date.today().isoformat()}, in {seconds / 60:.1f} min. "
        f"Machine: {here}.",
        *(f"Rows of {', '.join(mods)} were measured on another machine: {other}." for other, mods in elsewhere.items()),
        "Every figure below is measured by `python -m bench` (`make bench`); the last column says when "
        "and on which commit" + (f" (rows of {', '.join(older)} are from an earlier run)" if older else "")
        + ". Rerun it to refresh this file.",
    ]
    timed = {m: r["measured"]["seconds"] for m, r in results.items() if "seconds" in r.get("measured", {})}
    if rerun and timed:
        untimed = [m for m in results if m not in timed]
        lines.append("Each module's last measured wall time: " + ", ".join(f"{m} {v / 60:.1f} min" for m, v in timed.items())
                     + f"; together {sum(timed.values()) / 60:.1f} min"
                     + (f" (not timed: {', '.join(untimed)})" if untimed else "") + ".")
    lines += [
        "",
        "| benchmark | figure | measured | goal | met | measured on |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for mod, res in results.items():
        meta = res.get("measured", {})
        when = f"{meta.get('date', '?')} {meta.get('commit', '?')}" + (" quick" if meta.get("mode") == "quick" else "")
        if "error" in res:
            lines.append(f"| {mod} | (failed) | {res['error']} | | no | {when} |")
            continue
        for row in res.get("rows", []):
            met = row.get("met")
            lines.append(f"| {mod} | {row['name']} | {_fmt(row['value'])} | {row.get('goal', '')} | "
                         f"{'yes' if met else ('no' if met is not None else '')} | {when} |")
    lines += ["", "## Raw figures", "", "```json", json.dumps(results, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced sizes (under 10 minutes)")
    ap.add_argument("--only", default="", help="comma-separated module names to run; the other modules' "
                                               "rows are kept from the existing --out file")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    only = tuple(m for m in args.only.split(",") if m)
    unknown = [m for m in only if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; expected some of {list(MODULES)}")
    from hardenkit.cli import quiet_tensorflow

    quiet_tensorflow()  # the commands' log level and native-notice filter
    os.environ.setdefault("HARDENKIT_NO_PROGRESS", "1")
    chosen = [m for m in MODULES if not only or m in only]
    kept = previous_results(Path(args.out)) if only else {}
    meta = {"date": _dt.date.today().isoformat(), "commit": _commit(), "mode": "quick" if args.quick else "full",
            "machine": _machine()}
    fresh: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        t_mod = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            fresh[name] = {"error": f"not available ({e})", "measured": meta}
            continue
        try:
            res = mod.run(quick=args.quick)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others
            traceback.print_exc()
            fresh[name] = {"error": f"{type(e).__name__}: {e}", "measured": meta}
            continue
        fresh[name] = {**res, "measured": {**meta, "seconds": round(time.perf_counter() - t_mod, 1)}}
        print(json.dumps(res, default=str), file=sys.stderr, flush=True)
    results = {m: fresh[m] if m in fresh else kept[m] for m in MODULES if m in fresh or m in kept}
    text = render(results, args.quick, time.perf_counter() - t0, only)
    Path(args.out).write_text(text)
    print(text)
    return 0 if all("error" not in r for r in fresh.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
