"""Under ``torch.compile``, is there a formulation of ShuffleNet V2 that trains faster than torchvision's?

``model_throughput.py --settings compile`` shows ours and torchvision's at the same speed: compiled,
both are the same graph of convolutions, BatchNorms and copies, and Inductor fuses the shuffle of
either alike. This script times the alternatives that are left to a model's code, each against
torchvision's in one interleaved run (bf16 autocast, channels_last, ``torch.compile`` default mode,
forward + cross-entropy + backward + SGD step, as in ``model_throughput.py``):

* ``ours``: our model as it ships;
* ``pointwise-matmul``: ours with every 1x1 convolution written as a matrix product over the NHWC view
  (cuBLAS/MKL instead of cuDNN/oneDNN, and a form Inductor can fuse around);
* ``depthwise-taps``: ours with every 3x3 depthwise convolution written as nine shifted multiply-adds,
  which Inductor turns into one fused elementwise kernel with its BatchNorm, instead of a cuDNN call;
* ``both``: the two together.

Each formulation is checked first: its eval-mode logits (float32, eager) must match torchvision's.
On a GPU it also reports how much of a step the GPU spends running kernels (``torch.profiler``),
which tells whether a step is bound by the GPU's work or by the host launching it. Prints a table
and writes ``compile_formulations.json`` (every sample) into ``--out-dir``, after every case.
"""

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

if __package__ in (None, ""):  # run as a file (python benchmarks/compile_formulations.py): find the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from benchmarks._timing import (
    check_minimums,
    environment,
    format_table,
    median,
    resolve_device,
    synchronizer,
    time_interleaved,
    write_json,
)
from shufflenet_pl.models import build_model

__all__ = ["FORMULATIONS", "DepthwiseTaps", "PointwiseMatmul", "build_formulation", "main"]

FORMULATIONS = ("ours", "pointwise-matmul", "depthwise-taps", "both")
WIDTHS = {
    "0.5": "shufflenet_v2_x0_5",
    "1.0": "shufflenet_v2_x1_0",
    "1.5": "shufflenet_v2_x1_5",
    "2.0": "shufflenet_v2_x2_0",
}


def _weight_like(x: Tensor, weight: Tensor) -> Tensor:
    """The weight in the dtype a convolution would use: autocast's dtype inside autocast, else the input's."""
    if torch.is_autocast_enabled(x.device.type):
        return weight.to(torch.get_autocast_dtype(x.device.type))
    return weight.to(x.dtype)


class PointwiseMatmul(nn.Conv2d):
    """A 1x1 convolution (no groups, no bias) as ``x_nhwc @ weight.T``: same parameters and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        weight = _weight_like(x, self.weight).flatten(1)
        return (x.permute(0, 2, 3, 1) @ weight.t()).permute(0, 3, 1, 2)


class DepthwiseTaps(nn.Conv2d):
    """A 3x3 depthwise convolution (padding 1, no bias) as nine shifted multiply-adds: same parameters."""

    def forward(self, x: Tensor) -> Tensor:
        stride = self.stride[0]
        channels, height, width = x.shape[1:]
        out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
        padded = F.pad(x, (1, 1, 1, 1))
        weight = _weight_like(x, self.weight)
        out: Optional[Tensor] = None
        for i in range(3):
            for j in range(3):
                window = padded[
                    :, :, i : i + stride * (out_height - 1) + 1 : stride, j : j + stride * (out_width - 1) + 1 : stride
                ]
                tap = window * weight[:, 0, i, j].view(1, channels, 1, 1)
                out = tap if out is None else out + tap
        assert out is not None
        return out


def build_formulation(name: str, model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its convolutions rewritten as ``name`` says (one of :data:`FORMULATIONS`)."""
    if name not in FORMULATIONS:
        raise ValueError(f"unknown formulation {name!r}; choose from {', '.join(FORMULATIONS)}")
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is not nn.Conv2d or module.bias is not None:
            continue
        depthwise = (
            module.groups == module.in_channels == module.out_channels > 1
            and module.kernel_size == (3, 3)
            and module.padding == (1, 1)
        )
        pointwise = module.groups == 1 and module.kernel_size == (1, 1) and module.stride == (1, 1)
        if depthwise and name in ("depthwise-taps", "both"):
            module.__class__ = DepthwiseTaps
        elif pointwise and name in ("pointwise-matmul", "both"):
            module.__class__ = PointwiseMatmul
    return model


