"""The paper's guideline experiments (Ma et al., ECCV 2018, section 2, Tables 1-4), timed on this device.

Each table compares micro-networks of (nearly) equal FLOPs, stacked 10 times on 56x56 inputs, to show
that FLOPs do not predict speed:

* Table 1, G1 "equal channel width minimizes memory access cost": blocks of two 1x1 convolutions
  ``c1 -> c2 -> c1`` with ``c1:c2`` = 1:1, 1:2, 1:6, 1:12 at the same FLOPs (``c1 * c2`` fixed).
  Widths are the integers closest to equal FLOPs, which differs from the paper's printed widths by one
  or two channels in a few cells (:func:`g1_channels`, :func:`g2_channels`).
* Table 2, G2 "excessive group convolution increases MAC": 1x1 group convolutions with ``g`` = 1, 2, 4, 8
  groups; the width grows as ``c * sqrt(g)`` to keep the FLOPs.
* Table 3, G3 "network fragmentation reduces the degree of parallelism": 1, 2 or 4 1x1 convolutions per
  block, in series (each ``c / sqrt(k)`` wide) or in parallel (``k`` branches of ``c / k`` outputs,
  concatenated), at the FLOPs of the 1-fragment block (the paper's appendix, Fig. 1).
* Table 4, G4 "element-wise operations are non-negligible": the ResNet bottleneck unit
  (1x1 ``c -> c/4``, 3x3, 1x1 ``c/4 -> c``) with and without its ReLUs and its shortcut addition.

Columns are the paper's: FLOPs x1, x2, x4 for Tables 1-2, the width ``c`` for Tables 3-4, with the
channel numbers of its GPU columns on a GPU (batch 8) and of its ARM/CPU columns on a CPU (batch 1);
``--preset`` overrides. All rows of a column are timed in alternation (medians of ``--repeats``), and
each table ends with whether its guideline holds here. Writes ``guidelines.json`` and
``guidelines.png`` (speed relative to each table's first row) into ``--out-dir``.
"""

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a file (python benchmarks/guidelines.py): find the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor, nn

from benchmarks._timing import (
    check_minimums,
    environment,
    format_table,
    median,
    resolve_device,
    save_figure,
    synchronizer,
    time_interleaved,
    write_json,
)
from shufflenet_pl.analysis.report import count_multiply_adds

__all__ = [
    "PRESETS",
    "Bottleneck",
    "NetSpec",
    "ParallelFragments",
    "TableSpec",
    "build_tables",
    "g1_channels",
    "g2_channels",
    "series_channels",
    "main",
    "run_tables",
]


# The paper's channel numbers: GPU columns (GTX 1080Ti, batch 8) and ARM/CPU columns (batch 1).
PRESETS: Dict[str, Dict[str, Any]] = {
    "gpu": {"table1_c": 128, "table2_c": 128, "table3_c": (128, 256, 512), "table4_c": (32, 64, 128), "batch_size": 8},
    "cpu": {"table1_c": 32, "table2_c": 64, "table3_c": (64, 128, 256), "table4_c": (32, 64, 128), "batch_size": 1},
}
FLOP_SCALES = (1, 2, 4)


def _conv1x1(inp: int, oup: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, kernel_size=1, groups=groups, bias=False)


