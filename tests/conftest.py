"""Shared fixtures: a small real demo dataset (JPEG ImageFolder) written once per session."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 training and 6 validation JPEGs per class of the built-in demo set."""
    from shufflenet_pl.data.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "demo", train_per_class=20, val_per_class=6, progress=False
    )


@pytest.fixture(scope="session")
def demo_beton_root(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``demo_root`` converted by FFCV: ``train.beton`` (200 images) and ``val.beton`` (60), JPEG."""
    pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")
    from shufflenet_pl.data.convert import convert_imagefolder

    out = tmp_path_factory.mktemp("beton")
    convert_imagefolder(demo_root, out, write_mode="jpg", num_workers=2, progress=False)
    return out


@pytest.fixture
def cli_env(tmp_path: Path) -> dict:
    """Environment for running ``shufflenet-pl`` in a subprocess from the repository root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(args: list, cwd: Path, env: dict, timeout: float = 900):  # a hung command fails the test
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "shufflenet_pl.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
