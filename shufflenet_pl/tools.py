"""Small command-line tools that are not training runs."""

import argparse
from pathlib import Path
from typing import List, Optional

import torch

from .models import build_model, list_models, load_torchvision_weights

__all__ = ["import_weights_main"]


def import_weights_main(argv: Optional[List[str]] = None) -> None:
    """``shufflenet-pl import-weights``: check a torchvision state-dict file against our model and
    write it as a plain state dict that ``--weights`` (or ``torch.load(weights_only=True)``) reads."""
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
    tmp = args.output.with_name(args.output.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(args.output)
    print(f"{args.source} -> {args.output}: {args.model}, {sum(p.numel() for p in model.parameters()):,} parameters")
