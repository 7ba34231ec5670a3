"""Every YAML in configs/ parses and instantiates (model, datamodule, trainer)."""

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from shufflenet_pl.cli import build_cli

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
# Partial files (one group each) are completed with these, given first so that the file under test wins.
BASE = {
    "trainer": REPO / "configs" / "trainer" / "default.yaml",
    "model": REPO / "configs" / "model" / "x0_5.yaml",
    "data": REPO / "configs" / "data" / "demo.yaml",
}


def test_configs_exist() -> None:
    names = {p.relative_to(REPO / "configs").as_posix() for p in CONFIGS}
    assert {
        "model/x0_5.yaml",
        "model/x1_0.yaml",
        "model/x1_5.yaml",
        "model/x2_0.yaml",
        "experiment/official.yaml",
        "experiment/fast.yaml",
        "experiment/demo.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_instantiates(path: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    content = yaml.safe_load(path.read_text())
    args = [arg for base in BASE.values() for arg in ("--config", str(base))]
    args += ["--config", str(path), "--data.init_args.root", str(demo_root), "--data.init_args.demo", "false"]
    cli = build_cli(args, run=False)
    assert cli.model.num_classes == 10  # linked from the data
    assert cli.datamodule.num_classes == 10
    assert cli.trainer is not None
    for key, value in content.get("model", {}).items():
        if key != "model":
            assert cli.model.hparams[key] == value, key
    model_args = content.get("model", {}).get("model", {}).get("init_args")
    if model_args:
        assert cli.model.model.conv1[0].out_channels == model_args["stages_out_channels"][0]
        assert cli.model.model.fc.in_features == model_args["stages_out_channels"][-1]
