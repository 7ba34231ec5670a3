"""The benchmark scripts (``benchmarks/``): they are scripts, not timed tests, so these tests check only
that they run on tiny settings and write well-formed output, and that their parts (interleaved timing,
settings, the paper's channel numbers, equal-FLOPs micro-networks, verdicts) do what they say."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from benchmarks import compile_formulations, guidelines, model_throughput
from benchmarks._timing import format_table, time_interleaved
from shufflenet_pl.analysis.report import count_multiply_adds
from conftest import REPO, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_time_interleaved_alternates_the_order() -> None:
    order: List[str] = []
    samples = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=4, warmup=1, synchronize=lambda: None
    )
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(v) for v in samples.values()] == [4, 4] and all(t >= 0 for v in samples.values() for t in v)


def test_time_interleaved_repeats_fast_calls_and_reports_time_per_call() -> None:
    calls = {"fast": 0, "slow": 0}

    def fast() -> None:
        calls["fast"] += 1

    def slow() -> None:
        calls["slow"] += 1
        time.sleep(0.02)

    samples = time_interleaved(
        {"fast": fast, "slow": slow}, repeats=3, warmup=0, synchronize=lambda: None, min_sample_seconds=0.01
    )
    assert calls["fast"] > 3 * 10 and calls["slow"] == 1 + 3  # calibration call + one per sample
    assert min(samples["slow"]) >= 0.02 and max(samples["fast"]) < 0.01


def test_time_interleaved_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="repeats >= 1"):
        time_interleaved({"a": lambda: None}, repeats=0, warmup=0, synchronize=lambda: None)


def test_format_table_aligns_numbers_right() -> None:
    table = format_table(["name", "speed"], [["a", "1.5x"], ["long name", "12,345.0"]]).splitlines()
    assert table[0] == "| name      | speed    |"
    assert table[2] == "| a         |     1.5x |" and table[3] == "| long name | 12,345.0 |"


def test_settings_and_widths_parse() -> None:
    parse = model_throughput.parse_setting
    assert parse("fp32") == model_throughput.Setting("fp32")
    assert parse("bf16") == model_throughput.Setting("bf16", channels_last=True, bf16=True)
    assert parse("compile") == model_throughput.Setting("compile", channels_last=True, bf16=True, compile=True)
    assert parse("compile+channels_last") == model_throughput.Setting(
        "compile+channels_last", channels_last=True, compile=True
    )
    with pytest.raises(ValueError, match="unknown setting 'fp16' in 'fp16\\+channels_last'"):
        parse("fp16+channels_last")
    assert [model_throughput.parse_width(w) for w in ("0.5", "1", "x1_5", "shufflenet_v2_x2_0", "1.0x")] == [
        "0.5x",
        "1.0x",
        "1.5x",
        "2.0x",
        "1.0x",
    ]
    with pytest.raises(ValueError, match="unknown width '3.0'"):
        model_throughput.parse_width("3.0")


def test_guideline_widths_are_the_papers_up_to_equal_flops_rounding() -> None:
    """Tables 1 and 2 of the paper print (128, 128), (90, 180), (52, 312), (36, 432) and 128, 180, 256,
    360; the integers nearest to equal FLOPs differ by at most 2 channels."""
    assert [guidelines.g1_channels(128, r) for r in (1, 2, 6, 12)] == [(128, 128), (91, 182), (52, 312), (37, 444)]
    assert [guidelines.g1_channels(32, r) for r in (1, 2, 6, 12)] == [(32, 32), (23, 46), (13, 78), (9, 108)]
    assert [guidelines.g2_channels(128, g) for g in (1, 2, 4, 8)] == [128, 182, 256, 360]
    assert [guidelines.series_channels(128, k) for k in (1, 2, 4)] == [128, 91, 64]


@pytest.mark.parametrize("preset", ["gpu", "cpu"])
def test_guideline_networks_have_equal_flops_per_column(preset: str) -> None:
    for table in guidelines.build_tables(guidelines.PRESETS[preset], blocks=1, tables=(1, 2, 3)):
        for column_index, column in enumerate(table.columns):
            flops = [
                count_multiply_adds(specs[column_index].build(), 8, in_channels=specs[column_index].in_channels)
                for _, specs in table.rows
            ]
            # Integer widths keep every row within 6 % of the first row's FLOPs; the coarsest cell is
            # 1:12 at c = 32, (9, 108), 5 % short, as in the paper.
            assert max(abs(f / flops[0] - 1) for f in flops) < 0.06, (table.number, column, flops)


def test_guideline_micro_networks_shapes() -> None:
    parallel = guidelines.ParallelFragments(64, 4)
    assert parallel(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)
    with pytest.raises(ValueError, match="divisible by fragments"):
        guidelines.ParallelFragments(30, 4)
    x = torch.randn(1, 32, 8, 8)
    plain = guidelines.Bottleneck(32, relu=False, shortcut=False)
    with_shortcut = guidelines.Bottleneck(32, relu=False, shortcut=True)
    with_shortcut.load_state_dict(plain.state_dict())
    torch.testing.assert_close(with_shortcut(x), plain(x) + x)
    assert (guidelines.Bottleneck(32, relu=True, shortcut=True)(x) >= 0).all()


def test_guideline_verdicts_count_ties_within_3_percent() -> None:
    g1 = guidelines._fastest_row_verdict("1:1")
    assert g1([[3.0, 3.0], [2.0, 1.0]]) == (True, "1:1 is the fastest (ties within 3% count) in 2 of 2 columns")
    assert g1([[3.0, 1.99], [2.0, 2.0]])[0]  # 0.5 % slower than the fastest: a tie
    assert not g1([[3.0, 1.0], [2.0, 2.0]])[0]
    g2 = guidelines._monotonic_verdict("g")
    assert g2([[4.0], [3.0], [3.05], [1.0]])[0] and not g2([[4.0], [3.0], [3.5], [1.0]])[0]
    assert guidelines._g4_verdict([[1.0], [2.0], [2.5], [3.0]])[0]
    assert guidelines._g4_verdict([[1.0], [0.99], [2.5], [3.0]])[0]
    assert not guidelines._g4_verdict([[2.0], [1.0], [2.5], [3.0]])[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--widths", "3.0"], "unknown width '3.0'"),
        (["--settings", "fp16"], "unknown setting 'fp16'"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--device", "tpu"], "is not a device"),
        (["--device", "mps"], "only cpu and cuda"),
        (["--plot-from", "/nonexistent/model_throughput.json"], "cannot read /nonexistent/model_throughput.json"),
    ],
)
def test_bench_refuses_bad_arguments(argv: List[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        model_throughput.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        guidelines.main(["--device", "cuda"])
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_command_runs_tiny_and_writes_table_json_and_charts(
    tmp_path: Path, cli_env: dict, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bench"
    result = run_cli(
        [
            "bench",
            "--widths",
            "0.5",
            "--settings",
            "fp32",
            "channels_last",
            "--batch-size",
            "2",
            "--image-size",
            "64",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--min-sample-ms",
            "0",
            "--threads",
            "1",
            "--no-progress",
            "--out-dir",
            str(out),
        ],
        cwd=tmp_path,
        env=cli_env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "model_throughput.json").read_text())
    assert report["batch_size"] == 2 and report["environment"]["threads"] == 1
    results = report["results"]
    assert [(r["setting"], r["mode"]) for r in results] == [
        (s, m) for s in ("fp32", "channels_last") for m in ("train", "infer", "latency")
    ]
    for r in results:
        assert r["width"] == "0.5x" and r["multiply_adds_224px"] == pytest.approx(40.5e6, rel=0.01)
        assert r["max_output_difference"] < 1e-4
        assert r["batch_size"] == (1 if r["mode"] == "latency" else 2)
        for who in ("ours", "torchvision"):
            assert len(r[who]["seconds"]) == 2 and r[who]["median_s"] > 0
            assert r[who]["images_per_s"] == pytest.approx(r["batch_size"] / r[who]["median_s"])
        assert r["speedup"] == pytest.approx(r["torchvision"]["median_s"] / r["ours"]["median_s"])
    table = [
        line for line in result.stdout.splitlines() if line.startswith("|") and line.split("|")[1].strip() == "0.5x"
    ]
    assert len(table) == 6 and all(line.rstrip(" |").endswith("x") for line in table)
    for png in ("model_throughput.png", "speed_vs_flops.png"):
        assert (out / png).read_bytes()[:8] == PNG_SIGNATURE

    # Redraw from the JSON without timing anything (in-process: the CLI's import cost is paid once above).
    model_throughput.main(["--plot-from", str(out / "model_throughput.json"), "--out-dir", str(tmp_path / "replot")])
    replotted = capsys.readouterr().out.splitlines()
    assert [line for line in replotted if line.startswith("|") and line.split("|")[1].strip() == "0.5x"] == table
    assert (tmp_path / "replot" / "speed_vs_flops.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_guidelines_script_runs_tiny_and_prints_the_four_tables(tmp_path: Path) -> None:
    out = tmp_path / "guidelines"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "guidelines.py"),
            "--image-size",
            "8",
            "--blocks",
            "1",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--min-sample-ms",
            "0",
            "--threads",
            "1",
            "--no-progress",
            "--out-dir",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for number, guideline in ((1, "G1"), (2, "G2"), (3, "G3"), (4, "G4")):
        assert f"Table {number} ({guideline}:" in result.stdout
        assert any(
            line.startswith(f"{guideline} holds here") or line.startswith(f"{guideline} does NOT hold here")
            for line in result.stdout.splitlines()
        )
    report = json.loads((out / "guidelines.json").read_text())
    assert report["preset"] == "cpu" and [t["table"] for t in report["tables"]] == [1, 2, 3, 4]
    shapes = {t["table"]: (len(t["rows"]), len(t["columns"])) for t in report["tables"]}
    assert shapes == {1: (4, 3), 2: (4, 3), 3: (5, 3), 4: (4, 3)}
    for table in report["tables"]:
        assert isinstance(table["holds"], bool) and table["verdict"]
        for row in table["rows"]:
            assert all(
                cell["batches_per_s"] > 0 and len(cell["seconds"]) == 2 and cell["multiply_adds"] > 0
                for cell in row["cells"]
            )
    assert report["tables"][0]["rows"][1]["cells"][0]["channels"] == "(23, 46)"
    assert (out / "guidelines.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("formulation", ["pointwise-matmul", "depthwise-taps", "both"])
def test_compile_formulations_compute_the_same_network(formulation: str) -> None:
    """Each rewritten network gives torchvision's logits and parameter gradients (float64, both strides)."""
    import torchvision

    torch.manual_seed(0)
    theirs = torchvision.models.shufflenet_v2_x0_5(weights=None).double()
    rewritten = compile_formulations.build_formulation(formulation, theirs)
    kinds = {type(m).__name__ for m in rewritten.modules()}
    assert ("PointwiseMatmul" in kinds) == (formulation != "depthwise-taps") and ("DepthwiseTaps" in kinds) == (
        formulation != "pointwise-matmul"
    )
    assert rewritten.state_dict().keys() == theirs.state_dict().keys()
    images = torch.randn(3, 3, 48, 48, dtype=torch.float64).to(memory_format=torch.channels_last)
    labels = torch.tensor([1, 5, 9])
    gradients = []
    for model in (theirs, rewritten):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        gradients.append(torch.autograd.grad(loss, list(model.parameters())))
    # Compared against the largest gradient: some BatchNorm shifts have a true gradient of 0 (a BatchNorm
    # follows), where both sides hold only rounding noise.
    scale = max(g.abs().max() for g in gradients[0])
    assert max((a - b).abs().max() for a, b in zip(*gradients)) < 1e-10 * scale


@pytest.mark.slow
def test_compile_formulations_script_runs_tiny_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "formulations"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "compile_formulations.py"),
            "--device",
            "cpu",
            "--no-compile",
            "--no-bf16",
            "--width",
            "0.5",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--out-dir",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [
        line for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| formulation")
    ]
    assert [row.split("|")[1].strip() for row in rows] == list(compile_formulations.FORMULATIONS)
    report = json.loads((out / "compile_formulations.json").read_text())
    assert report["width"] == "0.5" and report["compile"] is False
    for entry in report["results"]:
        assert entry["max_logit_difference"] < 1e-4 and entry["speedup"] > 0
        assert all(len(entry["seconds"][who]) == 2 for who in ("torchvision", entry["formulation"]))
    bad = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compile_formulations.py"), "--formulations", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "invalid choice: 'fast'" in bad.stderr


def test_compile_formulations_refuses_numbers_below_their_minimum(capsys: pytest.CaptureFixture) -> None:
    assert compile_formulations.main(["--repeats", "0", "--device", "cpu"]) == 2
    assert "error: --repeats must be >= 1, got 0" in capsys.readouterr().err
