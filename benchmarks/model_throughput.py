"""Throughput of our ShuffleNet V2 against torchvision's ``shufflenet_v2_x*``, and speed against FLOPs.

The paper's thesis (Ma et al., ECCV 2018, section 2) is that speed has to be measured on the target
platform, not inferred from FLOPs. For each width this script builds torchvision's model and ours with
the same weights (ours loads torchvision's state dict strictly), checks that they give the same
outputs, and times both in one run with the same inputs and settings:

* ``train``: forward, cross-entropy, backward and an SGD (momentum) step, images/s;
* ``infer``: eval-mode forward under ``torch.inference_mode``, images/s;
* ``latency``: the same at batch 1, milliseconds.

Settings (``--settings``, each a ``+``-joined set): ``fp32`` (NCHW, float32), ``channels_last``,
``bf16`` (``torch.autocast`` to bfloat16, channels_last), ``compile`` (``torch.compile``, bf16,
channels_last), or any combination such as ``compile+channels_last``. The two models are called in
alternation (A B, B A, ...) and medians are reported, so drift of a shared machine cancels: the
ratios of one run are the figures to compare, more than the absolute times.

Writes ``model_throughput.json`` (every sample), ``model_throughput.png`` (speedup per setting) and
``speed_vs_flops.png`` (images/s against multiply-adds per width, both implementations) into
``--out-dir``, and prints a table. ``--plot-from FILE`` redraws the charts and table from a JSON file.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a file (python benchmarks/model_throughput.py): find the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torchvision
from torch import nn

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
from shufflenet_pl.models import build_model

__all__ = ["Setting", "main", "parse_setting", "parse_width", "plot_speed_vs_flops", "plot_speedups", "run_benchmark"]

WIDTHS = {
    "0.5x": "shufflenet_v2_x0_5",
    "1.0x": "shufflenet_v2_x1_0",
    "1.5x": "shufflenet_v2_x1_5",
    "2.0x": "shufflenet_v2_x2_0",
}
MODES = ("train", "infer", "latency")
SETTING_FEATURES = ("channels_last", "bf16", "compile")
DEFAULT_SETTINGS = ("fp32", "channels_last", "bf16", "compile")
# What a bare feature name means: bf16 and compile are measured as used in practice, with channels_last.
_IMPLIED = {"bf16": {"bf16", "channels_last"}, "compile": {"compile", "bf16", "channels_last"}}
_MODE_LABELS = {"train": "train step (img/s)", "infer": "inference (img/s)", "latency": "latency, batch 1 (ms)"}


@dataclass(frozen=True)
class Setting:
    """How both models run: memory format, autocast and compilation.

    Attributes:
        label: the name it was given on the command line, e.g. ``"bf16"`` or ``"compile+channels_last"``.
        channels_last: model and inputs in ``torch.channels_last``.
        bf16: forward and loss under ``torch.autocast(dtype=torch.bfloat16)``.
        compile: models wrapped in ``torch.compile`` (default mode).
    """

    label: str
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def parse_setting(label: str) -> Setting:
    """``"fp32"``, one feature (``channels_last``, ``bf16``, ``compile``) or features joined by ``+``.

    Alone, ``bf16`` means bf16 + channels_last and ``compile`` means compile + bf16 + channels_last (as
    they are used in practice); a ``+``-joined set means exactly its features.

    Raises:
        ValueError: an unknown feature name.
    """
    tokens = label.split("+")
    for token in tokens:
        if token != "fp32" and token not in SETTING_FEATURES:
            raise ValueError(
                f"unknown setting {token!r} in {label!r}; use fp32 or {', '.join(SETTING_FEATURES)}, joined by '+'"
            )
    features = _IMPLIED.get(tokens[0], set(tokens)) if len(tokens) == 1 else set(tokens)
    return Setting(
        label, channels_last="channels_last" in features, bf16="bf16" in features, compile="compile" in features
    )


def parse_width(text: str) -> str:
    """``"1.0"``, ``"1.0x"``, ``"x1_0"`` or ``"shufflenet_v2_x1_0"`` -> ``"1.0x"``.

    Raises:
        ValueError: not one of the four widths.
    """
    key = text.strip().lower().removeprefix("shufflenet_v2_").removeprefix("x").removesuffix("x").replace("_", ".")
    label = f"{float(key):.1f}x" if key.replace(".", "", 1).isdigit() else key
    if label not in WIDTHS:
        raise ValueError(f"unknown width {text!r}; choose from {', '.join(WIDTHS)}")
    return label


def build_pair(name: str, device: torch.device, setting: Setting) -> Tuple[nn.Module, nn.Module]:
    """(ours, torchvision's) for ``name`` with the same weights, on ``device`` in the setting's memory format."""
    theirs = getattr(torchvision.models, name)(weights=None)
    ours = build_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return (
        ours.to(device=device, memory_format=setting.memory_format),
        theirs.to(device=device, memory_format=setting.memory_format),
    )


def max_output_difference(ours: nn.Module, theirs: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute difference of the two models' eval-mode logits on ``images``, in float32."""
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        return float((ours(images) - theirs(images)).abs().max())


def make_step(
    model: nn.Module, mode: str, images: torch.Tensor, labels: torch.Tensor, setting: Setting
) -> Callable[[], None]:
    """One unit of timed work: a training step (``mode == "train"``) or an inference forward."""
    device_type = images.device.type
    if mode == "train":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def train_step() -> None:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=setting.bf16):
                loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return train_step

    model.eval()

    def infer_step() -> None:
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=setting.bf16):
            model(images)

    return infer_step


