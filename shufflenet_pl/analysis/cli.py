"""``shufflenet-pl analyze reuse|model``: the command-line side of :mod:`shufflenet_pl.analysis`."""

import argparse
import csv
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..files import atomic_write, write_text
from ..models import build_model, list_models, load_state_dict_file
from .report import build_reports, format_report, resolve_model_name
from .reuse import REUSE_RATIO, ReuseTrace, distance_profile, empirical_reuse, format_matrix, reuse_formula, trace_reuse

__all__ = ["analyze_main", "load_model_for_analysis"]

_EXAMPLES = """examples:
  shufflenet-pl analyze reuse                                   # Fig. 4(b) traced from the 1.0x code
  shufflenet-pl analyze reuse --weights runs/demo/shufflenet-pl/<run id>/checkpoints/last.ckpt
  shufflenet-pl analyze reuse --weights shufflenetv2_x1-5666bf0f80.pth --out-dir runs/analysis/x1
  shufflenet-pl analyze model                                   # Table 5 + params, FLOPs, memory, speed
  shufflenet-pl analyze model --device cuda --batch-size 256 --precision bf16 --throughput both
"""


def load_model_for_analysis(
    weights: Path, model_name: Optional[str] = None, num_classes: Optional[int] = None
) -> Tuple[nn.Module, str]:
    """Build the model that ``weights`` (a state-dict file or Lightning checkpoint) fits and load it
    strictly. The width and class count are read from the file unless given.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the file is not a state dict, or no registered width fits it.
    """
    state_dict = load_state_dict_file(weights)
    if num_classes is None:
        if "fc.weight" not in state_dict:
            raise ValueError(f"{weights} has no fc.weight; is it a ShuffleNet V2 state dict? (pass --num-classes)")
        num_classes = int(state_dict["fc.weight"].shape[0])
    candidates = [model_name] if model_name else list_models()
    errors = []
    for name in candidates:
        model = build_model(name, num_classes=num_classes)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            errors.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        return model.eval(), name
    hint = "" if model_name else f" (tried {', '.join(candidates)})"
    raise ValueError(
        f"{weights} does not fit {model_name or 'any registered width'} with {num_classes} classes{hint}: {errors[0]}"
    )


def _write_csv(path: Path, matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], fmt: str) -> None:
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source \\ target", *col_labels])
        for label, row in zip(row_labels, matrix.tolist()):
            writer.writerow([label, *["" if isinstance(v, float) and np.isnan(v) else fmt.format(v) for v in row]])


def _stage_summary(trace: ReuseTrace, counts: np.ndarray, formula: np.ndarray) -> List[str]:
    """Per stage: traced count and r^j·c by distance j, and whether every pair at that distance agrees."""
    lines = []
    stages: Dict[str, List[int]] = {}
    for index, unit in enumerate(trace.units):
        stages.setdefault(unit.stage, []).append(index)
    for stage, members in stages.items():
        width = trace.units[members[0]].out_channels
        traced, paper = [], []
        for j in range(len(members)):
            values = {int(counts[s, s + j]) for s in members[: len(members) - j]}
            traced.append("/".join(str(v) for v in sorted(values)))
            paper.append(f"{formula[members[0], members[0] + j]:g}")
        lines.append(f"  {stage} (c = {width}), j = 0..{len(members) - 1}:")
        lines.append(f"    traced  {'  '.join(t.rjust(6) for t in traced)}")
        lines.append(f"    r^j*c   {'  '.join(p.rjust(6) for p in paper)}")
    return lines


