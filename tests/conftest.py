"""Shared fixtures: an isolated cache, quiet TF, tiny models and tiny demo data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["HARDENKIT_NO_PROGRESS"] = "1"
os.environ.setdefault("HARDENKIT_MAX_STEPS", "5")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["HARDENKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset (16x16 scenes) with masks and a pool, shared by the session."""
    from hardenkit.demo import generate

    root = tmp_path_factory.mktemp("tinydata")
    return generate(root / "data", {"train": 48, "val": 16, "test": 16}, size=16, seed=1, pool=12)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The 8x8 one-conv model, saved and loaded back with class names."""
    from hardenkit.modelio import load_model, save_model
    from hardenkit.testkit import tiny_model

    p = tmp_path_factory.mktemp("tinymodel") / "tiny.keras"
    save_model(tiny_model(), p, ["normal", "sensitive"])
    return load_model(p)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
