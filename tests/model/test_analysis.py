"""``shufflenet_pl.analysis``: Fig. 4 feature reuse traced through the real forward, the empirical
weight matrix on hand-set weights, heatmap PNGs, and the Table 5 model report."""

import csv
import io
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from shufflenet_pl.analysis.cli import analyze_main, load_model_for_analysis
from shufflenet_pl.analysis.plot import save_heatmap
from shufflenet_pl.analysis.report import (
    activation_bytes,
    build_reports,
    format_report,
    layer_table,
    measure_throughput,
    resolve_model_name,
)
from shufflenet_pl.analysis.reuse import distance_profile, empirical_reuse, reuse_formula, trace_reuse
from shufflenet_pl.models import InvertedResidual, build_model

from conftest import REPO

WIDTHS = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]
# Table 5 stage widths (stage2, stage3, stage4) and conv5.
STAGES = {
    "shufflenet_v2_x0_5": (48, 96, 192, 1024),
    "shufflenet_v2_x1_0": (116, 232, 464, 1024),
    "shufflenet_v2_x1_5": (176, 352, 704, 1024),
    "shufflenet_v2_x2_0": (244, 488, 976, 2048),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", WIDTHS)
def test_traced_count_matrix_equals_r_pow_j_c(name: str) -> None:
    trace = trace_reuse(build_model(name))
    counts, formula = trace.count_matrix(), reuse_formula(trace)
    assert trace.labels == [f"{stage}.{unit}" for stage, n in ((2, 4), (3, 8), (4, 4)) for unit in range(n)]
    widths = [STAGES[name][0]] * 4 + [STAGES[name][1]] * 8 + [STAGES[name][2]] * 4
    assert list(np.diag(counts)) == widths
    # Within a stage: r^j·c channels, rounded up where c/2^j is fractional; never off by a whole channel.
    assert (counts == np.ceil(formula)).all(), counts - formula
    assert np.abs(counts - formula).max() < 1
    # Across stages nothing passes unchanged: the down-sampling unit convolves its whole input.
    for s, l in ((3, 4), (0, 11), (11, 12), (4, 15)):
        assert counts[s, l] == 0
    assert (np.tril(counts, -1) == 0).all()
    # Where 2^j divides c the count is exact: 0.5x stage 3 (c = 96) halves five times.
    if name == "shufflenet_v2_x0_5":
        assert list(counts[4, 4:12]) == [96, 48, 24, 12, 6, 3, 2, 1]


@pytest.mark.parametrize(
    "dtype, memory_format", [(torch.bfloat16, torch.contiguous_format), (torch.float32, torch.channels_last)]
)
def test_trace_works_in_any_dtype_and_memory_format(dtype: torch.dtype, memory_format: torch.memory_format) -> None:
    model = build_model("shufflenet_v2_x0_5").to(dtype=dtype, memory_format=memory_format)
    trace = trace_reuse(model, image_size=32)
    assert (trace.count_matrix() == np.ceil(reuse_formula(trace))).all()


def test_trace_follows_the_code_not_the_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the channel shuffle from the forward: the identity half then stays in place forever, and
    the tracer must report c/2 channels at every distance instead of r^j·c."""
    model = build_model("shufflenet_v2_x0_5")

    def concat_without_shuffle(self: InvertedResidual, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return torch.cat((x1, self.branch2(x2)), dim=1)

    for unit in model.modules():
        if isinstance(unit, InvertedResidual) and unit.stride == 1:
            monkeypatch.setattr(unit, "forward", types.MethodType(concat_without_shuffle, unit))
    counts = trace_reuse(model).count_matrix()
    assert list(counts[4, 4:12]) == [96] + [48] * 7
    assert list(counts[0, 0:4]) == [48, 24, 24, 24]


def test_trace_refuses_units_that_are_not_chained(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("shufflenet_v2_x0_5")
    original = model.stage2.forward
    monkeypatch.setattr(model.stage2, "forward", lambda x: original(x) * 2.0)
    with pytest.raises(RuntimeError, match="stage3.0 does not receive the output of stage2.3"):
        trace_reuse(model)


def test_trace_checks_the_stage_forward_that_runs_without_unit_hooks() -> None:
    """A stage that moves channels differently when its units are not hooked (as a fused forward
    could) is caught by the third pass instead of being traced wrongly."""

    class SneakyStage(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for unit in self:
                x = unit(x)
            watched = any(unit._forward_hooks or unit._forward_pre_hooks for unit in self)
            return x if watched else x.flip(1)

    model = build_model("shufflenet_v2_x0_5")
    model.stage3 = SneakyStage(*model.stage3)
    with pytest.raises(RuntimeError, match="reads other channels in the model.s own forward than unit by unit"):
        trace_reuse(model)


def test_trace_leaves_the_model_as_it_was() -> None:
    model = build_model("shufflenet_v2_x0_5").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace_reuse(model)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def _hand_set_model(num_classes: int = 1000) -> nn.Module:
    """0.5x with every block's first 1x1 conv set to W[o, i] = (-1)^o (i + 1), so |W| depends on the
    input channel only."""
    model = build_model("shufflenet_v2_x0_5", num_classes=num_classes)
    with torch.no_grad():
        for unit in model.modules():
            if isinstance(unit, InvertedResidual):
                weight = unit.branch2[0].weight
                out_channels, in_channels = weight.shape[:2]
                sign = torch.tensor([(-1.0) ** o for o in range(out_channels)])
                weight.copy_((sign[:, None] * torch.arange(1.0, in_channels + 1)[None, :])[:, :, None, None])
    return model


def test_empirical_matrix_on_hand_set_weights() -> None:
    """Hand computation for stage 2 of 0.5x (c = 48) from the paper's layout: a basic unit puts its
    identity half at even positions and its computed half at odd ones, and the next unit's first conv
    reads positions 24..47 (input channel i is position 24 + i):

    * 2.0 (down-sampling) reads the 24 stem channels: mean(1..24) = 12.5; 2.1 reads 24 of 2.0's: 12.5.
    * 2.2: even i from 2.0 -> mean(1, 3, ..., 23) = 12; odd i from 2.1 -> mean(2, ..., 24) = 13.
    * 2.3: i % 4 == 0 from 2.0 -> mean(1, 5, ..., 21) = 11; i % 4 == 2 from 2.1 -> mean(3, 7, ..., 23) = 13;
      odd i from 2.2 -> 13.
    * 3.0 (down-sampling) reads all 48 channels p of 2.3's output: p % 8 == 0 from 2.0 -> mean(1, 9, ..., 41)
      = 21; p % 8 == 4 from 2.1 -> mean(5, 13, ..., 45) = 25; p % 4 == 2 from 2.2 -> mean(3, ..., 47) = 25;
      odd p from 2.3 -> mean(2, ..., 48) = 25.
    """
    model = _hand_set_model()
    empirical = empirical_reuse(model)
    assert empirical.shape == (17, 16)  # rows: stem + 16 blocks
    rows = {"stem": 0, "2.0": 1, "2.1": 2, "2.2": 3, "2.3": 4}
    expected = {
        0: {"stem": 12.5},
        1: {"2.0": 12.5},
        2: {"2.0": 12.0, "2.1": 13.0},
        3: {"2.0": 11.0, "2.1": 13.0, "2.2": 13.0},
        4: {"2.0": 21.0, "2.1": 25.0, "2.2": 25.0, "2.3": 25.0},
    }
    for column, values in expected.items():
        for source, row in rows.items():
            if source in values:
                assert empirical[row, column] == pytest.approx(values[source]), (source, column)
            else:
                assert math.isnan(empirical[row, column]), (source, column)
        assert np.isnan(empirical[5:, column]).all()


def test_distance_profile_is_one_where_weights_do_not_decay() -> None:
    """With |W| the same for every input channel, each source block gets the same mean: no decay."""
    model = build_model("shufflenet_v2_x0_5")
    with torch.no_grad():
        for unit in model.modules():
            if isinstance(unit, InvertedResidual):
                unit.branch2[0].weight.fill_(-0.25)
    trace = trace_reuse(model)
    profile = distance_profile(trace, empirical_reuse(model, trace))
    assert list(profile) == [1, 2, 3, 4, 5, 6, 7]
    assert all(value == pytest.approx(1.0) for value in profile.values())


def test_heatmaps_are_valid_pngs(tmp_path: Path) -> None:
    trace = trace_reuse(build_model("shufflenet_v2_x0_5"))
    counts = trace.count_matrix()
    traced = save_heatmap(
        counts / np.diag(counts)[:, None],
        tmp_path / "traced.png",
        trace.labels,
        trace.labels,
        "traced",
        "share",
        annotations=counts,
    )
    empirical = empirical_reuse(build_model("shufflenet_v2_x0_5"), trace)
    weights = save_heatmap(
        empirical / np.nanmax(empirical, axis=0),
        tmp_path / "sub" / "empirical.png",
        ["stem", *trace.labels],
        trace.labels,
        "empirical",
        "mean |w|",
    )
    for path in (traced, weights):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 400
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # drawn, not blank
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["empirical.png", "traced.png"]  # no .tmp left
    with pytest.raises(ValueError, match="does not match 3 row"):
        save_heatmap(np.zeros((2, 2)), tmp_path / "bad.png", ["a", "b", "c"], ["a", "b"], "t", "c")


@pytest.mark.parametrize("name", WIDTHS)
def test_layer_table_regenerates_table5(name: str) -> None:
    s2, s3, s4, c5 = STAGES[name]
    rows = [(r.layer, r.output_size, r.kernel, r.stride, r.repeat, r.channels) for r in layer_table(build_model(name))]
    assert rows == [
        ("image", "224x224", "", None, 1, 3),
        ("conv1", "112x112", "3x3", 2, 1, 24),
        ("maxpool", "56x56", "3x3", 2, 1, 24),
        ("stage2", "28x28", "", 2, 1, s2),
        ("", "28x28", "", 1, 3, s2),
        ("stage3", "14x14", "", 2, 1, s3),
        ("", "14x14", "", 1, 7, s3),
        ("stage4", "7x7", "", 2, 1, s4),
        ("", "7x7", "", 1, 3, s4),
        ("conv5", "7x7", "1x1", 1, 1, c5),
        ("global pool", "1x1", "7x7", None, 1, c5),
        ("fc", "", "", None, 1, 1000),
    ]


def test_activation_bytes_hand_computed() -> None:
    """The first Linear saves its input (a view of the 4 images of 3 x 32 x 32), ReLU its output (which
    the second Linear shares, so it counts once); weights are parameters, not activations."""
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 20), nn.ReLU(), nn.Linear(20, 5))
    assert activation_bytes(mlp, image_size=32, batch_size=4) == 4 * (3 * 32 * 32 + 20) * 4


def test_activation_bytes_restores_batchnorm_statistics() -> None:
    model = build_model("shufflenet_v2_x0_5").eval()
    before = {k: v.clone() for k, v in model.named_buffers()}
    assert activation_bytes(model, image_size=64) > 0
    assert not model.training
    for key, value in model.named_buffers():
        assert torch.equal(value, before[key]), key


def test_measure_throughput() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    before = model[0].weight.clone()
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    steps = []
    for mode in ("infer", "train"):
        speeds = measure_throughput(
            {"conv": model, "mlp": other},
            batch_size=2,
            image_size=32,
            mode=mode,
            iterations=3,
            warmup=1,
            progress=lambda: steps.append(1),
        )
        assert sorted(speeds) == ["conv", "mlp"] and all(value > 0 for value in speeds.values())
    assert len(steps) == 2 * 2 * 3  # modes x models x iterations, taking turns
    assert not torch.equal(model[0].weight, before)  # the training steps really stepped
    with pytest.raises(ValueError, match="mode must be 'infer' or 'train', got 'fast'"):
        measure_throughput({"conv": model}, mode="fast")


def test_resolve_model_name() -> None:
    for alias in ("shufflenet_v2_x1_5", "x1_5", "1.5x", "1.5"):
        assert resolve_model_name(alias) == "shufflenet_v2_x1_5"
    assert resolve_model_name("2") == resolve_model_name("2.0x") == "shufflenet_v2_x2_0"
    with pytest.raises(ValueError, match="unknown model '3x'"):
        resolve_model_name("3x")


def test_report_table_markdown_and_csv() -> None:
    reports = build_reports(WIDTHS[:2], image_size=64, throughput_modes=[])
    markdown = format_report(reports, 64, "CPU").splitlines()
    assert len({line.count("|") for line in markdown}) == 1  # every row has every column
    assert [cell.strip() for cell in markdown[0].split("|")[1:-1]] == [
        "layer",
        "output size",
        "kernel",
        "stride",
        "repeat",
        "0.5x",
        "1.0x",
    ]
    rows = list(csv.reader(io.StringIO(format_report(reports, 64, "CPU", fmt="csv"))))
    table = {row[0]: row[5:] for row in rows if row[0]}
    assert rows[0][5:] == ["0.5x", "1.0x"]
    assert table["parameters"] == ["1,366,792", "2,278,604"]
    assert table["stage3"] == ["96", "232"]
    assert float(table["MFLOPs (multiply-adds, 64 px)"][0]) == pytest.approx(reports[0].multiply_adds / 1e6, abs=0.05)


def test_analyze_model_command_prints_one_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "report.md"
    threads = torch.get_num_threads()
    try:
        analyze_main(
            [
                "model",
                "--models",
                "0.5x",
                "x1_0",
                "--image-size",
                "64",
                "--batch-size",
                "2",
                "--iterations",
                "1",
                "--warmup",
                "0",
                "--throughput",
                "both",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--clock",
                "process",
                "--output",
                str(output),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out.strip()
    assert printed == output.read_text().strip()
    lines = printed.splitlines()
    assert "0.5x" in lines[0] and "1.0x" in lines[0]
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels[:3] == ["image", "conv1", "maxpool"]
    assert "parameters" in labels and "activation memory (MiB/image, training)" in labels
    speeds = [line for line in lines if "images/s, CPU, 1 thread, batch 2, fp32, per CPU second" in line]
    assert len(speeds) == 2 and all(float(cell.replace(",", "")) > 0 for cell in speeds[0].split("|")[6:8])
    with pytest.raises(SystemExit) as exit_info:
        analyze_main(["model", "--models", "3x"])
    assert exit_info.value.code == 2
    assert "unknown model '3x'" in capsys.readouterr().err


def test_load_model_for_analysis_reads_width_and_classes(tmp_path: Path) -> None:
    model = _hand_set_model(num_classes=10)
    checkpoint = tmp_path / "last.ckpt"
    # A Lightning checkpoint keeps the network under state_dict with a model. prefix.
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, checkpoint)
    loaded, name = load_model_for_analysis(checkpoint)
    assert name == "shufflenet_v2_x0_5" and loaded.fc.out_features == 10
    assert torch.equal(loaded.stage2[1].branch2[0].weight, model.stage2[1].branch2[0].weight)
    with pytest.raises(ValueError, match="does not fit shufflenet_v2_x1_0 with 10 classes"):
        load_model_for_analysis(checkpoint, "shufflenet_v2_x1_0")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        load_model_for_analysis(tmp_path / "missing.pth")


def test_analyze_reuse_command_refuses_bad_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    not_weights = tmp_path / "notes.pt"
    torch.save({"lr": torch.tensor(0.1)}, not_weights)
    for path, message in ((tmp_path / "nope.pt", "nope.pt does not exist"), (not_weights, "notes.pt has no fc.weight")):
        with pytest.raises(SystemExit) as exit_info:
            analyze_main(["reuse", "--weights", str(path), "--out-dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_analyze_reuse_command_end_to_end(tmp_path: Path) -> None:
    """``shufflenet-pl analyze reuse --weights`` through the real entry point: matrices printed, PNGs
    and CSVs written, and the CSV holds the hand-computed weights."""
    weights = tmp_path / "hand.pt"
    torch.save(_hand_set_model(num_classes=10).state_dict(), weights)
    out_dir = tmp_path / "analysis"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shufflenet_pl.cli",
            "analyze",
            "reuse",
            "--weights",
            str(weights),
            "--out-dir",
            str(out_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shufflenet_v2_x0_5: channels directly connected" in result.stdout
    assert "traced == ceil(r^j*c) for all 56 same-stage pairs and 0 across stages: True" in result.stdout
    assert "2.0  48  24  12   6" in result.stdout
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "reuse_empirical_shufflenet_v2_x0_5_hand.csv",
        "reuse_empirical_shufflenet_v2_x0_5_hand.png",
        "reuse_traced_shufflenet_v2_x0_5.csv",
        "reuse_traced_shufflenet_v2_x0_5.png",
    ]
    for png in out_dir.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_SIGNATURE
    rows = {row[0]: row[1:] for row in csv.reader(open(out_dir / "reuse_empirical_shufflenet_v2_x0_5_hand.csv"))}
    assert [
        float(v) if v else None for v in [row[3] for label, row in rows.items() if label in ("2.0", "2.1", "2.2")]
    ] == [11.0, 13.0, 13.0]
    traced = {row[0]: row[1:] for row in csv.reader(open(out_dir / "reuse_traced_shufflenet_v2_x0_5.csv"))}
    assert traced["3.0"][4:12] == ["96", "48", "24", "12", "6", "3", "2", "1"]