def _reuse(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from .plot import save_heatmap

    try:
        if args.weights is not None:
            model, name = load_model_for_analysis(
                args.weights, args.model and resolve_model_name(args.model), args.num_classes
            )
        else:
            name = resolve_model_name(args.model or "shufflenet_v2_x1_0")
            model = build_model(name, num_classes=args.num_classes or 1000).eval()
        trace = trace_reuse(model, image_size=args.image_size)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = trace.labels
    counts = trace.count_matrix()
    formula = reuse_formula(trace)
    within = formula > 0
    agrees_ceil = bool((counts == np.ceil(formula)).all())

    print(f"{name}: channels directly connected from block s (rows) to block l (columns), traced through the forward")
    print("(how many of block l's output channels are block s's outputs passed on unchanged; '.' = none)")
    print(format_matrix(counts, labels, labels))
    print()
    print(f"paper, Fig. 4(b): r^j*c for blocks j apart, r = {REUSE_RATIO}, c = the stage's width")
    print("\n".join(_stage_summary(trace, counts, formula)))
    print(
        f"traced == ceil(r^j*c) for all {int(within.sum())} same-stage pairs and 0 across stages: {agrees_ceil}; "
        f"max |traced - r^j*c| = {np.abs(counts - formula).max():g} channel(s)"
    )
    print("cross-checked against each stage's own forward (run with no unit hooked, so whatever it fuses runs):")
    print("the same channels reach every block's first 1x1 conv and every stage output")
    print("(a down-sampling unit convolves its whole input, so no channel crosses a stage boundary unchanged;")
    print(" after j units block s's surviving channels sit at the multiples of 2^j, ceil(c/2^j) of them)")

    stem = f"reuse_traced_{name}"
    normalised = counts / np.diag(counts)[:, None]
    written = [
        save_heatmap(
            normalised,
            out_dir / f"{stem}.png",
            labels,
            labels,
            f"{name}: channels directly connected, block s -> block l (traced)\nnormalised by the stage "
            "width c; numbers are channel counts",
            "share of block s's channels reaching block l",
            annotations=counts,
        )
    ]
    _write_csv(out_dir / f"{stem}.csv", counts, labels, labels, "{:d}")
    written.append(out_dir / f"{stem}.csv")

    if args.weights is not None:
        empirical = empirical_reuse(model, trace)
        rows = ["stem", *labels]
        column_max = np.nanmax(empirical, axis=0, keepdims=True)
        per_target = empirical / column_max
        print()
        print(f"{args.weights}: mean |weight| of block l's first 1x1 conv over the input channels computed by block s")
        print("(each column divided by its largest entry; raw values in the CSV; 'stem' = conv1 + maxpool)")
        print(format_matrix(per_target, rows, labels, "{:.2f}"))
        profile = distance_profile(trace, empirical)
        print(
            "mean |w| per channel by distance j, relative to the adjacent block (1.00 = no decay; "
            "structural share r^j):"
        )
        print("  j     " + "  ".join(f"{j:>5d}" for j in profile))
        print("  |w|   " + "  ".join(f"{v:5.2f}" for v in profile.values()))
        print("  r^j   " + "  ".join(f"{REUSE_RATIO**j:5.2f}" for j in profile))
        stem = f"reuse_empirical_{name}_{args.weights.stem}"
        written.append(
            save_heatmap(
                per_target,
                out_dir / f"{stem}.png",
                rows,
                labels,
                f"{args.weights.name}: mean |w| of block l's first 1x1 conv\nover input channels computed "
                "by block s (per-column max = 1)",
                "mean |weight| / column max",
            )
        )
        _write_csv(out_dir / f"{stem}.csv", empirical, rows, labels, "{:.6g}")
        written.append(out_dir / f"{stem}.csv")
    print()
    print("wrote " + ", ".join(str(path) for path in written))


def _model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from tqdm import tqdm

    try:
        names = [resolve_model_name(name) for name in args.models]
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    if args.image_size < 32 or args.batch_size < 1 or args.iterations < 1:
        parser.exit(
            2,
            f"error: need --image-size >= 32, --batch-size >= 1, --iterations >= 1; got "
            f"{args.image_size}, {args.batch_size}, {args.iterations}\n",
        )
    if args.threads is not None:
        if args.threads < 1:
            parser.exit(2, f"error: --threads must be >= 1, got {args.threads}\n")
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.exit(2, "error: --device cuda but torch.cuda.is_available() is False; use --device cpu\n")
    autocast_dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[args.precision]
    modes = {"none": [], "infer": ["infer"], "train": ["train"], "both": ["infer", "train"]}[args.throughput]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread" + ("s" if torch.get_num_threads() > 1 else "")
    )
    precision = {"32": "fp32", "bf16": "bf16 autocast", "16": "fp16 autocast"}[args.precision]
    if args.clock == "process" and device.type == "cuda":
        parser.exit(2, "error: --clock process times CPU work only; use --clock wall with --device cuda\n")
    setting = f"{where}, batch {args.batch_size}, {precision}" + (", channels_last" if args.channels_last else "")
    setting += ", per CPU second" if args.clock == "process" else ""

    total = len(names) * args.iterations * len(modes)
    with tqdm(total=total, desc="timing", unit="step", file=sys.stderr, disable=None if total else True) as bar:
        reports = build_reports(
            names,
            args.image_size,
            modes,
            args.batch_size,
            device,
            args.iterations,
            args.warmup,
            args.channels_last,
            autocast_dtype,
            progress=bar.update,
            clock=args.clock,
        )
    table = format_report(reports, args.image_size, setting, args.format)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.output, table + "\n")
        print(f"wrote {args.output}", file=sys.stderr)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shufflenet-pl analyze",
        description=_wrap(
            "Analyses of ShuffleNet V2 from the code: the paper's Fig. 4 feature-reuse matrices, and "
            "Table 5 with parameters, FLOPs, activation memory and measured throughput."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{reuse,model}")

    reuse = commands.add_parser(
        "reuse",
        help="Fig. 4: channels directly connected between blocks (traced), and weights per source block",
        description=_wrap(
            "Fig. 4(b) traced through the model's real forward: the number of block l's output channels "
            "that are block s's outputs passed on unchanged (split, identity, concat, shuffle), compared with the "
            "paper's r^j*c. With --weights also a Fig. 4(a)-style matrix: the mean |weight| of each block's first 1x1 "
            "conv over the input channels computed by each earlier block. Prints the matrices and writes PNG heatmaps "
            "and CSVs."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reuse.add_argument(
        "--model",
        default=None,
        metavar="WIDTH",
        help=f"width: {', '.join(list_models())} or 0.5x/1.0x/1.5x/2.0x "
        "(default: read from --weights, else shufflenet_v2_x1_0)",
    )
    reuse.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="state dict or Lightning checkpoint (e.g. torchvision's "
        "shufflenetv2_x1-5666bf0f80.pth or runs/.../last.ckpt), read with weights_only=True",
    )
    reuse.add_argument(
        "--num-classes",
        type=int,
        default=None,
        metavar="N",
        help="classifier size (default: read from --weights, else 1000)",
    )
    reuse.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs/analysis"),
        metavar="DIR",
        help="where the PNGs and CSVs go (default: %(default)s)",
    )
    reuse.add_argument(
        "--image-size",
        type=int,
        default=64,
        metavar="PX",
        help="side of the random images traced; the result does not depend on it (default: %(default)s)",
    )
    reuse.set_defaults(handler=_reuse, subparser=reuse)

    model = commands.add_parser(
        "model",
        help="Table 5 from the code, per width, with parameters, FLOPs, activation memory, throughput",
        description=_wrap(
            "One table, a column per width: the paper's Table 5 (layers, output sizes, kernels, strides, "
            "repeats, output channels) regenerated by a forward pass through the code, then parameters, FLOPs "
            "(multiply-adds, as in the paper), activation memory saved for backward per image, and images/s measured "
            "here (median of --iterations steps after --warmup). Prints Markdown (or CSV) ready to paste."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model.add_argument(
        "--models",
        nargs="+",
        default=list_models(),
        metavar="WIDTH",
        help="widths to report: names or 0.5x/1.0x/1.5x/2.0x (default: all four)",
    )
    model.add_argument(
        "--image-size",
        type=int,
        default=224,
        metavar="PX",
        help="input side for shapes, FLOPs, memory and speed (default: %(default)s)",
    )
    model.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="images per timed step (default: %(default)s)"
    )
    model.add_argument(
        "--throughput",
        choices=["infer", "train", "both", "none"],
        default="infer",
        help="what to time: inference, a training step (forward, backward, SGD), both, or nothing "
        "(default: %(default)s)",
    )
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    model.add_argument(
        "--precision",
        choices=["32", "bf16", "16"],
        default="32",
        help="fp32, or autocast to bf16/fp16 (default: %(default)s)",
    )
    model.add_argument(
        "--channels-last", action="store_true", help="run the timed steps in channels_last memory format"
    )
    model.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"CPU threads for torch (default: torch's choice, here {torch.get_num_threads()})",
    )
    model.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="time steps by wall clock, or by this process's CPU time (steadier on a shared CPU; "
        "use with --threads 1) (default: %(default)s)",
    )
    model.add_argument(
        "--iterations", type=int, default=10, metavar="N", help="timed steps per measurement (default: %(default)s)"
    )
    model.add_argument(
        "--warmup", type=int, default=3, metavar="N", help="untimed steps before timing (default: %(default)s)"
    )
    model.add_argument(
        "--format", choices=["markdown", "csv"], default="markdown", help="table format (default: %(default)s)"
    )
    model.add_argument("--output", type=Path, default=None, metavar="FILE", help="also write the table to this file")
    model.set_defaults(handler=_model, subparser=model)
    return parser


def analyze_main(argv: Optional[List[str]] = None) -> None:
    """Console entry of ``shufflenet-pl analyze``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.handler(args, args.subparser)  # errors are reported by the subcommand's parser


if __name__ == "__main__":
    analyze_main()
