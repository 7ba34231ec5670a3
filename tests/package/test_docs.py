"""The docs' tables are rendered from benchmarks/results/*.json and up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import render_docs


def test_generated_tables_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().err


def test_every_marker_names_a_known_table() -> None:
    names = {t.name for t in render_docs.TABLES}
    for page in render_docs.page_files():
        for match in render_docs.MARKER.finditer(page.read_text()):
            assert match.group("name") in names, f"{page}: {match.group('name')}"


@pytest.fixture()
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(render_docs, "ROOT", tmp_path)
    return tmp_path


def write_page(root: Path, name: str) -> Path:
    page = root / "docs" / "page.md"
    page.write_text(f"# Page\n\n<!-- generated: {name} -->\nstale text\n<!-- end generated -->\n\nafter\n")
    return page


def test_stale_table_fails_check_and_is_rewritten(fake_root: Path) -> None:
    page = write_page(fake_root, "cpu-train-throughput")
    assert render_docs.main(["--check"]) == 1
    assert "stale text" in page.read_text()  # --check changes nothing
    assert render_docs.main([]) == 0
    text = page.read_text()
    assert "Not measured yet" in text and "train_throughput.json" in text and text.endswith("after\n")
    assert render_docs.main(["--check"]) == 0


def test_results_file_renders_its_figures(fake_root: Path) -> None:
    results = fake_root / "benchmarks/results/cpu-2core"
    results.mkdir(parents=True)
    (results / "data_throughput.json").write_text(
        json.dumps(
            {"torchvision_images_per_s": 171.4, "ours_images_per_s": 450.2, "decode_ceiling_images_per_s": 1570.0}
        )
    )
    page = write_page(fake_root, "cpu-data-throughput")
    render_docs.main([])
    text = page.read_text()
    assert "| our FFCV datamodule, images/s | 450 |" in text
    assert "(results/cpu-2core/data_throughput.json)" in text  # the docs site serves results/ (docs/hooks.py)
    assert "FFCV loader as shipped" not in text  # a key the file lacks is left out

    headline = write_page(fake_root, "headline")
    render_docs.main([])
    assert (
        "| Data loading, our FFCV decode stage vs torchvision ImageFolder, every worker count, 2-core CPU | 2.63x |"
        in headline.read_text()
    )


def test_record_demo_writes_the_headline_accuracy(fake_root: Path) -> None:
    job = fake_root / "jobs/demo"
    job.mkdir(parents=True)
    (job / "result.json").write_text(
        json.dumps(
            {"epoch": 8, "global_step": 744, "world_size": 1, "metrics": {"val/acc1": 0.9127, "train/loss": 0.3}}
        )
    )
    page = write_page(fake_root, "headline")
    assert render_docs.main(["--record-demo", str(job)]) == 0
    assert "| Demo job (`launch.py`): validation top-1 | 91.3 % after 8 epochs |" in page.read_text()


def _throughput_cells(speedups: dict) -> dict:
    return {
        "results": [
            {"width": width, "mode": mode, "setting": setting, "speedup": value}
            for (width, mode, setting), value in speedups.items()
        ]
    }


def _headline_value(page: Path, label: str) -> str:
    for line in page.read_text().splitlines():
        if line.startswith(f"| {label} |"):
            return line.split(" | ")[1]
    raise AssertionError(f"no headline row {label!r} in {page.read_text()}")


def test_headline_summarizes_whole_tables_not_one_cell(fake_root: Path) -> None:
    results = fake_root / "benchmarks/results/h200"
    results.mkdir(parents=True)
    cells = {
        (width, mode, setting): 1.0
        for width in ("0.5x", "1.0x", "1.5x", "2.0x")
        for mode in ("train", "infer")
        for setting in ("fp32", "channels_last", "bf16")
    }
    label = "Inference (batch 256) vs torchvision, every width and setting measured, H200"
    page = write_page(fake_root, "headline")

    def render(speedups: dict) -> str:
        (results / "model_throughput.json").write_text(json.dumps(_throughput_cells(speedups)))
        render_docs.main([])
        return _headline_value(page, label)

    assert render(cells) == "1.00x median of 12 (1.00x to 1.00x)"
    # One favourable cell moves the range, not the headline figure.
    best = {**cells, ("2.0x", "infer", "channels_last"): 1.45}
    assert render(best) == "1.00x median of 12 (1.00x to 1.45x)"
    # Most cells slower: the headline follows them, whatever the best cell says.
    slower = {k: (0.8 if k[1] == "infer" else v) for k, v in best.items()}
    assert render({**slower, ("2.0x", "infer", "channels_last"): 1.45}) == "0.80x median of 12 (0.80x to 1.45x)"
    # A training cell does not enter the inference row.
    assert render({**cells, ("1.0x", "train", "fp32"): 9.0}) == "1.00x median of 12 (1.00x to 1.00x)"
    # An even count: the mean of the two middle cells.
    even = {k: (1.2 if k[0] in ("1.5x", "2.0x") else v) for k, v in cells.items()}
    assert render(even) == "1.10x median of 12 (1.00x to 1.20x)"


def test_demo_headline_shows_the_spread_over_seeds(fake_root: Path) -> None:
    results = fake_root / "benchmarks/results/cpu-2core"
    results.mkdir(parents=True)
    (results / "demo_job.json").write_text(json.dumps({"epochs": 14, "metrics": {"val/acc1": 0.9967}}))
    runs = [
        {"seed": seed, "val_acc1": acc, "global_step": 1302, "wall_s": 300.0}
        for seed, acc in ((0, 0.9967), (1, 0.951), (2, 0.982))
    ]
    (results / "demo_seeds.json").write_text(json.dumps({"command": "python launch.py", "cpus": 2, "runs": runs}))
    page = write_page(fake_root, "headline")
    render_docs.main([])
    assert _headline_value(page, "Demo job (`launch.py`): validation top-1") == (
        "99.7 % after 14 epochs (3 seeds: 95.1 to 99.7 %)"
    )
    seeds = write_page(fake_root, "demo-seeds")
    render_docs.main([])
    text = seeds.read_text()
    assert "| 1 | 95.1 % | 1302 | 5.0 min |" in text and "| median | 98.2 % |" in text
