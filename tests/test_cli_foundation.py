from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hardening.cli import main as harden


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


@pytest.mark.parametrize("module", ["hardening.cli", "cam.cli", "mosaic.cli"])
def test_cli_modules_do_not_import_tensorflow(module: str) -> None:
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["hardening.cli", "cam.cli", "mosaic.cli"])
@pytest.mark.parametrize("given, expected", [({}, "1"), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "0")])
def test_commands_turn_onednn_on_before_tensorflow_starts(module: str, given: dict[str, str],
                                                          expected: str) -> None:
    code = f"import os, sys, {module}; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', '-'), 'tensorflow' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, **given})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, "False"]  # set, and before TensorFlow was imported


@pytest.mark.parametrize("tool", ["harden", "cam", "mosaic"])
def test_installed_console_scripts_answer_help(tool: str) -> None:
    exe = Path(sys.executable).parent / tool
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage:" in out.stdout


def test_train_missing_data_is_a_clean_error(tmp_path: Path) -> None:
    res = _runner().invoke(harden, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m.keras")])
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "m.keras").exists()


def test_train_cli_writes_model(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.keras"
    res = _runner().invoke(harden, ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                                    "--image-size", "16", "--json"])
    assert res.exit_code == 0, res.stderr
    import json

    assert json.loads(res.stdout)["model"] == str(out) and out.exists()


_NATIVE = r"""
import os, sys
from hardenkit.nativelog import filter_native_stderr
print(filter_native_stderr(), flush=True)
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"I0000 00:00:1.5   7 port.cc:153] oneDNN custom operations are on. You may see ...\n")
os.write(2, b"E0000 00:00:1.5   7 some_kernel.cc:9] a real native failure\n")
sys.stderr.write("Error: from Python\n")
os.write(2, b"E0000 00:00:1.6   7 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool which "
            b"is not in the op definition: Op<...>\n")
os.write(2, b"last words without a newline")
"""


@pytest.mark.parametrize("env, on", [({}, True), ({"HARDENKIT_NATIVE_LOG": "1"}, False)])
def test_native_stderr_filter_drops_only_tensorflow_notices(env: dict, on: bool) -> None:
    out = subprocess.run([sys.executable, "-c", _NATIVE], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    assert out.returncode == 0 and out.stdout.strip() == str(on)
    err = out.stderr
    for kept in ("a real native failure", "Error: from Python", "last words without a newline"):
        assert kept in err
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "use_unbounded_threadpool"):
        assert (noise in err) is not on


def test_native_stderr_filter_stays_off_once_tensorflow_is_imported() -> None:
    code = "import tensorflow, hardenkit.nativelog as n; print(n.filter_native_stderr())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("flags, expected", [([], "auto"), (["--mixed-precision"], True),
                                             (["--no-mixed-precision"], False)])
def test_harden_run_mixed_precision_flags(flags: list[str], expected, tmp_path: Path, monkeypatch) -> None:
    from hardening import loop

    seen = []

    def fake_run(cfg, resume=False):
        seen.append(cfg.mixed_precision)
        raise SystemExit(0)

    monkeypatch.setattr(loop, "run", fake_run)
    res = _runner().invoke(harden, ["run", "--out", str(tmp_path / "run"), *flags])
    assert res.exit_code == 0, res.output
    assert seen == [expected]


@pytest.mark.parametrize("text", ["8/255", "4/255", "12.8/255", "1/255"])
def test_format_budget_round_trips_through_parse_fraction(text: str) -> None:
    from hardenkit.cli import format_budget, parse_fraction

    assert format_budget(parse_fraction(text)) == text