def run_benchmark(
    widths: Sequence[str],
    settings: Sequence[Setting],
    modes: Sequence[str],
    device: torch.device,
    batch_size: int,
    image_size: int,
    repeats: int,
    warmup: int,
    min_sample_seconds: float = 0.0,
    clock: str = "wall",
    on_result: Optional[Callable[[Dict[str, Any]], None]] = None,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Time ours against torchvision's for every width x setting x mode.

    Args:
        widths: labels from :data:`WIDTHS`.
        settings: from :func:`parse_setting`.
        modes: from :data:`MODES`.
        device: where to run.
        batch_size: images per step for ``train`` and ``infer`` (``latency`` uses 1).
        image_size: side of the square input images.
        repeats: timed calls per model (alternating).
        warmup: untimed calls per model first (compilation happens here).
        min_sample_seconds: calls faster than this are repeated within a sample (see
            :func:`benchmarks._timing.time_interleaved`).
        clock: ``"wall"`` or ``"process"`` (see :func:`benchmarks._timing.time_interleaved`).
        on_result: called with each result as soon as it is measured.
        progress: show a progress bar on stderr.

    Returns:
        One dict per (width, setting, mode) with both models' samples, medians and the speedup
        (torchvision's median time / ours).
    """
    from tqdm.auto import tqdm

    synchronize = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    results: List[Dict[str, Any]] = []
    bar = tqdm(total=len(widths) * len(settings) * len(modes), disable=not progress, unit="case", file=sys.stderr)
    try:
        for width in widths:
            name = WIDTHS[width]
            multiply_adds = count_multiply_adds(build_model(name))
            for setting in settings:
                ours, theirs = build_pair(name, device, setting)
                check = torch.randn(2, 3, image_size, image_size, generator=generator).to(
                    device, memory_format=setting.memory_format
                )
                difference = max_output_difference(ours, theirs, check)
                if setting.compile:
                    ours, theirs = torch.compile(ours), torch.compile(theirs)
                for mode in modes:
                    bar.set_description(f"{width} {setting.label} {mode}")
                    batch = 1 if mode == "latency" else batch_size
                    images = torch.randn(batch, 3, image_size, image_size, generator=generator).to(
                        device, memory_format=setting.memory_format
                    )
                    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)
                    samples = time_interleaved(
                        {
                            "ours": make_step(ours, mode, images, labels, setting),
                            "torchvision": make_step(theirs, mode, images, labels, setting),
                        },
                        repeats=repeats,
                        warmup=warmup,
                        synchronize=synchronize,
                        min_sample_seconds=min_sample_seconds,
                        clock=clock,
                    )
                    result = {
                        "width": width,
                        "model": name,
                        "setting": setting.label,
                        "channels_last": setting.channels_last,
                        "bf16": setting.bf16,
                        "compile": setting.compile,
                        "mode": mode,
                        "batch_size": batch,
                        "image_size": image_size,
                        "multiply_adds_224px": multiply_adds,
                        "max_output_difference": difference,
                        "speedup": median(samples["torchvision"]) / median(samples["ours"]),
                        "paired_speedup_median": median(
                            [t / o for o, t in zip(samples["ours"], samples["torchvision"])]
                        ),
                    }
                    for key, seconds in samples.items():
                        result[key] = {
                            "seconds": seconds,
                            "median_s": median(seconds),
                            "images_per_s": batch / median(seconds),
                        }
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
                    bar.update()
    finally:
        bar.close()
    return results


def _cell(result: Dict[str, Any], who: str) -> str:
    if result["mode"] == "latency":
        return f"{result[who]['median_s'] * 1000:.2f}"
    return f"{result[who]['images_per_s']:,.1f}"


def format_results(results: Sequence[Dict[str, Any]]) -> str:
    """The table: one row per width, setting and mode, with ours, torchvision's and the speedup."""
    header = ["width", "setting", "measure", "ours", "torchvision", "speedup"]
    rows = [
        [
            r["width"],
            r["setting"],
            _MODE_LABELS[r["mode"]],
            _cell(r, "ours"),
            _cell(r, "torchvision"),
            f"{r['speedup']:.2f}x",
        ]
        for r in results
    ]
    return format_table(header, rows)


def plot_speedups(results: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    """One panel per measure: grouped bars of ours/torchvision speed per width and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(r["mode"] == m for r in results)]
    settings = list(dict.fromkeys(r["setting"] for r in results))
    widths = list(dict.fromkeys(r["width"] for r in results))
    figure, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.8), squeeze=False)
    bar_width = 0.8 / max(len(settings), 1)
    for axis, mode in zip(axes[0], modes):
        for index, setting in enumerate(settings):
            values = [
                next(
                    (
                        r["speedup"]
                        for r in results
                        if r["mode"] == mode and r["setting"] == setting and r["width"] == w
                    ),
                    float("nan"),
                )
                for w in widths
            ]
            positions = [i + (index - (len(settings) - 1) / 2) * bar_width for i in range(len(widths))]
            axis.bar(positions, values, bar_width, label=setting)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(widths)), widths)
        axis.set_title(_MODE_LABELS[mode])
        axis.set_ylabel("speedup, ours / torchvision")
    axes[0][0].legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    save_figure(figure, path)


def plot_speed_vs_flops(results: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    """Images/s against multiply-adds (at 224 px) per width: ours solid, torchvision's dashed, one colour
    per setting, and the dotted line speed would follow if it were proportional to 1/FLOPs."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("train", "infer") if any(r["mode"] == m for r in results)] or ["latency"]
    settings = list(dict.fromkeys(r["setting"] for r in results))
    figure, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.4), squeeze=False)
    figure.subplots_adjust(wspace=0.3)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, mode in zip(axes[0], modes):
        ticks: Tuple[List[float], List[str]] = ([], [])
        for index, setting in enumerate(settings):
            rows = sorted(
                (r for r in results if r["mode"] == mode and r["setting"] == setting),
                key=lambda r: r["multiply_adds_224px"],
            )
            if not rows:
                continue
            mflops = [r["multiply_adds_224px"] / 1e6 for r in rows]
            colour = colours[index % len(colours)]
            axis.plot(mflops, [r["ours"]["images_per_s"] for r in rows], "o-", color=colour, label=f"ours, {setting}")
            axis.plot(
                mflops,
                [r["torchvision"]["images_per_s"] for r in rows],
                "s--",
                color=colour,
                alpha=0.7,
                label=f"torchvision, {setting}",
            )
            if index == 0:
                ticks = (mflops, [f"{x:.0f}\n{r['width']}" for r, x in zip(rows, mflops)])
                if len(rows) > 1:
                    anchor = rows[0]["ours"]["images_per_s"] * mflops[0]
                    axis.plot(mflops, [anchor / x for x in mflops], ":", color="grey", label="if speed were ∝ 1/FLOPs")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(*ticks)  # after set_xscale, which resets the ticks
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("multiply-adds per image at 224 px (millions), width")
        axis.set_ylabel("images/s")
        axis.set_title(_MODE_LABELS[mode])
        axis.legend(fontsize="x-small")
    figure.suptitle(title, fontsize="medium")
    save_figure(figure, path)


def _title(meta: Dict[str, Any], batch_size: int, image_size: int) -> str:
    return f"{meta['device']}; batch {batch_size}, {image_size} px; torch {meta['torch']}"


def write_outputs(report: Dict[str, Any], out_dir: Path) -> List[Path]:
    """JSON and both charts into ``out_dir``; returns their paths."""
    json_path, speedup_path, flops_path = (
        out_dir / "model_throughput.json",
        out_dir / "model_throughput.png",
        out_dir / "speed_vs_flops.png",
    )
    write_json(json_path, report)
    title = _title(report["environment"], report["batch_size"], report["image_size"])
    plot_speedups(report["results"], speedup_path, title)
    plot_speed_vs_flops(report["results"], flops_path, title)
    return [json_path, speedup_path, flops_path]


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Time our ShuffleNet V2 against torchvision's (same weights, inputs and settings, called in "
        "alternation) per width, setting and measure; print a table of speedups and write JSON + PNG charts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings: fp32 = NCHW float32; channels_last; bf16 = autocast bfloat16 + channels_last;\n"
        "  compile = torch.compile + bf16 + channels_last; or join features with '+', e.g. compile+channels_last.\n"
        "examples:\n"
        "  shufflenet-pl bench                                         # everything, on the GPU if there is one\n"
        "  shufflenet-pl bench --widths 1.0 --settings fp32 channels_last --modes train\n"
        "  shufflenet-pl bench --device cuda --batch-size 256 --settings compile\n"
        "  shufflenet-pl bench --plot-from runs/benchmarks/model_throughput.json\n"
        "torch.compile adds minutes per width and setting on a CPU (compilation happens during --warmup).",
    )
    parser.add_argument(
        "--widths", nargs="+", default=list(WIDTHS), metavar="W", help="model widths: 0.5 1.0 1.5 2.0 (default: all)"
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(DEFAULT_SETTINGS),
        metavar="S",
        help=f"default: {' '.join(DEFAULT_SETTINGS)}",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="what to time (default: all)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if visible, else CPU), cpu, cuda, cuda:N")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per train/infer step (default: 256 on a GPU, 32 on CPU)"
    )
    parser.add_argument(
        "--image-size", type=int, default=160, help="input side in pixels (default: 160, FFCV-style low-res training)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model and case (default: 10)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed calls per model first; compilation happens here (default: 2)"
    )
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=20.0,
        help="a sample repeats a faster call until it lasts this long, e.g. GPU latency (default: 20)",
    )
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
        help="where the JSON and PNGs go (default: runs/benchmarks)",
    )
    parser.add_argument(
        "--plot-from",
        type=Path,
        default=None,
        metavar="JSON",
        help="redraw table and charts from a model_throughput.json; time nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = "shufflenet-pl bench") -> None:
    """Command-line entry point (``shufflenet-pl bench`` or ``python benchmarks/model_throughput.py``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.plot_from is not None:
        try:
            report = json.loads(args.plot_from.read_text())
            results = report["results"]
        except (OSError, ValueError, KeyError) as err:
            parser.exit(2, f"error: cannot read {args.plot_from} as a model_throughput.json: {err}\n")
        print(format_results(results))
        for path in write_outputs(report, args.out_dir):
            print(f"wrote {path}")
        return
    try:
        widths = [parse_width(w) for w in args.widths]
        settings = [parse_setting(s) for s in args.settings]
        device = resolve_device(args.device)
        check_minimums(
            (
                ("--repeats", args.repeats, 1),
                ("--warmup", args.warmup, 0),
                ("--image-size", args.image_size, 32),
                ("--min-sample-ms", args.min_sample_ms, 0),
                ("--batch-size", args.batch_size, 1),
                ("--threads", args.threads, 1),
            )
        )
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batch_size = args.batch_size or (256 if device.type == "cuda" else 32)
    report: Dict[str, Any] = {
        "environment": environment(device),
        "batch_size": batch_size,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "clock": args.clock,
        "results": [],
    }
    print(
        f"# ours vs torchvision, {report['environment']['device']}, batch {batch_size}, {args.image_size} px, "
        f"median of {args.repeats} alternating calls ({args.clock} clock); speedup = torchvision's time / ours",
        flush=True,
    )

    def save_partial(result: Dict[str, Any]) -> None:
        # Every finished case is on disk at once: an interrupted run keeps what it measured.
        report["results"].append(result)
        write_json(args.out_dir / "model_throughput.json", report)

    run_benchmark(
        widths,
        settings,
        args.modes,
        device,
        batch_size,
        args.image_size,
        args.repeats,
        args.warmup,
        min_sample_seconds=args.min_sample_ms / 1000,
        clock=args.clock,
        on_result=save_partial,
        progress=not args.no_progress,
    )
    print(format_results(report["results"]))
    worst = max(r["max_output_difference"] for r in report["results"])
    print(f"outputs of ours and torchvision's agree to {worst:.1e} (largest absolute logit difference, eval, float32)")
    for path in write_outputs(report, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main(prog="python benchmarks/model_throughput.py")