def _train_step(model: nn.Module, images: Tensor, labels: Tensor, bf16: bool) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def kernel_seconds_per_step(step: Callable[[], None], steps: int) -> float:
    """Seconds of GPU kernel time per call of ``step`` (``torch.profiler``, CUDA activity)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return sum(event.self_device_time_total for event in prof.key_averages()) / steps / 1e6


def run(args: argparse.Namespace) -> Dict[str, Any]:
    check_minimums(
        (
            ("--batch-size", args.batch_size, 1),
            ("--image-size", args.image_size, 32),
            ("--repeats", args.repeats, 1),
            ("--warmup", args.warmup, 0),
            ("--profile-steps", args.profile_steps, 0),
        )
    )
    device = resolve_device(args.device)
    synchronize = synchronizer(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = WIDTHS[args.width]
    generator = torch.Generator().manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None)
    ours = build_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    check = torch.randn(2, 3, args.image_size, args.image_size, generator=generator)
    with torch.no_grad():
        reference = theirs.eval()(check)  # before the model moves and trains
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(
        device, memory_format=torch.channels_last
    )
    labels = torch.randint(0, 1000, (args.batch_size,), generator=generator).to(device)
    report: Dict[str, Any] = {
        "environment": environment(device),
        "width": args.width,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "compile": not args.no_compile,
        "bf16": not args.no_bf16,
        "results": [],
    }

    def prepare(model: nn.Module) -> Callable[[], None]:
        model = model.to(device, memory_format=torch.channels_last).train()
        if not args.no_compile:
            model = torch.compile(model)
        return _train_step(model, images, labels, bf16=not args.no_bf16)

    start = time.perf_counter()
    torchvision_step = prepare(theirs)
    for _ in range(args.warmup):
        torchvision_step()
    synchronize()
    report["torchvision_warmup_s"] = time.perf_counter() - start
    print(
        f"torchvision {name}: {'compiled and ' * (not args.no_compile)}warmed up in "
        f"{report['torchvision_warmup_s']:.0f} s",
        flush=True,
    )
    rows: List[List[str]] = []
    for formulation in args.formulations:
        model = build_formulation(formulation, ours)
        with torch.no_grad():
            difference = float((model.eval()(check) - reference).abs().max())
        if difference > 1e-4 * float(reference.abs().max()):
            raise ValueError(
                f"{formulation}: logits differ from torchvision's by {difference:.3g}; the rewrite is wrong"
            )
        start = time.perf_counter()
        step = prepare(model)
        for _ in range(args.warmup):
            step()
        synchronize()
        warmup_seconds = time.perf_counter() - start
        samples = time_interleaved(
            {"torchvision": torchvision_step, formulation: step},
            repeats=args.repeats,
            warmup=0,
            synchronize=synchronize,
        )
        result: Dict[str, Any] = {
            "formulation": formulation,
            "max_logit_difference": difference,
            "warmup_s": warmup_seconds,
            "speedup": median(samples["torchvision"]) / median(samples[formulation]),
            "seconds": samples,
        }
        if device.type == "cuda" and args.profile_steps > 0:
            result["kernel_s_per_step"] = {
                "torchvision": kernel_seconds_per_step(torchvision_step, args.profile_steps),
                formulation: kernel_seconds_per_step(step, args.profile_steps),
            }
        report["results"].append(result)
        write_json(args.out_dir / "compile_formulations.json", report)
        row = [
            formulation,
            f"{args.batch_size / median(samples[formulation]):,.0f}",
            f"{args.batch_size / median(samples['torchvision']):,.0f}",
            f"{result['speedup']:.3f}x",
            f"{difference:.1e}",
        ]
        if "kernel_s_per_step" in result:
            kernels = result["kernel_s_per_step"]
            row.append(
                " / ".join(
                    f"{kernels[who] * 1e3:.1f} of {median(samples[who]) * 1e3:.1f}"
                    for who in (formulation, "torchvision")
                )
            )
        rows.append(row)
        print(f"{formulation}: {row[3]} torchvision's training step (warm-up {warmup_seconds:.0f} s)", flush=True)
    header = ["formulation", "ours img/s", "torchvision img/s", "speedup", "max |logit diff|"]
    if device.type == "cuda" and args.profile_steps > 0:
        header.append("kernel ms of step ms (ours / tv)")
    print(format_table(header, rows))
    return report


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--formulations",
        nargs="+",
        choices=FORMULATIONS,
        default=list(FORMULATIONS),
        help="what to time against torchvision (default: all)",
    )
    parser.add_argument("--width", choices=sorted(WIDTHS), default="1.0", help="model width (default: 1.0)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if visible, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, help="images per training step (default: 256)")
    parser.add_argument("--image-size", type=int, default=160, help="input side (default: 160)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per model, alternating (default: 20)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps per model first; compilation happens here (default: 2)"
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=5,
        help="steps profiled for GPU kernel time, 0 for none (default: 5; GPU only)",
    )
    parser.add_argument("--no-compile", action="store_true", help="eager mode (to check the formulations quickly)")
    parser.add_argument("--no-bf16", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument(
        "--out-dir", type=Path, default=Path("runs/benchmarks"), help="where the JSON goes (default: runs/benchmarks)"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
