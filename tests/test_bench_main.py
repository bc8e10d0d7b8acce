"""bench's runner: RESULTS.md rendering and ``--only`` keeping the other modules' rows."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

runner = importlib.import_module("bench.__main__")


def _fake(value: float) -> Any:
    def run(quick: bool = False) -> dict[str, Any]:
        return {"rows": [{"name": "figure", "value": value, "goal": "<= 1", "met": value <= 1}]}
    return run


def test_only_reruns_one_module_and_keeps_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "RESULTS.md"
    for name in ("bench_help", "bench_cam"):
        monkeypatch.setattr(importlib.import_module(f"bench.{name}"), "run", _fake(0.5))
    assert runner.main(["--only", "bench_help,bench_cam", "--out", str(out)]) == 0
    first = runner.previous_results(out)
    assert set(first) == {"bench_help", "bench_cam"}
    assert first["bench_cam"]["rows"][0]["value"] == 0.5
    assert first["bench_cam"]["measured"]["mode"] == "full"

    monkeypatch.setattr(importlib.import_module("bench.bench_cam"), "run", _fake(2.0))
    assert runner.main(["--only", "bench_cam", "--out", str(out)]) == 0
    second = runner.previous_results(out)
    assert second["bench_help"] == first["bench_help"]  # kept as measured, with its own date/commit
    assert second["bench_cam"]["rows"][0]["value"] == 2.0
    text = out.read_text()
    assert "| bench_cam | figure | 2 | <= 1 | no |" in text
    assert "rows of bench_help are from an earlier run" in text
    # each module keeps its own wall time, so an --only file still tells the whole bench's time
    assert set(second["bench_help"]["measured"]) >= {"date", "commit", "mode", "seconds"}
    assert "Each module's last measured wall time: bench_help 0.0 min, bench_cam 0.0 min; together 0.0 min." in text


def test_failing_module_is_a_row_and_a_nonzero_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(quick: bool = False) -> dict[str, Any]:
        raise RuntimeError("no photos")

    monkeypatch.setattr(importlib.import_module("bench.bench_help"), "run", boom)
    out = tmp_path / "RESULTS.md"
    assert runner.main(["--only", "bench_help", "--out", str(out)]) == 1
    assert "| bench_help | (failed) | RuntimeError: no photos | | no |" in out.read_text()


def test_unknown_module_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        runner.main(["--only", "bench_nope", "--out", str(tmp_path / "R.md")])
    assert e.value.code == 2


def test_previous_results_of_a_file_without_json_is_empty(tmp_path: Path) -> None:
    p = tmp_path / "R.md"
    p.write_text("# Benchmark results\n\nno raw block\n")
    assert runner.previous_results(p) == {}


def test_previous_results_of_an_older_file_take_the_header_date(tmp_path: Path) -> None:
    p = tmp_path / "R.md"
    p.write_text("# Benchmark results\n\nWritten by `python -m bench` (`make bench`) on 2026-11-24, in 41 min.\n\n"
                 "## Raw figures\n\n```json\n{\"bench_help\": {\"rows\": []}}\n```\n")
    assert runner.previous_results(p)["bench_help"]["measured"] == {"date": "2026-11-24", "commit": "?", "mode": "full"}


def test_rows_kept_from_another_machine_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nWritten by `python -m bench` on 2026-11-24, in 41 min. "
                   "Machine: x86_64 (Old CPU 1.0), 2 cores, Linux-6.1-glibc2.36.\nEvery figure...\n\n"
                   "## Raw figures\n\n```json\n{\"bench_help\": {\"rows\": []}}\n```\n")
    assert runner.previous_results(out)["bench_help"]["measured"]["machine"] == \
        "x86_64 (Old CPU 1.0), 2 cores, Linux-6.1-glibc2.36"
    monkeypatch.setattr(importlib.import_module("bench.bench_cam"), "run", _fake(0.5))
    monkeypatch.setattr(runner, "_machine", lambda: "x86_64 (New CPU), 2 cores")
    assert runner.main(["--only", "bench_cam", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Machine: x86_64 (New CPU), 2 cores.\n" in text
    assert "Rows of bench_help were measured on another machine: x86_64 (Old CPU 1.0), 2 cores, Linux-6.1-glibc2.36.\n" in text
    assert runner.previous_results(out)["bench_cam"]["measured"]["machine"] == "x86_64 (New CPU), 2 cores"
    assert runner.main(["--only", "bench_cam", "--out", str(out)]) == 0  # the old machine stays named
    assert "Rows of bench_help were measured on another machine: x86_64 (Old CPU 1.0)" in out.read_text()
