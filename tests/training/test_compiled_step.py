"""The launch-free training step's options on the CPU: compile modes, the optimizer implementation,
uint8 batches normalised inside the step, and the settings the CPU cannot run refused by name."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shufflenet_pl.data.common import normalize_on_device
from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier


def _module(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.05, schedule="constant", **kwargs)


def _loader(dtype: torch.dtype = torch.float32, n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x if dtype == torch.uint8 else normalize_on_device(x), y), batch_size=8)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"compile": True, "compile_mode": "fastest"}, "model.compile_mode"),
        ({"compile_mode": "reduce-overhead"}, "model.compile=true"),
        ({"optimizer_impl": "apex"}, "model.optimizer_impl"),
    ],
)
def test_bad_compile_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        _module(**kwargs)


def test_cuda_graph_mode_is_refused_on_cpu(tmp_path) -> None:
    module = _module(compile=True, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="model.compile_mode='reduce-overhead'.*CUDA device"):
        _trainer(tmp_path, max_steps=1).fit(module, _loader())


@pytest.mark.parametrize(
    "impl, device, expected",
    [
        ("auto", "cpu", {"fused": None, "foreach": None}),
        ("auto", "cuda", {"fused": True}),
        ("fused", "cpu", {"fused": True}),
        ("foreach", "cpu", {"foreach": True}),
        ("for-loop", "cpu", {"foreach": False}),
    ],
)
def test_optimizer_implementation_follows_the_device(impl: str, device: str, expected: dict) -> None:
    optimizer = _module(optimizer_impl=impl).build_optimizer(torch.device(device))
    assert {key: optimizer.defaults[key] for key in expected} == expected
    assert [g["weight_decay"] for g in optimizer.param_groups] == [4e-5, 0.0]


def test_uint8_batches_are_normalised_inside_the_step() -> None:
    """A loader may hand over raw uint8 pixels: the step normalises them exactly as the datamodules do."""
    module = _module().eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    targets = torch.randint(0, 10, (4,))
    with torch.no_grad():
        torch.testing.assert_close(module._loss(images, targets), module._loss(normalize_on_device(images), targets))
        torch.testing.assert_close(module(images), module(normalize_on_device(images)))


@pytest.mark.slow
def test_compiled_step_trains_like_the_eager_one(tmp_path) -> None:
    """torch.compile (default mode, static shapes, fused SGD on the CPU) gives the eager step's weights,
    from uint8 batches, and keeps the state-dict names."""
    eager, compiled = _module(optimizer_impl="for-loop"), _module(compile=True, optimizer_impl="fused")
    assert list(eager.state_dict()) == list(compiled.state_dict())
    initial = [p.detach().clone() for p in eager.model.parameters()]
    for module in (eager, compiled):
        _trainer(tmp_path, max_steps=1).fit(module, _loader(torch.uint8))
    for (name, a), b, a0 in zip(eager.model.named_parameters(), compiled.model.parameters(), initial):
        # Same update up to float reassociation: the difference is tiny against the update itself.
        assert (a - a0).norm() > 0, name
        assert (a - b).norm() <= 1e-2 * (a - a0).norm() + 1e-6, name


def test_progressive_resizing_bounds_the_compiled_graphs(tmp_path) -> None:
    """One static graph per training resolution: a ramp with more resolutions than torch recompiles
    for is refused before training (160..192 by 32 is two graphs; by 4, nine)."""
    from shufflenet_pl.callbacks import ProgressiveResizing

    ramp = ProgressiveResizing(min_res=160, max_res=192, start_ramp=1, end_ramp=10, multiple=32)
    assert ramp.training_resolutions(16) == [160, 192]
    fine = ProgressiveResizing(min_res=160, max_res=192, start_ramp=1, end_ramp=10, multiple=4)
    assert len(fine.training_resolutions(16)) == 9
    trainer = _trainer(tmp_path, max_epochs=16, callbacks=[fine])
    with pytest.raises(ValueError, match="ProgressiveResizing: 9 training resolutions"):
        fine.on_fit_start(trainer, _module(compile=True))
    fine.on_fit_start(trainer, _module())  # eager: any number of resolutions


def test_cli_refuses_cuda_graphs_on_cpu_in_one_line(demo_root, tmp_path, monkeypatch, capsys) -> None:
    """`fit` with compile_mode=reduce-overhead on a CPU stops before training with one line naming the key."""
    from conftest import REPO
    from shufflenet_pl.cli import build_cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        build_cli(
            [
                "fit",
                "--config",
                str(REPO / "configs" / "experiment" / "demo.yaml"),
                "--no-wandb",
                "--model.compile",
                "true",
                "--model.compile_mode",
                "reduce-overhead",
                "--trainer.accelerator",
                "cpu",
                "--trainer.max_steps",
                "1",
                "--data.class_path",
                "shufflenet_pl.data.ImageFolderDataModule",
                "--data.init_args.root",
                str(demo_root),
                "--data.init_args.demo",
                "false",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: model.compile_mode='reduce-overhead' captures CUDA graphs" in err and "Traceback" not in err
