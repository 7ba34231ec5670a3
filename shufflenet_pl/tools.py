"""Command-line tools that are not training runs: their index (:data:`TOOLS`, listed under
``shufflenet-pl --help``) and the small ones themselves."""

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["TOOLS", "import_weights_main", "tools_epilog"]

# Tools besides the Lightning subcommands: name -> ("module:function", one-line help). Imported only
# when used, so that ``shufflenet-pl fit`` does not pay for them.
TOOLS: Dict[str, Tuple[str, str]] = {
    "import-weights": (
        "shufflenet_pl.tools:import_weights_main",
        "check a torchvision shufflenet_v2_x*.pth and save it for --weights",
    ),
    "prepare-imagenet": (
        "shufflenet_pl.data.prepare_imagenet:prepare_imagenet_main",
        "sort ImageNet's flat validation folder into val/<wnid>/ (LOC_val_solution.csv or the devkit)",
    ),
    "convert": (
        "shufflenet_pl.data.convert:convert_main",
        "write train.beton / val.beton (FFCV) from an ImageFolder tree",
    ),
    "check": (
        "shufflenet_pl.data.beton_check:check_main",
        "verify .beton files: complete, every chunk's checksum, with --decode every image decodes",
    ),
    "analyze": (
        "shufflenet_pl.analysis.cli:analyze_main",
        "reuse: Fig. 4 feature-reuse matrices; model: Table 5 + params, FLOPs, memory, speed",
    ),
    "plot": (
        "shufflenet_pl.tracking.plot:plot_main",
        "draw a run's accuracy and throughput curves to PNG (W&B offline files or metrics.csv)",
    ),
    "dashboard": (
        "shufflenet_pl.tracking.dashboard:dashboard_main",
        "build (and with a W&B key, save) a workspace with accuracy and throughput side by side",
    ),
    "bench": (
        "benchmarks.model_throughput:main",
        "time our model against torchvision's per width and setting: table, JSON, speedup and speed-vs-FLOPs PNGs",
    ),
    "bench-train": (
        "benchmarks.train_throughput:main",
        "training images/s end to end: fit (FFCV, ImageFolder) vs model-only vs torchvision's loop; JSON",
    ),
    "guidelines": (
        "benchmarks.guidelines:main",
        "the paper's Tables 1-4 (guidelines G1-G4) timed on this device: tables, JSON, PNG",
    ),
}


def tools_epilog() -> str:
    lines = ["more tools (shufflenet-pl TOOL -h):"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in TOOLS.items()]
    lines.append("example: shufflenet-pl fit --config configs/experiment/demo.yaml")
    lines.append("")
    return "\n".join(lines)


def import_weights_main(argv: Optional[List[str]] = None) -> None:
    """``shufflenet-pl import-weights``: check a torchvision state-dict file against our model and
    write it as a plain state dict that ``--weights`` (or ``torch.load(weights_only=True)``) reads."""
    import torch

    from .files import atomic_path

    from .models import build_model, list_models, load_torchvision_weights

    parser = argparse.ArgumentParser(
        prog="shufflenet-pl import-weights",
        description="Load a torchvision shufflenet_v2_x*.pth strictly into our ShuffleNetV2 (weights_only=True) "
        "and save it; use the output with `shufflenet-pl validate --weights FILE`.",
    )
    parser.add_argument("source", type=Path, help="torchvision state-dict file, e.g. shufflenetv2_x1-5666bf0f80.pth")
    parser.add_argument("output", type=Path, help="where to write the checked state dict")
    parser.add_argument("--model", default="shufflenet_v2_x1_0", choices=list_models(), help="architecture of the file")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier size of the file")
    args = parser.parse_args(argv)
    try:
        model = load_torchvision_weights(build_model(args.model, num_classes=args.num_classes), args.source)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        torch.save(model.state_dict(), tmp)
    print(f"{args.source} -> {args.output}: {args.model}, {sum(p.numel() for p in model.parameters()):,} parameters")
