"""Render the docs' and README's tables from the JSON results under ``benchmarks/results/``.

Every figure in the user docs comes from a results file through this one script, so none is copied
by hand and none goes stale. Each table is one entry of ``TABLES``: a name, the results file(s) it
reads and a function that turns them into markdown. A page marks where a table goes with

    <!-- generated: NAME -->
    <!-- end generated -->

and ``python -m benchmarks.render_docs`` rewrites what lies between the two markers (``--check``
changes nothing and fails when a page is out of date; the tests run it). A table whose file does not
exist yet renders as a one-line "not measured yet" with the command that produces it.

To add a results file: write a render function (or reuse ``key_value_table``) and add one ``Table``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results")
PAGES = ("README.md", "docs")  # files, or folders whose *.md files are rendered

Results = Dict[str, Any]


@dataclass(frozen=True)
class Table:
    name: str
    sources: Sequence[str]  # paths relative to the repository root; all must exist to render
    render: Callable[..., str]  # called with the loaded JSON of each source, in order
    how_to_measure: str  # the command that writes the missing file


def load(path: str) -> Optional[Results]:
    file = ROOT / path
    return json.loads(file.read_text()) if file.exists() else None


# --------------------------------------------------------------------------- formatting helpers


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(data: Results, path: str) -> str:
    env = data.get("environment", {})
    parts = [f"Source: [`{path}`]({{link:{path}}})"]
    if env:
        parts.append(f"{env.get('device', '?')}, torch {env.get('torch', '?')}")
        if env.get("command"):
            parts.append(f"`{shown_command(env['command'])}`")
    return "; ".join(parts) + "."


def shown_command(command: str) -> str:
    """The command a reader would type: without where that run put its files or its progress switch."""
    command = re.sub(r"^\S*python\S*\s+", "", command)
    command = re.sub(r"^(-m\s+shufflenet_pl\.cli|\S*shufflenet_pl/cli\.py)\b", "shufflenet-pl", command)
    command = re.sub(r"\s--(out-dir|json|data-root)\s+\S+", "", command)
    return re.sub(r"\s--no-progress\b", "", command)


def key_value_table(rows: Sequence[tuple]) -> Callable[[Results], str]:
    """A two-column table from ``(label, key, kind)`` rows; kind is "rate", "ratio", "share", "text"
    or "text1" (a number with one decimal).

    Keys missing from the file are left out, so a file that grows needs no change here.
    """

    def render(data: Results) -> str:
        out = []
        for label, key, kind in rows:
            if key not in data or data[key] is None:
                continue
            value = data[key]
            text = {
                "rate": fmt_rate,
                "ratio": fmt_ratio,
                "share": lambda v: f"{100 * v:.0f} %",
                "text1": lambda v: f"{v:.1f}",
            }.get(kind, str)(value)
            out.append((label, text))
        return markdown_table(["", "value"], out) if out else "_The file holds none of the expected keys._"

    return render


# --------------------------------------------------------------------------- model throughput

MODE_TITLES = {"train": "train step", "infer": "inference", "latency": "latency, batch 1"}


def speedup_grid(data: Results, cells: bool = True) -> str:
    """Width x (mode, setting): ours / torchvision images/s and the speedup (torchvision's time / ours)."""
    results = data["results"]
    columns: List[tuple] = []
    for r in results:
        if (r["mode"], r["setting"]) not in columns:
            columns.append((r["mode"], r["setting"]))
    widths = list(dict.fromkeys(r["width"] for r in results))
    by_key = {(r["width"], r["mode"], r["setting"]): r for r in results}
    header = ["width"] + [f"{MODE_TITLES.get(m, m)}, {s}" for m, s in columns]
    rows = []
    for width in widths:
        row = [width]
        for mode, setting in columns:
            r = by_key.get((width, mode, setting))
            if r is None:
                row.append("")
            elif cells and mode != "latency":
                row.append(
                    f"{fmt_rate(r['ours']['images_per_s'])} / "
                    f"{fmt_rate(r['torchvision']['images_per_s'])}, {fmt_ratio(r['speedup'])}"
                )
            else:
                row.append(fmt_ratio(r["speedup"]))
        rows.append(row)
    setup = f"batch {data['batch_size']} at {data['image_size']} px, median of {data['repeats']} alternating calls"
    legend = (
        "Cells: ours / torchvision's images/s, speedup (torchvision's time / ours)"
        if cells
        else "Cells: speedup (torchvision's time / ours)"
    )
    return f"{markdown_table(header, rows)}\n\n{legend}; {setup}."


def compile_formulations(data: Results) -> str:
    """One row per formulation: images/s of both from the median step, and the GPU's kernel time per step."""

    def median(values: Sequence[float]) -> float:
        return sorted(values)[len(values) // 2]

    rows = []
    for r in data["results"]:
        name = r["formulation"]
        step = {who: median(r["seconds"][key]) for who, key in (("ours", name), ("tv", "torchvision"))}
        kernels = r.get("kernel_s_per_step", {})
        kernel_text = ""
        if name in kernels and "torchvision" in kernels:
            kernel_text = (
                f"{1e3 * kernels[name]:.1f} of {1e3 * step['ours']:.1f} ms / "
                f"{1e3 * kernels['torchvision']:.1f} of {1e3 * step['tv']:.1f} ms"
            )
        rows.append(
            [
                f"`{name}`",
                fmt_rate(data["batch_size"] / step["ours"]),
                fmt_rate(data["batch_size"] / step["tv"]),
                fmt_ratio(r["speedup"]),
                kernel_text,
            ]
        )
    header = [
        "formulation",
        "ours img/s",
        "torchvision img/s",
        "speedup",
        "GPU kernel time of the step, ours / torchvision",
    ]
    return (
        f"{markdown_table(header, rows, 'lrrrl')}\n\nWidth {data['width']}x, batch {data['batch_size']} at "
        f"{data['image_size']} px, bf16 + channels_last + `torch.compile`, training steps; `ours` is the "
        "model as shipped."
    )


def guidelines(data: Results) -> str:
    rows = [
        [f"Table {t['table']}", t["guideline"], t["claim"], "holds" if t["holds"] else "does not hold", t["verdict"]]
        for t in data["tables"]
    ]
    return markdown_table(["table", "guideline", "claim", "here", "verdict"], rows, "lllll")


# --------------------------------------------------------------------------- headline (README)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarize_ratios(values: Sequence[float]) -> Optional[str]:
    """A headline value for a set of measured ratios: the median, with the range and count when there are
    several, so that one favourable cell never stands for the whole table."""
    if not values:
        return None
    if len(values) == 1:
        return fmt_ratio(values[0])
    return (
        f"{fmt_ratio(_median(values))} median of {len(values)} ({fmt_ratio(min(values))} to {fmt_ratio(max(values))})"
    )


def _speedups(mode: str, settings: Optional[Sequence[str]] = None) -> Callable[[Results], Optional[str]]:
    """A headline value: the summary of every width's speedup in ``mode`` (and ``settings``, all when
    ``None``) of a model-throughput results file: whole columns of its table, never one cell."""

    def value(data: Results) -> Optional[str]:
        return summarize_ratios(
            [
                r["speedup"]
                for r in data.get("results", [])
                if r["mode"] == mode and (settings is None or r["setting"] in settings)
            ]
        )

    return value


def _loader_speedup(data: Results) -> Optional[str]:
    """A headline value: ours / torchvision over every worker count a data-throughput file measured."""
    runs = list((data.get("per_workers") or {}).values()) or [data]
    return summarize_ratios(
        [
            r["ours_images_per_s"] / r["torchvision_images_per_s"]
            for r in runs
            if r.get("ours_images_per_s") and r.get("torchvision_images_per_s")
        ]
    )


CONVERT = "benchmarks/results/cpu-2core/convert_throughput.json"


def convert_throughput(data: Results) -> str:
    """One row per ``--max-side``: CPU per image of FFCV's stock writer and of ours (with and without
    pass-through), ours / stock, and the share of photographs stored as their own bytes."""
    rows = []
    for side, row in data["max_side"].items():
        stock, ours, plain = row["stock"], row["ours"], row["ours_no_pass_through"]
        rows.append(
            [
                side,
                f"{stock['cpu_ms_per_image']:.2f} ms",
                f"{ours['cpu_ms_per_image']:.2f} ms",
                f"{ours['cpu_vs_stock']:.2f}x",
                f"{plain['cpu_ms_per_image']:.2f} ms ({plain['cpu_vs_stock']:.2f}x)",
                f"{100 * row['profile']['fits_share']:.0f} %",
            ]
        )
    header = ["max side", "stock FFCV writer", "ours", "ours / stock", "ours, --no-pass-through", "passed through"]
    table = markdown_table(header, rows, "rrrrrr")
    text = (
        f"{table}\n\nCPU seconds per image of the whole conversion (the converter and its writer processes), "
        f"median of {data['repeats']} runs, {data['workers']} workers, quality {data['quality']}, "
        f"on {data['images']} {data['source']}."
    )
    loader = data.get("loader")
    if loader:
        rates = loader["images_per_s"]
        text += (
            f" Training reads the files written with pass-through at {loader['pass_through_vs_reencoded']:.2f}x "
            f"the rate of re-encoded ones (max side {loader['max_side']}: {fmt_rate(rates['ours'])} vs "
            f"{fmt_rate(rates['ours_no_pass_through'])} images/s, {data['workers']} workers, 176 px crops)."
        )
    return text


DEMO_SEEDS = "benchmarks/results/cpu-2core/demo_seeds.json"


def _demo_headline(job: Results, seeds: Optional[Results]) -> Optional[str]:
    """The recorded main job's top-1, and the lowest and highest over the seeds file's runs (when
    there is one): the figure a user gets with the default seed and how far another seed moves it."""
    if "val/acc1" not in job.get("metrics", {}):
        return None
    text = f"{100 * job['metrics']['val/acc1']:.1f} % after {job['epochs']} epochs"
    if seeds and seeds.get("runs"):
        accs = [r["val_acc1"] for r in seeds["runs"]]
        text += f" ({len(accs)} seeds: {100 * min(accs):.1f} to {100 * max(accs):.1f} %)"
    return text


def demo_seeds(data: Results) -> str:
    """One row per seed of ``benchmarks/demo_seeds.py``: top-1, steps and the command's wall time."""
    rows = [
        [
            str(r["seed"]),
            f"{100 * r['val_acc1']:.1f} %",
            str(r["global_step"]),
            f"{r['wall_s'] / 60:.1f} min",
        ]
        for r in data["runs"]
    ]
    accs = [r["val_acc1"] for r in data["runs"]]
    rows.append(["median", f"{100 * _median(accs):.1f} %", "", ""])
    table = markdown_table(["seed", "validation top-1", "optimizer steps", "wall time of the command"], rows)
    return (
        f"{table}\n\n`{data['command']}` on {data['cpus']} CPU cores, one job per seed; the wall time is the "
        "whole command's (job setup, training, validation) and grows with other load on the machine."
    )


@dataclass(frozen=True)
class Headline:
    what: str
    source: str
    page: str
    value: Callable[[Results], Optional[str]]


def _rate_ratio(numerator: str, denominator: str) -> Callable[[Results], Optional[str]]:
    """A headline value: the ratio of two rates of one results file, when both are there."""
    return lambda d: fmt_ratio(d[numerator] / d[denominator]) if d.get(numerator) and d.get(denominator) else None


HEADLINES = [
    Headline(
        "Demo job (`launch.py`): validation top-1",
        "benchmarks/results/cpu-2core/demo_job.json",
        "docs/training.md",
        lambda d: _demo_headline(d, load(DEMO_SEEDS)),
    ),
    Headline(
        "Training step vs torchvision, every width and setting measured, 2-core CPU",
        "benchmarks/results/cpu-2core/model_throughput_train.json",
        "docs/speed.md",
        _speedups("train"),
    ),
    Headline(
        "Training step vs torchvision, every width and setting measured, H200",
        "benchmarks/results/h200/model_throughput.json",
        "docs/speed.md",
        _speedups("train"),
    ),
    Headline(
        "Inference (batch 256) vs torchvision, every width and setting measured, H200",
        "benchmarks/results/h200/model_throughput.json",
        "docs/speed.md",
        _speedups("infer"),
    ),
    Headline(
        "Latency (batch 1) vs torchvision, every width and setting measured, H200",
        "benchmarks/results/h200/model_throughput.json",
        "docs/speed.md",
        _speedups("latency"),
    ),
    Headline(
        "Training step vs torchvision, `torch.compile` + bf16, every width measured, H200",
        "benchmarks/results/h200/model_throughput_compile.json",
        "docs/speed.md",
        _speedups("train", ["compile"]),
    ),
    Headline(
        "Data loading, our FFCV decode stage vs torchvision ImageFolder, every worker count, 2-core CPU",
        "benchmarks/results/cpu-2core/data_throughput.json",
        "docs/data.md",
        _loader_speedup,
    ),
    Headline(
        "Data loading, our FFCV decode stage vs torchvision ImageFolder, 16-core host of an H200",
        "benchmarks/results/h200/data_throughput.json",
        "docs/data.md",
        _loader_speedup,
    ),
    Headline(
        "Training images/s, `fit` with FFCV vs torchvision's reference loop, H200",
        "benchmarks/results/h200/train_throughput.json",
        "docs/speed.md",
        _rate_ratio("fit_images_per_s", "reference_loop_images_per_s"),
    ),
    Headline(
        "GPU busy share of the captured training step (CUDA graphs), 1.0x, bf16, H200",
        "benchmarks/results/h200/train_throughput.json",
        "docs/speed.md",
        lambda d: f"{100 * d['gpu_busy_share']:.0f} %" if d.get("gpu_busy_share") is not None else None,
    ),
    Headline(
        "Training images/s, `fit` with FFCV vs torchvision's reference loop, 2-core CPU",
        "benchmarks/results/cpu-2core/train_throughput.json",
        "docs/speed.md",
        _rate_ratio("fit_images_per_s", "reference_loop_images_per_s"),
    ),
]


def train_throughput(data: Results) -> str:
    """bench-train's rates, plus the two ratios its goals are stated in."""
    table = key_value_table(
        [
            ("`shufflenet-pl fit`, FFCV datamodule, images/s", "fit_images_per_s", "rate"),
            ("`shufflenet-pl fit`, ImageFolder datamodule, images/s", "fit_imagefolder_images_per_s", "rate"),
            (
                "`fit` on batches already on the device (model-only ceiling), images/s",
                "model_only_images_per_s",
                "rate",
            ),
            ("bare PyTorch loop, same module and batches, images/s", "bare_loop_images_per_s", "rate"),
            ("torchvision's reference training loop, images/s", "reference_loop_images_per_s", "rate"),
            ("share of `fit` (FFCV) waiting between steps", "data_wait_share", "share"),
            ("GPU busy share of the training step (profiled in the bare loop)", "gpu_busy_share", "share"),
        ]
    )(data)
    return table + _extra_rows(
        [
            (
                "`fit` on device batches / bare loop",
                _rate_ratio("model_only_images_per_s", "bare_loop_images_per_s")(data),
            ),
            (
                "`fit` with FFCV / torchvision's reference loop",
                _rate_ratio("fit_images_per_s", "reference_loop_images_per_s")(data),
            ),
        ]
    )


def _extra_rows(rows: Sequence[tuple]) -> str:
    """``(label, value)`` rows appended to a two-column table; rows without a value are left out."""
    return "".join(f"\n| {label} | {value} |" for label, value in rows if value is not None)


PARTIAL_DECODE_LABELS = {
    "ffcv_full_decode": "full decode (FFCV's, what its stock pipeline does)",
    "kernel_full_decode": "full decode through our box kernel (the box is the whole image)",
    "box_decode": "our stage: the crop box alone (rows above skipped, columns cropped, rows below not decoded)",
}


def partial_decode(data: Results) -> str:
    """ms per JPEG of each decode, and its ratio to FFCV's full decode."""
    full = data["ms_per_image"]["ffcv_full_decode"]
    rows = [
        [PARTIAL_DECODE_LABELS.get(name, name), f"{value:.3f}", fmt_ratio(value / full)]
        for name, value in data["ms_per_image"].items()
    ]
    rows.append(["mean share of the image inside a crop box", f"{100 * data['mean_box_area_share']:.0f} %", ""])
    return markdown_table(["decode, one thread", "ms per image", "vs full decode"], rows, "lrr")


def gpu_train_throughput(data: Results, without_graphs: Results) -> str:
    """bench-train on a GPU (CUDA graphs), plus the same step compiled without CUDA graphs: what the graphs add."""

    def share(value: Optional[float]) -> Optional[str]:
        return f"{100 * value:.0f} %" if value is not None else None

    rows = [
        (
            f"{label}: captured step (CUDA graphs) / compiled step without graphs",
            fmt_ratio(data[key] / without_graphs[key]) if data.get(key) and without_graphs.get(key) else None,
        )
        for label, key in (
            ("bare loop", "bare_loop_images_per_s"),
            ("`fit` on device batches", "model_only_images_per_s"),
        )
    ]
    rows += [
        ("`fit` with FFCV / `fit` on device batches", _rate_ratio("fit_images_per_s", "model_only_images_per_s")(data)),
        ("GPU busy share of `fit` with FFCV", share(data.get("fit_gpu_busy_share"))),
        ("GPU busy share of a step compiled without graphs", share(without_graphs.get("gpu_busy_share"))),
    ]
    return train_throughput(data) + _extra_rows(rows)


def beton_check_cost(data: Results) -> str:
    """One line: what the background chunk check adds to our loader's CPU time per image, and its
    images/s with the check on vs off."""
    ratios = data["pair_ratios"]
    own = data["check_thread_cpu_ms_per_image"] / data["check_off_cpu_ms_per_image"]
    return (
        f"Chunk check on vs off: CPU time per image **{100 * (data['check_cpu_per_image_on_vs_off'] - 1):+.1f} %** "
        f"(the check's own CPU: {100 * own:.1f} % of the loader's); images/s on / off "
        f"{data['check_on_vs_off']:.3f} over {data['pairs']} interleaved pairs of {data['epochs_per_run']} epochs "
        f"(median pair {data['check_on_vs_off_median_pair']:.3f}, pairs from {min(ratios):.3f} to "
        f"{max(ratios):.3f}: the machine's other load); {data['images']:,} {data['source']}, {data['setting']}, "
        f"{data['workers']} workers, {data['cpus']} CPUs."
    )


_LOADER_PARTS = ("kernel", "page_read", "preempted", "barrier", "serial", "hand_over")


def loader_profile(data: Results) -> str:
    """Where a loader worker's time goes, per worker count and schedule, then the barrier share
    each schedule would have on larger machines (simulated on the measured image costs)."""
    header = ["workers", "schedule", "images/s", *(p.replace("_", " ") for p in _LOADER_PARTS)]
    rows = [
        [str(r["workers"]), r["schedule"], fmt_rate(r["images_per_s"])]
        + [f"{100 * r['share'][p]:.0f} %" for p in _LOADER_PARTS]
        for r in data["rows"]
    ]
    measured = markdown_table(header, rows, "rlr" + "r" * len(_LOADER_PARTS))
    first = data["rows"][0]
    schedules = list(next(iter(first["simulated_barrier_share"].values())))
    simulated_rows = [
        [n, *(f"{100 * shares[s]:.1f} %" for s in schedules)] for n, shares in first["simulated_barrier_share"].items()
    ]
    simulated = markdown_table(["workers", *schedules], simulated_rows, "r" + "r" * len(schedules))
    ratios = ", ".join(
        f"{fmt_ratio(v)} at {w} worker{'s' if w != '1' else ''}" for w, v in data["largest_first_vs_static"].items()
    )
    return (
        f"Share of the loader's worker-seconds ({data['images']:,} {data['source']} per epoch, {data['res']} px, batch "
        f"{data['batch']}, {data['cpus']} CPUs); largest_first / static images/s: {ratios}.\n\n{measured}\n\n"
        f"Barrier share if every image cost its measured CPU time, on the same batches:\n\n{simulated}"
    )


def data_throughput_scaling(data: Results) -> str:
    """The key-value rows of a data-throughput run, then its scaling with the worker count."""
    text = key_value_table(DATA_THROUGHPUT_ROWS)(data)
    scaling = data.get("scaling")
    if not scaling:
        return text
    rows = [
        [
            w,
            fmt_rate(r["ours_images_per_s"]),
            f"{r['ours_efficiency']:.2f}",
            fmt_rate(r["ffcv_images_per_s"]),
            f"{r['ffcv_efficiency']:.2f}",
            fmt_rate(r["decode_images_per_s"]) if r["decode_images_per_s"] else "n/a",
            f"{r['decode_efficiency']:.2f}" if r["decode_efficiency"] else "n/a",
            fmt_ratio(r["ours_vs_decode"]) if r["ours_vs_decode"] else "n/a",
        ]
        for w, r in scaling.items()
    ]
    header = ["workers", "ours img/s", "efficiency", "FFCV img/s", "efficiency", "decode img/s", "efficiency"]
    table = markdown_table([*header, "ours / decode"], rows, "rrrrrrrr")
    return f"{text}\n\nBy worker count (efficiency: rate(n) / (n x rate(1))):\n\n{table}"


def checkpoint_save(data: Results) -> str:
    """Per width: checkpoint size, save time and its share of training at the default interval."""
    minutes = data["default_interval_s"] / 60
    rows = [
        [
            name.replace("shufflenet_v2_x", "").replace("_", ".") + "x",
            f"{m['checkpoint_bytes'] / 2**20:.1f}",
            f"{m['save_seconds_median']:.2f}",
            f"{100 * m['share_at_default_interval']:.2f} %",
        ]
        for name, m in data["models"].items()
    ]
    return markdown_table(["width", "MiB", "save, s", f"share of training, every {minutes:g} min"], rows, "rrrr")


def headline_table() -> str:
    rows = []
    for h in HEADLINES:
        data = load(h.source)
        value = h.value(data) if data is not None else None
        where = f"[page]({{link:{h.page}}})"
        if data is not None:
            where += f" · [file]({{link:{h.source}}})"
        rows.append([h.what, value or "not measured yet", where])
    return markdown_table(["result", "value", "from"], rows, "lrl")


# --------------------------------------------------------------------------- the table index

CPU = "benchmarks/results/cpu-2core"
H200 = "benchmarks/results/h200"

DATA_THROUGHPUT_ROWS = [
    ("torchvision ImageFolder + DataLoader, images/s", "torchvision_images_per_s", "rate"),
    ("FFCV loader as shipped by ffcv, images/s", "ffcv_images_per_s", "rate"),
    ("our FFCV datamodule, images/s", "ours_images_per_s", "rate"),
    ("JPEG decode alone (the ceiling), images/s", "decode_ceiling_images_per_s", "rate"),
    ("ours / decode ceiling", "ours_vs_ceiling", "ratio"),
    ("ours / FFCV as shipped", "ours_vs_ffcv", "ratio"),
    ("ours / torchvision", "ours_vs_torchvision", "ratio"),
    ("setting of the rows above (stored images)", "setting", "text"),
    ("CPU cores", "cpus", "text"),
    ("loader workers", "workers", "text"),
    ("batch handed over as", "layout", "text"),
    ("pipeline warm-up of a first start (JIT), s", "startup_first_s", "text1"),
    ("pipeline warm-up of a second start (JIT cache), s", "startup_second_s", "text1"),
]

TABLES = [
    Table("headline", (), headline_table, ""),
    Table(
        "cpu-model-throughput",
        (f"{CPU}/model_throughput_train.json",),
        speedup_grid,
        "shufflenet-pl bench --settings fp32 channels_last --modes train",
    ),
    Table(
        "h200-model-throughput",
        (f"{H200}/model_throughput.json",),
        lambda d: speedup_grid(d, cells=False),
        "shufflenet-pl bench --device cuda --batch-size 256 --settings fp32 channels_last bf16",
    ),
    Table(
        "h200-model-throughput-compile",
        (f"{H200}/model_throughput_compile.json",),
        speedup_grid,
        "shufflenet-pl bench --device cuda --batch-size 256 --widths 1.0 --settings compile",
    ),
    Table(
        "h200-compile-formulations",
        (f"{H200}/compile_formulations.json",),
        compile_formulations,
        "python benchmarks/compile_formulations.py --device cuda",
    ),
    Table("h200-guidelines", (f"{H200}/guidelines.json",), guidelines, "shufflenet-pl guidelines --device cuda"),
    Table(
        "cpu-data-throughput",
        (f"{CPU}/data_throughput.json",),
        key_value_table(DATA_THROUGHPUT_ROWS),
        "python benchmarks/data_throughput.py --images 400 --settings jpg:320:90 raw:320 --workers 1 2 --startup "
        "--json benchmarks/results/cpu-2core/data_throughput.json",
    ),
    Table(
        "h200-data-throughput",
        (f"{H200}/data_throughput.json",),
        key_value_table(DATA_THROUGHPUT_ROWS),
        "python benchmarks/data_throughput.py --images 1500 --settings jpg:320:90 --workers 8 --epochs 1 "
        "--json benchmarks/results/h200/data_throughput.json",
    ),
    Table(
        "cpu-beton-check-cost",
        (f"{CPU}/beton_check_cost.json",),
        beton_check_cost,
        "python benchmarks/data_throughput.py --check-cost --images 1000 --settings jpg:320:90 --epochs 6 "
        "--check-pairs 10 --json benchmarks/results/cpu-2core/beton_check_cost.json",
    ),
    Table(
        "cpu-data-throughput-photos",
        (f"{CPU}/data_throughput_photos.json",),
        data_throughput_scaling,
        "python benchmarks/data_throughput.py --source PHOTOS/train --settings jpg:320:90 --workers 1 2 --epochs 3 "
        "--json benchmarks/results/cpu-2core/data_throughput_photos.json",
    ),
    Table(
        "cpu-checkpoint-save",
        (f"{CPU}/checkpoint_save.json",),
        checkpoint_save,
        "python -m benchmarks.checkpoint_save --output benchmarks/results/cpu-2core/checkpoint_save.json",
    ),
    Table(
        "cpu-loader-profile",
        (f"{CPU}/loader_profile.json",),
        loader_profile,
        "python benchmarks/loader_profile.py /tmp/shufflenet-pl-bench/source-PHOTOS_train/jpg_max_320_q90.beton "
        "--workers 1 2 --epochs 3 --source 'photographs' --json benchmarks/results/cpu-2core/loader_profile.json",
    ),
    Table(
        "cpu-partial-decode",
        (f"{CPU}/partial_decode.json",),
        partial_decode,
        "python benchmarks/partial_decode.py /tmp/shufflenet-pl-bench/jpg_max_320_q90.beton "
        "--json benchmarks/results/cpu-2core/partial_decode.json",
    ),
    Table(
        "cpu-train-throughput",
        (f"{CPU}/train_throughput.json",),
        train_throughput,
        "shufflenet-pl bench-train --device cpu",
    ),
    Table(
        "h200-train-throughput",
        (f"{H200}/train_throughput.json", f"{H200}/train_throughput_step_default.json"),
        gpu_train_throughput,
        "benchmarks/gpu_check.sh",
    ),
    Table(
        "demo-job",
        (f"{CPU}/demo_job.json",),
        key_value_table(
            [
                ("seed", "seed", "text"),
                ("epochs", "epochs", "text"),
                ("optimizer steps", "global_step", "text"),
                ("validation top-1", "val_acc1_percent", "text"),
                ("validation top-5", "val_acc5_percent", "text"),
            ]
        ),
        "python launch.py && python -m benchmarks.render_docs --record-demo jobs/<job folder>",
    ),
    Table(
        "cpu-convert-throughput",
        (CONVERT,),
        convert_throughput,
        "python benchmarks/convert_throughput.py --source DIR --json " + CONVERT,
    ),
    Table(
        "demo-seeds",
        (DEMO_SEEDS,),
        demo_seeds,
        "python benchmarks/demo_seeds.py --seeds 0 1 2 --json benchmarks/results/cpu-2core/demo_seeds.json",
    ),
]


def render_table(table: Table, page: Path) -> str:
    datas = [load(s) for s in table.sources]
    if any(d is None for d in datas):
        missing = ", ".join(f"`{s}`" for s, d in zip(table.sources, datas) if d is None)
        return f"_Not measured yet: {missing} does not exist. Run `{table.how_to_measure}` to write it._"
    body = table.render(*datas)
    if table.sources:
        body += "\n\n" + source_line(datas[0], table.sources[0])
    return re.sub(r"\{link:([^}]+)\}", lambda m: link(m.group(1), page), body)


# --------------------------------------------------------------------------- pages

MARKER = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def page_files() -> List[Path]:
    files: List[Path] = []
    for entry in PAGES:
        path = ROOT / entry
        if path.is_dir():
            files += sorted(path.rglob("*.md"))
        elif path.exists():
            files.append(path)
    return files


def link(target: str, page: Path) -> str:
    """A link from ``page`` to ``target`` (a path from the repository root) that works where it is read.

    The README is read on the repository's page, so it links to paths in the tree. The docs are
    read as the built site, which serves ``benchmarks/results/`` as ``results/`` (``docs/hooks.py``).
    """
    if page.relative_to(ROOT).parts[0] != "docs":
        return target
    if target.startswith("docs/"):
        return target[len("docs/") :]
    if target.startswith(str(RESULTS) + "/"):
        return "results/" + target[len(str(RESULTS)) + 1 :]
    raise ValueError(f"no link from the docs site to {target}")


def render_page(text: str, page: Path) -> str:
    tables = {t.name: t for t in TABLES}

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in tables:
            raise SystemExit(f"{page}: unknown generated table {name!r}; known: {', '.join(tables)}")
        return f"{match.group(1)}{render_table(tables[name], page)}\n{match.group(4)}"

    return MARKER.sub(replace, text)


def _job_seed(job_dir: Path) -> Any:
    """``seed_everything`` of a job folder's ``config.yaml`` (``None`` without one)."""
    config = job_dir / "config.yaml"
    if not config.is_file():
        return None
    match = re.search(r"^seed_everything: *(\S+)", config.read_text(), re.M)
    return json.loads(match.group(1)) if match else None


def record_demo(job_dir: Path, out: Path) -> None:
    """Write the headline figures of a finished demo job (its ``result.json``) as a results file."""
    result_file = job_dir / "result.json"
    if not result_file.exists():
        raise SystemExit(f"{result_file} not found: pass the folder of a finished job (launch.py prints it)")
    result = json.loads(result_file.read_text())
    metrics = result.get("metrics", {})
    record = {
        "epochs": result.get("epoch"),  # the trainer's epoch counter at the end: epochs completed
        "global_step": result.get("global_step"),
        "world_size": result.get("world_size"),
        "metrics": {k: v for k, v in metrics.items() if k.startswith("val/")},
        "val_acc1_percent": f"{100 * metrics['val/acc1']:.1f} %" if "val/acc1" in metrics else None,
        "val_acc5_percent": f"{100 * metrics['val/acc5']:.1f} %" if "val/acc5" in metrics else None,
        "seed": _job_seed(job_dir),
        "command": "python launch.py",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.render_docs",
        description="Rewrite the generated tables in README.md and docs/*.md from benchmarks/results/*.json.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and name the pages whose tables are out of date"
    )
    parser.add_argument(
        "--record-demo",
        type=Path,
        metavar="JOB_DIR",
        help="first write benchmarks/results/cpu-2core/demo_job.json from a finished demo job",
    )
    args = parser.parse_args(argv)
    if args.record_demo:
        record_demo(args.record_demo, ROOT / CPU / "demo_job.json")
    stale = []
    for page in page_files():
        text = page.read_text()
        new = render_page(text, page)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print("out of date (run `python -m benchmarks.render_docs`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    for page in stale:
        print(f"rendered {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
