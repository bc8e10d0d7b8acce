"""`cam show` in-process: overlays at the input's size, per-file errors, --json, --grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cam import DEFAULT_METHOD
from cam.cli import main
from hardenkit.imageio import read_image, write_image


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    good_a, good_b = d / "a.png", d / "sub" / "b.jpg"
    write_image(good_a, rng.random((20, 30, 3), dtype=np.float32))
    write_image(good_b, rng.random((17, 11, 3), dtype=np.float32))
    empty, text = d / "empty.jpg", d / "notes.jpg"
    empty.write_bytes(b"")
    text.write_text("not an image\n")
    return {"a": good_a, "b": good_b, "empty": empty, "text": text}


def _show(tiny_bundle: object, args: list[str]) -> object:
    return _runner().invoke(main, ["show", "--model", str(tiny_bundle.path), *args])


def test_show_writes_overlays_at_input_size_and_reports_bad_files(tiny_bundle: object, inputs: dict,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _show(tiny_bundle, [str(inputs["a"]), str(inputs["empty"]), str(inputs["text"]), str(inputs["b"]),
                              "--out", str(out), "--method", "gradcam"])
    assert res.exit_code == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 2
    assert errors[0].startswith(f"Error: {inputs['empty']}: ") and "zero-byte" in errors[0]
    assert errors[1].startswith(f"Error: {inputs['text']}: ")
    assert "Traceback" not in res.stderr
    assert read_image(out / "a.cam.png").shape == (20, 30, 3)
    assert read_image(out / "b.cam.png").shape == (17, 11, 3)
    assert sorted(p.name for p in out.iterdir()) == ["a.cam.png", "b.cam.png"]  # nothing for bad files
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(inputs["a"])) and "sensitive=" in lines[0]


def test_show_warns_about_a_folder_without_images(tiny_bundle: object, tmp_path: Path) -> None:
    empty = tmp_path / "uploads"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    res = _show(tiny_bundle, [str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0 and res.stdout == ""
    assert f"warning: {empty}: no images in this folder (looked for .jpg" in res.stderr


def test_show_json_lines_parse(tiny_bundle: object, inputs: dict, tmp_path: Path) -> None:
    res = _show(tiny_bundle, [str(inputs["a"].parent), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 1  # the folder also holds the two broken .jpg files
    assert res.stderr.count("Error: ") == 2
    rows = [json.loads(ln) for ln in res.stdout.splitlines()]  # stdout is pure JSON lines
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.jpg"]
    for r in rows:
        assert set(r) == {"path", "score", "method", "regions", "output"}
        assert 0.0 <= r["score"] <= 1.0 and r["method"] == DEFAULT_METHOD
        assert all(len(box) == 4 for box in r["regions"])
        assert Path(r["output"]).exists()


def test_show_grid_compares_every_method(tiny_bundle: object, inputs: dict, tmp_path: Path) -> None:
    res = _show(tiny_bundle, [str(inputs["a"]), "--out", str(tmp_path), "--grid", "--json"])
    assert res.exit_code == 0, res.stderr
    row = json.loads(res.stdout)
    grid = read_image(row["grid"])
    assert grid.shape[1] > 4 * grid.shape[0]  # one panel per method, side by side


@pytest.mark.parametrize("args, match", [
    (["--alpha", "2"], "expected alpha in [0, 1], got 2.0"),
    (["--target", "bogus"], "unknown target 'bogus'"),
    (["--layer", "nope"], "no layer named 'nope'"),
])
def test_show_bad_options_exit_2(tiny_bundle: object, inputs: dict, tmp_path: Path, args: list, match: str) -> None:
    res = _show(tiny_bundle, [str(inputs["a"]), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and match in res.stderr
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True
