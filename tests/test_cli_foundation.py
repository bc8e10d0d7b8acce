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