class ParallelFragments(nn.Module):
    """``fragments`` 1x1 convolutions side by side, each reading all ``channels`` inputs and writing
    ``channels / fragments`` outputs, concatenated (Table 3's parallel structures)."""

    def __init__(self, channels: int, fragments: int) -> None:
        super().__init__()
        if channels % fragments:
            raise ValueError(f"channels ({channels}) must be divisible by fragments ({fragments})")
        self.branches = nn.ModuleList(_conv1x1(channels, channels // fragments) for _ in range(fragments))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Bottleneck(nn.Module):
    """ResNet's bottleneck unit without BatchNorm (Table 4): 1x1 ``c -> c/4``, 3x3 ``c/4 -> c/4``,
    1x1 ``c/4 -> c``, with the ReLUs and the shortcut addition switchable."""

    def __init__(self, channels: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"channels must be divisible by 4, got {channels}")
        inner = channels // 4
        self.conv1 = _conv1x1(channels, inner)
        self.conv2 = nn.Conv2d(inner, inner, kernel_size=3, padding=1, bias=False)
        self.conv3 = _conv1x1(inner, channels)
        self.relu = relu
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.relu:
            out = torch.relu_(out)
        out = self.conv2(out)
        if self.relu:
            out = torch.relu_(out)
        out = self.conv3(out)
        if self.shortcut:
            out = out + x
        if self.relu:
            out = torch.relu_(out)
        return out


def _nearest(candidates: Sequence[int], flops: Callable[[int], float], target: float) -> int:
    return min((c for c in candidates if c > 0), key=lambda c: abs(flops(c) - target))


def g1_channels(c: float, ratio: int) -> Tuple[int, int]:
    """``(c1, c2)`` with ``c2 = ratio * c1`` and ``c1 * c2`` as close to ``c * c`` as integers allow.

    For ``c = 128`` this gives (128, 128), (91, 182), (52, 312), (37, 444); the paper's Table 1 prints
    (90, 180) and (36, 432), which are 1 % and 5 % short of equal FLOPs.
    """
    x = c / math.sqrt(ratio)
    c1 = _nearest([math.floor(x), math.ceil(x)], lambda n: ratio * n * n, c * c)
    return c1, ratio * c1


def g2_channels(c: float, groups: int) -> int:
    """Width of a ``groups``-group 1x1 convolution whose FLOPs are closest to an ungrouped ``c``-wide
    one's, a multiple of ``groups``. For ``c = 128``: 128, 182, 256, 360 (the paper prints 180 for g=2)."""
    x = c * math.sqrt(groups) / groups
    return groups * _nearest([math.floor(x), math.ceil(x)], lambda n: (groups * n) ** 2 / groups, c * c)


def series_channels(c: float, fragments: int) -> int:
    """Width of each of ``fragments`` 1x1 convolutions in series with the FLOPs of one ``c``-wide one."""
    x = c / math.sqrt(fragments)
    return _nearest([math.floor(x), math.ceil(x)], lambda n: fragments * n * n, c * c)


def _scaled(c: int, flop_scale: int) -> float:
    # The x2 and x4 columns have 2 and 4 times the FLOPs: widths grow by sqrt(2) and 2.
    return c * math.sqrt(flop_scale)


@dataclass
class NetSpec:
    """One cell of a table: a micro-network and its input width."""

    build: Callable[[], nn.Module]
    in_channels: int
    channels: str  # how it is shaped, e.g. "(90, 180)"


@dataclass
class TableSpec:
    """One of the paper's tables: rows (structures) x columns (FLOPs scale or width)."""

    number: int
    guideline: str
    claim: str
    row_header: str
    columns: List[str]
    rows: List[Tuple[str, List[NetSpec]]]
    channels_header: str = ""
    verdict: Callable[[List[List[float]]], Tuple[bool, str]] = field(default=lambda speeds: (True, ""))


def _stack(blocks: int, make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(*[make() for _ in range(blocks)])


# Timings of a shared machine wobble by a few per cent: a row within this share of another counts as a tie.
TIE = 0.03


def _fastest_row_verdict(name: str, row_index: int = 0) -> Callable[[List[List[float]]], Tuple[bool, str]]:
    def verdict(speeds: List[List[float]]) -> Tuple[bool, str]:
        columns = list(zip(*speeds))
        wins = sum(column[row_index] >= (1 - TIE) * max(column) for column in columns)
        return wins == len(
            columns
        ), f"{name} is the fastest (ties within {TIE:.0%} count) in {wins} of {len(columns)} columns"

    return verdict


def _monotonic_verdict(name: str) -> Callable[[List[List[float]]], Tuple[bool, str]]:
    def verdict(speeds: List[List[float]]) -> Tuple[bool, str]:
        columns = list(zip(*speeds))
        falling = sum(all(b <= (1 + TIE) * a for a, b in zip(column, column[1:])) for column in columns)
        return falling == len(
            columns
        ), f"speed falls (or ties within {TIE:.0%}) with every step of {name} in {falling} of {len(columns)} columns"

    return verdict


def _g4_verdict(speeds: List[List[float]]) -> Tuple[bool, str]:
    # Rows: ReLU + shortcut, ReLU only, shortcut only, neither. G4: dropping element-wise ops speeds up.
    columns = list(zip(*speeds))
    held = sum(column[3] >= (1 - TIE) * max(column) and column[0] <= (1 + TIE) * min(column) for column in columns)
    return held == len(columns), (
        f"without ReLU and shortcut the fastest and with both the slowest (ties within {TIE:.0%} count) "
        f"in {held} of {len(columns)} columns"
    )


def build_tables(preset: Dict[str, Any], blocks: int = 10, tables: Sequence[int] = (1, 2, 3, 4)) -> List[TableSpec]:
    """The micro-networks of the requested tables with the preset's channel numbers."""
    result: List[TableSpec] = []
    scales = [f"x{s}" for s in FLOP_SCALES]
    if 1 in tables:
        rows = []
        for ratio in (1, 2, 6, 12):
            cells = []
            for scale in FLOP_SCALES:
                c1, c2 = g1_channels(_scaled(preset["table1_c"], scale), ratio)

                def make(c1=c1, c2=c2):
                    return nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1))

                cells.append(NetSpec(_stack(blocks, make), c1, f"({c1}, {c2})"))
            rows.append((f"1:{ratio}", cells))
        result.append(
            TableSpec(
                1,
                "G1",
                "equal channel width minimizes memory access cost",
                "c1:c2",
                scales,
                rows,
                "(c1, c2) for x1",
                _fastest_row_verdict("1:1"),
            )
        )
    if 2 in tables:
        rows = []
        for groups in (1, 2, 4, 8):
            cells = []
            for scale in FLOP_SCALES:
                c = g2_channels(_scaled(preset["table2_c"], scale), groups)
                cells.append(NetSpec(_stack(blocks, lambda c=c, g=groups: _conv1x1(c, c, g)), c, str(c)))
            rows.append((f"g={groups}", cells))
        result.append(
            TableSpec(
                2,
                "G2",
                "excessive group convolution increases memory access cost",
                "groups",
                scales,
                rows,
                "c for x1",
                _monotonic_verdict("g"),
            )
        )
    if 3 in tables:
        widths = preset["table3_c"]
        structures = [
            ("1-fragment", 1, False),
            ("2-fragment-series", 2, False),
            ("4-fragment-series", 4, False),
            ("2-fragment-parallel", 2, True),
            ("4-fragment-parallel", 4, True),
        ]
        rows = []
        for label, fragments, parallel in structures:
            cells = []
            for c in widths:
                if parallel:
                    width = c - c % fragments

                    def make(w=width, k=fragments):
                        return ParallelFragments(w, k)

                    shape = f"{fragments} x ({width} -> {width // fragments})"
                else:
                    width = series_channels(c, fragments)

                    def make(w=width, k=fragments):
                        return nn.Sequential(*[_conv1x1(w, w) for _ in range(k)])

                    shape = f"{fragments} x {width}" if fragments > 1 else str(width)
                cells.append(NetSpec(_stack(blocks, make), width, shape))
            rows.append((label, cells))
        result.append(
            TableSpec(
                3,
                "G3",
                "network fragmentation reduces the degree of parallelism",
                "structure",
                [f"c={c}" for c in widths],
                rows,
                "channels for the first column",
                _fastest_row_verdict("1-fragment"),
            )
        )
    if 4 in tables:
        widths = preset["table4_c"]
        rows = []
        for relu, shortcut in ((True, True), (True, False), (False, True), (False, False)):
            cells = [
                NetSpec(_stack(blocks, lambda c=c, r=relu, s=shortcut: Bottleneck(c, r, s)), c, str(c)) for c in widths
            ]
            rows.append((f"ReLU {'yes' if relu else 'no'}, shortcut {'yes' if shortcut else 'no'}", cells))
        result.append(
            TableSpec(
                4,
                "G4",
                "element-wise operations are non-negligible",
                "bottleneck unit",
                [f"c={c}" for c in widths],
                rows,
                "",
                _g4_verdict,
            )
        )
    return result


def run_tables(
    tables: Sequence[TableSpec],
    device: torch.device,
    batch_size: int,
    image_size: int,
    repeats: int,
    warmup: int,
    channels_last: bool = False,
    min_sample_seconds: float = 0.02,
    clock: str = "wall",
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Time every cell (inference, eval mode); the rows of one column in alternation.

    Returns:
        Per table: its rows with, per column, the batches/s (median), the samples and the FLOPs.
    """
    from tqdm.auto import tqdm

    synchronize = synchronizer(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    reports = []
    bar = tqdm(total=sum(len(t.columns) for t in tables), disable=not progress, unit="column", file=sys.stderr)
    try:
        for table in tables:
            cells: Dict[Tuple[int, int], Dict[str, Any]] = {}
            for column_index, column in enumerate(table.columns):
                bar.set_description(f"Table {table.number} {column}")
                candidates = {}
                for row_index, (label, specs) in enumerate(table.rows):
                    spec = specs[column_index]
                    model = spec.build().eval()
                    multiply_adds = count_multiply_adds(model, image_size, in_channels=spec.in_channels)
                    model = model.to(device=device, memory_format=memory_format)
                    images = torch.randn(batch_size, spec.in_channels, image_size, image_size, generator=generator)
                    images = images.to(device=device, memory_format=memory_format)
                    candidates[label] = _inference(model, images)
                    cells[(row_index, column_index)] = {"channels": spec.channels, "multiply_adds": multiply_adds}
                samples = time_interleaved(candidates, repeats, warmup, synchronize, min_sample_seconds, clock)
                for row_index, (label, _) in enumerate(table.rows):
                    cells[(row_index, column_index)].update(
                        seconds=samples[label], batches_per_s=1.0 / median(samples[label])
                    )
                bar.update()
            speeds = [
                [cells[(r, c)]["batches_per_s"] for c in range(len(table.columns))] for r in range(len(table.rows))
            ]
            holds, detail = table.verdict(speeds)
            reports.append(
                {
                    "table": table.number,
                    "guideline": table.guideline,
                    "claim": table.claim,
                    "row_header": table.row_header,
                    "channels_header": table.channels_header,
                    "columns": table.columns,
                    "rows": [
                        {"label": label, "cells": [cells[(r, c)] for c in range(len(table.columns))]}
                        for r, (label, _) in enumerate(table.rows)
                    ],
                    "holds": holds,
                    "verdict": detail,
                }
            )
    finally:
        bar.close()
    return reports


def _inference(model: nn.Module, images: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(images)

    return run


def format_report(report: Dict[str, Any], batch_size: int) -> str:
    """One table in the paper's layout, its FLOPs and its verdict."""
    unit = "images/s" if batch_size == 1 else f"batches/s (batch {batch_size})"
    header = [report["row_header"]]
    if report["channels_header"]:
        header.append(report["channels_header"])
    header += [f"{column} ({unit})" for column in report["columns"]]
    rows = []
    for row in report["rows"]:
        cells = [row["label"]]
        if report["channels_header"]:
            cells.append(row["cells"][0]["channels"])
        cells += [f"{cell['batches_per_s']:,.1f}" for cell in row["cells"]]
        rows.append(cells)
    flops = []
    for index, column in enumerate(report["columns"]):
        values = [row["cells"][index]["multiply_adds"] / 1e6 for row in report["rows"]]
        flops.append(
            f"{column} {min(values):,.0f}-{max(values):,.0f}"
            if max(values) - min(values) >= 0.5
            else f"{column} {values[0]:,.0f}"
        )
    verdict = "holds" if report["holds"] else "does NOT hold"
    return "\n".join(
        [
            f"Table {report['table']} ({report['guideline']}: {report['claim']})",
            format_table(header, rows),
            f"MFLOPs (multiply-adds per image): {'; '.join(flops)}",
            f"{report['guideline']} {verdict} here: {report['verdict']}.",
        ]
    )


def plot_reports(reports: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    """One panel per table: each row's speed relative to the first row, per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(reports), 2)
    lines = math.ceil(len(reports) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.2 * columns, 4.2 * lines), squeeze=False)
    figure.subplots_adjust(hspace=0.55)
    for axis, report in zip(axes.flat, reports):
        rows = report["rows"]
        bar_width = 0.8 / len(rows)
        for row_index, row in enumerate(rows):
            relative = [
                cell["batches_per_s"] / base["batches_per_s"] for cell, base in zip(row["cells"], rows[0]["cells"])
            ]
            positions = [i + (row_index - (len(rows) - 1) / 2) * bar_width for i in range(len(relative))]
            axis.bar(positions, relative, bar_width, label=row["label"])
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(report["columns"])), report["columns"])
        axis.set_ylabel(f"speed / {rows[0]['label']}")
        axis.set_title(
            f"Table {report['table']}, {report['guideline']}: {'holds' if report['holds'] else 'does not hold'}",
            fontsize="medium",
        )
        axis.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    for axis in list(axes.flat)[len(reports) :]:
        axis.axis("off")
    figure.suptitle(title, fontsize="medium")
    save_figure(figure, path)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Time the paper's guideline micro-networks (Tables 1-4: G1 equal channel widths, G2 group "
        "convolutions, G3 fragmentation, G4 element-wise operations) on this device and print the tables "
        "with a verdict per guideline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  shufflenet-pl guidelines                        # all four tables on the GPU if there is one\n"
        "  shufflenet-pl guidelines --tables 1 4 --device cpu --repeats 20\n"
        "  shufflenet-pl guidelines --preset gpu --batch-size 8 --channels-last",
    )
    parser.add_argument(
        "--tables", nargs="+", type=int, default=[1, 2, 3, 4], choices=[1, 2, 3, 4], help="which tables (default: all)"
    )
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if visible, else CPU), cpu, cuda, cuda:N")
    parser.add_argument(
        "--preset",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="the paper's channel numbers: its GPU columns or its ARM/CPU columns (default: by device)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per forward (default: the preset's: 8 GPU, 1 CPU)"
    )
    parser.add_argument("--image-size", type=int, default=56, help="input side (default: 56, as in the paper)")
    parser.add_argument(
        "--blocks", type=int, default=10, help="blocks stacked per network (default: 10, as in the paper)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per network (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per network first (default: 2)")
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=20.0,
        help="a sample repeats a faster forward until it lasts this long (default: 20)",
    )
    parser.add_argument("--channels-last", action="store_true", help="run the networks in channels_last")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall: elapsed time (default); process: this process's CPU time, steadier on a CPU shared "
        "with other jobs when used with --threads 1",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs/benchmarks"),
        help="where the JSON and PNG go (default: runs/benchmarks)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = "shufflenet-pl guidelines") -> None:
    """Command-line entry point (``shufflenet-pl guidelines`` or ``python benchmarks/guidelines.py``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        check_minimums(
            (
                ("--repeats", args.repeats, 1),
                ("--warmup", args.warmup, 0),
                ("--image-size", args.image_size, 1),
                ("--blocks", args.blocks, 1),
                ("--batch-size", args.batch_size or 1, 1),
                ("--threads", args.threads or 1, 1),
                ("--min-sample-ms", args.min_sample_ms, 0),
            )
        )
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    preset_name = args.preset if args.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    preset = PRESETS[preset_name]
    batch_size = args.batch_size or preset["batch_size"]
    tables = build_tables(preset, blocks=args.blocks, tables=sorted(set(args.tables)))
    meta = environment(device)
    layout = "channels_last" if args.channels_last else "NCHW"
    print(
        f"# guideline micro-networks, {meta['device']}; {preset_name} preset, batch {batch_size}, "
        f"{args.image_size}x{args.image_size}, "
        f"{args.blocks} blocks, {layout}, float32, inference; median of {args.repeats} alternating calls "
        f"({args.clock} clock)",
        flush=True,
    )
    reports = run_tables(
        tables,
        device,
        batch_size,
        args.image_size,
        args.repeats,
        args.warmup,
        args.channels_last,
        args.min_sample_ms / 1000,
        args.clock,
        progress=not args.no_progress,
    )
    for report in reports:
        print()
        print(format_report(report, batch_size))
    json_path, png_path = args.out_dir / "guidelines.json", args.out_dir / "guidelines.png"
    write_json(
        json_path,
        {
            "environment": meta,
            "preset": preset_name,
            "batch_size": batch_size,
            "image_size": args.image_size,
            "blocks": args.blocks,
            "channels_last": args.channels_last,
            "repeats": args.repeats,
            "clock": args.clock,
            "tables": reports,
        },
    )
    plot_reports(reports, png_path, f"{meta['device']}; batch {batch_size}, {args.image_size} px, {layout}")
    print(f"\nwrote {json_path}\nwrote {png_path}")


if __name__ == "__main__":
    main(prog="python benchmarks/guidelines.py")
