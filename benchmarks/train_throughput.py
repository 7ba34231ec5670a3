"""End-to-end training throughput: what a real ``fit`` achieves against the model-only ceiling and
against the loop a user would otherwise run.

Five candidates train on the same images (the built-in demo JPEGs, written once under ``--data-root``
as an ImageFolder tree and as FFCV ``.beton`` files), with the same batch size and crop size:

* ``fit_ffcv``: ``Trainer.fit`` with our :class:`~shufflenet_pl.module.ImageClassifier` and the FFCV
  datamodule;
* ``fit_imagefolder``: the same with the ImageFolder datamodule;
* ``model_only``: the same module in ``Trainer.fit`` on synthetic batches already on the device (the
  model-only ceiling of a fit);
* ``bare_loop``: a plain PyTorch loop over the same synthetic batches with the same module, compiled
  step and optimizer (what Lightning itself costs is ``model_only`` against this);
* ``reference_loop``: the loop of torchvision's ``references/classification``: torchvision's model,
  ``ImageFolder`` + ``DataLoader`` with PIL transforms, AMP (float16 + GradScaler) on CUDA, SGD.

Each run trains ``--warmup`` untimed steps, then ``--steps`` timed ones; steady-state images/s is the
timed images over the time from the end of the last warm-up step to the end of the last step. The
candidates take turns for ``--rounds`` rounds (order reversed every round) and medians are reported,
so drift of a shared machine affects them alike. Per candidate it also reports the share of wall time
spent between steps (waiting for the next batch, plus loop overhead), and on CUDA the GPU-busy share
(profiler kernel time / wall time of a step). It prints a table with the ratios and says plainly
whether the loader is the bottleneck; ``--json PATH`` writes every sample.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

if __package__ in (None, ""):  # run as a file (python benchmarks/train_throughput.py): find the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor, nn

from benchmarks._timing import (
    check_minimums,
    environment,
    format_table,
    median,
    resolve_device,
    synchronizer,
    write_json,
)

__all__ = ["CANDIDATES", "main", "run_benchmark"]

CANDIDATES = ("fit_ffcv", "fit_imagefolder", "model_only", "bare_loop", "reference_loop")
WIDTHS = {
    "0.5": "shufflenet_v2_x0_5",
    "1.0": "shufflenet_v2_x1_0",
    "1.5": "shufflenet_v2_x1_5",
    "2.0": "shufflenet_v2_x2_0",
}
_LABELS = {
    "fit_ffcv": "fit, FFCV datamodule",
    "fit_imagefolder": "fit, ImageFolder datamodule",
    "model_only": "fit, synthetic batches on the device",
    "bare_loop": "bare PyTorch loop, same batches",
    "reference_loop": "torchvision reference loop",
}
# A loader-fed fit below this share of the model-only rate is reported as loader-bound.
_BOTTLENECK_SHARE = 0.9
# ... and one whose step waits for data at least this share of the wall time is waiting on the loader.
_WAIT_SHARE = 0.05


class Run:
    """Step-end times of one training run; steady state starts after ``warmup`` steps."""

    def __init__(self, warmup: int, steps: int, batch_size: int, synchronize: Callable[[], None]) -> None:
        self.warmup, self.steps, self.batch_size, self.synchronize = warmup, steps, batch_size, synchronize
        self.starts: List[float] = []
        self.ends: List[float] = []

    @property
    def total(self) -> int:
        return self.warmup + self.steps

    def step_start(self) -> None:
        self.starts.append(time.perf_counter())

    def step_end(self) -> None:
        index = len(self.ends)
        if index in (self.warmup - 1, self.total - 1):  # the two ends of the timed window hold the device's work
            self.synchronize()
        self.ends.append(time.perf_counter())

    def result(self) -> Dict[str, float]:
        if len(self.ends) < self.total:
            raise RuntimeError(f"the run stopped after {len(self.ends)} of {self.total} steps")
        window_start = self.ends[self.warmup - 1] if self.warmup > 0 else self.starts[0]
        elapsed = self.ends[self.total - 1] - window_start
        # Between steps: from the end of one step to the start of the next (the loader's next batch, loop code).
        between = sum(self.starts[i] - self.ends[i - 1] for i in range(max(self.warmup, 1), self.total))
        return {
            "images_per_s": self.steps * self.batch_size / elapsed,
            "seconds": elapsed,
            "between_steps_share": min(1.0, max(0.0, between / elapsed)),
        }


class _RunTimer:
    """Lightning callback feeding a :class:`Run` and stopping the fit after its last step."""

    def __init__(self, run: Run) -> None:
        import lightning as L

        class Timer(L.Callback):
            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                run.step_start()

            def on_train_batch_end(
                self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
            ) -> None:
                run.step_end()

        self.callback = Timer()


class DeviceBatches:
    """``length`` copies of one (images, targets) batch that already lives on the device."""

    def __init__(self, images: Tensor, targets: Tensor, length: int) -> None:
        self.images, self.targets, self.length = images, targets, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        for _ in range(self.length):
            yield self.images, self.targets


def prepare_data(root: Path, per_class: int, workers: int, progress: bool) -> Path:
    """The demo JPEGs under ``root`` (``train/``, ``val/``) and their ``.beton`` files; reused when present."""
    from shufflenet_pl.data.convert import convert_split
    from shufflenet_pl.data.demo import make_demo_dataset

    make_demo_dataset(root, train_per_class=per_class, val_per_class=2, progress=progress)
    for split in ("train", "val"):
        convert_split(
            root / split,
            root / f"{split}.beton",
            write_mode="jpg",
            jpeg_quality=90,
            num_workers=workers,
            progress=progress,
        )
    return root


class Bench:
    """The shared set-up of one benchmark run: device, data, one module and its compiled step."""

    def __init__(self, args: argparse.Namespace, device: torch.device, data_root: Path, scratch: Path) -> None:
        from shufflenet_pl.models import build_model
        from shufflenet_pl.module import ImageClassifier

        self.args, self.device, self.data_root, self.scratch = args, device, data_root, scratch
        self.synchronize = synchronizer(device)
        self.bf16 = args.precision == "bf16-mixed"
        torch.manual_seed(0)
        self.module = ImageClassifier(
            build_model(WIDTHS[args.width], num_classes=10),
            lr=0.01,
            schedule="constant",
            channels_last=args.channels_last,
            compile=args.compile,
            compile_mode=args.compile_mode,
        )
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
        self.images = images.to(device)
        self.targets = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
        self.kernel_seconds_per_step: Optional[float] = None

    def _trainer(self, run: Run) -> Any:
        import lightning as L

        return L.Trainer(
            accelerator=self.device.type,
            devices=1,
            precision=self.args.precision,
            max_steps=run.total,
            max_epochs=-1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[_RunTimer(run).callback],
            default_root_dir=self.scratch,
        )

    def _run(self) -> Run:
        return Run(self.args.warmup, self.args.steps, self.args.batch_size, self.synchronize)

    def fit_ffcv(self) -> Dict[str, float]:
        from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

        run = self._run()
        data = FFCVImageNetDataModule(
            root=str(self.data_root),
            batch_size=self.args.batch_size,
            num_workers=self.args.workers,
            train_res=self.args.image_size,
            val_res=self.args.image_size,
        )
        self._trainer(run).fit(self.module, datamodule=data)
        return run.result()

    def fit_imagefolder(self) -> Dict[str, float]:
        from shufflenet_pl.data.imagefolder import ImageFolderDataModule

        run = self._run()
        data = ImageFolderDataModule(
            root=str(self.data_root),
            batch_size=self.args.batch_size,
            num_workers=self.args.workers,
            train_res=self.args.image_size,
            val_res=self.args.image_size,
        )
        self._trainer(run).fit(self.module, datamodule=data)
        return run.result()

    def model_only(self) -> Dict[str, float]:
        run = self._run()
        self._trainer(run).fit(self.module, train_dataloaders=DeviceBatches(self.images, self.targets, run.total))
        return run.result()

    def _bare_step(self, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        module, device_type = self.module, self.device.type
        cuda_graphs = self.args.compile and self.args.compile_mode in ("reduce-overhead", "max-autotune")

        def step() -> None:
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = module._train_loss(self.images, self.targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    def bare_loop(self) -> Dict[str, float]:
        run = self._run()
        self.module.to(self.device).train()
        step = self._bare_step(self.module.build_optimizer(self.device))
        for _ in range(run.total):
            run.step_start()
            step()
            run.step_end()
        return run.result()

    def reference_loop(self) -> Dict[str, float]:
        """torchvision's references/classification/train.py, reduced to its training loop."""
        import torchvision
        from torchvision import transforms as T

        from shufflenet_pl.data.common import IMAGENET_MEAN, IMAGENET_STD

        run = self._run()
        cuda = self.device.type == "cuda"
        model = getattr(torchvision.models, WIDTHS[self.args.width])(num_classes=10).to(self.device).train()
        transform = T.Compose(
            [
                T.RandomResizedCrop(self.args.image_size, antialias=True),
                T.RandomHorizontalFlip(),
                T.PILToTensor(),
                T.ConvertImageDtype(torch.float),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        dataset = torchvision.datasets.ImageFolder(str(self.data_root / "train"), transform=transform)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.args.batch_size,
            shuffle=True,
            num_workers=self.args.workers,
            pin_memory=cuda,
            drop_last=True,
        )
        criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
        scaler = torch.amp.GradScaler("cuda") if cuda else None
        while len(run.ends) < run.total:
            for image, target in loader:
                run.step_start()
                image, target = image.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
                with torch.autocast("cuda", enabled=cuda):
                    loss = criterion(model(image), target)
                optimizer.zero_grad()
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                run.step_end()
                if len(run.ends) == run.total:
                    break
        return run.result()

    def profile_gpu_busy(self, steps: int = 10) -> Dict[str, float]:
        """Kernel time / wall time of the bare step (CUDA): how busy the step keeps the GPU."""
        from torch.profiler import ProfilerActivity, profile

        self.module.to(self.device).train()
        step = self._bare_step(self.module.build_optimizer(self.device))
        for _ in range(3):
            step()
        self.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            self.synchronize()
            wall = time.perf_counter() - start
        kernel_us = sum(
            getattr(e, "self_device_time_total", 0.0)
            for e in prof.key_averages()
            if str(getattr(e, "device_type", "")).endswith("CUDA")
        )
        self.kernel_seconds_per_step = kernel_us / 1e6 / steps
        return {
            "gpu_busy_share": min(1.0, kernel_us / 1e6 / wall),
            "kernel_ms_per_step": kernel_us / 1e3 / steps,
            "profiled_step_ms": wall * 1e3 / steps,
        }


def run_benchmark(
    bench: Bench, candidates: List[str], rounds: int, progress: bool = True, threads: Optional[int] = None
) -> Dict[str, List[Dict[str, float]]]:
    """Every candidate once per round, the order reversed every other round; each starts with
    ``threads`` torch threads (FFCV's loader changes the count to its worker count while it runs)."""
    from tqdm.auto import tqdm

    samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in candidates}
    with tqdm(total=rounds * len(candidates), disable=not progress, unit="run", file=sys.stderr) as bar:
        for round_index in range(rounds):
            for name in candidates if round_index % 2 == 0 else candidates[::-1]:
                bar.set_description(name)
                if threads is not None:
                    torch.set_num_threads(threads)
                samples[name].append(getattr(bench, name)())
                bar.update()
    return samples


def summarize(samples: Dict[str, List[Dict[str, float]]]) -> Dict[str, Dict[str, Any]]:
    return {
        name: {
            "images_per_s": median([s["images_per_s"] for s in runs]),
            "between_steps_share": median([s["between_steps_share"] for s in runs]),
            "samples": runs,
        }
        for name, runs in samples.items()
    }


def verdicts(report: Dict[str, Any]) -> List[str]:
    """Plain sentences: the goals' ratios and whether the loader is the bottleneck."""
    c = report["candidates"]
    lines = []

    def rate(name: str) -> float:
        return c[name]["images_per_s"] if name in c else math.nan

    overhead = rate("model_only") / rate("bare_loop")
    if math.isfinite(overhead):
        lines.append(
            f"Lightning's overhead: fit on device-resident batches runs at {overhead:.2f}x the bare loop "
            f"(goal >= 0.95x: {'met' if overhead >= 0.95 else 'not met'})."
        )
    vs_reference = rate("fit_ffcv") / rate("reference_loop")
    if math.isfinite(vs_reference):
        lines.append(
            f"fit with FFCV runs at {vs_reference:.2f}x torchvision's reference loop "
            f"(goal >= 1.5x: {'met' if vs_reference >= 1.5 else 'not met'})."
        )
    for name in ("fit_ffcv", "fit_imagefolder"):
        share = rate(name) / rate("model_only")
        if not math.isfinite(share):
            continue
        wait = c[name]["between_steps_share"]
        if share < _BOTTLENECK_SHARE and wait >= _WAIT_SHARE:
            lines.append(
                f"The loader is the bottleneck of {_LABELS[name]}: it reaches {share:.0%} of the model-only rate "
                f"({1 - share:.0%} lost); the step waits for data {wait:.0%} of the wall time."
            )
        elif share < _BOTTLENECK_SHARE:
            lines.append(
                f"{_LABELS[name]} reaches {share:.0%} of the model-only rate ({1 - share:.0%} lost) although the step "
                f"waits for data only {wait:.0%} of the time: the loader's work slows the step itself (it competes "
                f"for the same cores or host thread)."
            )
        else:
            lines.append(f"The loader keeps up in {_LABELS[name]}: {share:.0%} of the model-only rate.")
    if report["device_type"] == "cpu":
        lines.append(
            "On a CPU the loader's workers and the model share the same cores: the model-only rate is the "
            "model alone on all of them, not a rate the loader could reach without taking cores from it."
        )
    return lines


def format_report(report: Dict[str, Any]) -> str:
    c = report["candidates"]
    ceiling = c.get("model_only", {}).get("images_per_s", math.nan)
    reference = c.get("reference_loop", {}).get("images_per_s", math.nan)
    rows = [
        [
            _LABELS[name],
            f"{v['images_per_s']:,.1f}",
            f"{v['images_per_s'] / ceiling:.2f}x",
            f"{v['images_per_s'] / reference:.2f}x",
            f"{v['between_steps_share']:.0%}",
        ]
        for name, v in c.items()
    ]
    table = format_table(["candidate", "images/s", "/ model-only", "/ reference", "between steps"], rows)
    lines = [table]
    if report.get("gpu_busy_share") is not None:
        lines.append(
            f"GPU busy: {report['gpu_busy_share']:.0%} of a model-only step ({report['kernel_ms_per_step']:.2f} ms of "
            f"kernels in {report['profiled_step_ms']:.2f} ms); fit with FFCV: "
            f"{report.get('fit_gpu_busy_share', math.nan):.0%}."
        )
    return "\n".join(lines + verdicts(report))


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Steady-state training images/s of a real fit (FFCV and ImageFolder datamodules), the same module "
        "on "
        "device-resident batches (the ceiling) and in a bare loop, and torchvision's reference loop, on "
        "the same images; "
        "prints a table and says whether the loader is the bottleneck.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  shufflenet-pl bench-train --device cpu --quick --json runs/benchmarks/train_throughput.json\n"
        "  shufflenet-pl bench-train --device cuda --json benchmarks/results/h200/train_throughput.json\n"
        "defaults on CUDA: 1.0x, batch 256, 160 px, bf16-mixed, channels_last, compile with CUDA graphs "
        "(reduce-overhead);\n"
        "on a CPU: 1.0x, batch 32, 160 px, float32, channels_last, eager. torchvision's loop runs as its "
        "script does (NCHW). --quick: 0.5x, batch 16, 96 px, fewer steps.",
    )
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if visible, else CPU), cpu, cuda, cuda:N")
    parser.add_argument(
        "--quick", action="store_true", help="a small run (CI, a laptop): 0.5x, batch 16, 96 px, 6 timed steps"
    )
    parser.add_argument("--width", choices=list(WIDTHS), default=None, help="model width (default 1.0; --quick: 0.5)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per step (default: 256 on CUDA, 32 on CPU, 16 quick)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="training crop side (default 160; --quick: 96)")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per run (default: 50 on CUDA, 12 on CPU, 6 quick)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps first; compilation happens here (default: 20 on CUDA, 3 on CPU, 2 quick)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs per candidate, interleaved (default: 2)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers of every candidate (default: the usable CPUs less one)",
    )
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default=None,
        help="default: bf16-mixed on CUDA, 32-true on CPU",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the step (default: on CUDA only)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="our module in channels_last, as in the recipes (default: on)",
    )
    parser.add_argument(
        "--compile-mode", default=None, help="default: reduce-overhead (CUDA graphs) on CUDA, default on CPU"
    )
    parser.add_argument(
        "--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES), help="what to run (default: all)"
    )
    parser.add_argument(
        "--images-per-class", type=int, default=None, help="demo training images per class (default 100; --quick: 20)"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("runs/benchmarks/train_data"),
        help="where the demo images and .beton files are kept",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch at the start of every run (default: torch's choice)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the report (every sample) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _defaults(args: argparse.Namespace, device: torch.device) -> None:
    from shufflenet_pl.data.common import default_num_workers

    cuda = device.type == "cuda"

    def pick(value: Any, quick: Any, gpu: Any, cpu: Any) -> Any:
        return value if value is not None else quick if args.quick else gpu if cuda else cpu

    args.width = pick(args.width, "0.5", "1.0", "1.0")
    args.batch_size = pick(args.batch_size, 16, 256, 32)
    args.image_size = pick(args.image_size, 96, 160, 160)
    args.steps = pick(args.steps, 6, 50, 12)
    args.warmup = pick(args.warmup, 2, 20, 3)
    args.images_per_class = pick(args.images_per_class, 20, 100, 100)
    args.precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    args.compile = cuda if args.compile is None else args.compile
    args.compile_mode = args.compile_mode or ("reduce-overhead" if cuda and args.compile else "default")
    args.channels_last = True if args.channels_last is None else args.channels_last
    args.workers = default_num_workers() if args.workers is None else args.workers


def main(argv: Optional[List[str]] = None, prog: Optional[str] = "shufflenet-pl bench-train") -> None:
    """Command-line entry point (``shufflenet-pl bench-train`` or ``python benchmarks/train_throughput.py``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        _defaults(args, device)
        check_minimums(
            (
                ("--batch-size", args.batch_size, 1),
                ("--image-size", args.image_size, 32),
                ("--steps", args.steps, 2),
                ("--warmup", args.warmup, 1),
                ("--rounds", args.rounds, 1),
                ("--workers", args.workers, 1),
                ("--threads", args.threads, 1),
                ("--images-per-class", args.images_per_class, 1),
            )
        )
        if args.images_per_class * 10 < args.batch_size:
            raise ValueError(
                f"--images-per-class {args.images_per_class} gives fewer than one batch of {args.batch_size}"
            )
        if args.compile_mode in ("reduce-overhead", "max-autotune") and device.type != "cuda":
            raise ValueError(f"--compile-mode {args.compile_mode} captures CUDA graphs and needs --device cuda")
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    # Importing ffcv sets torch's thread count to 1 (and its loader to its worker count): pin the count
    # every candidate starts with, from before that import.
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    args.threads = threads
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one fit per run: no banners
    data_root = prepare_data(args.data_root, args.images_per_class, args.workers, progress=not args.no_progress)
    torch.set_num_threads(threads)
    print(
        f"# training throughput, {environment(device)['device']}: {WIDTHS[args.width]}, batch {args.batch_size}, "
        f"{args.image_size} px, {args.precision}, compile={args.compile} ({args.compile_mode}), "
        f"{args.workers} loader workers; "
        f"median of {args.rounds} interleaved runs of {args.warmup} + {args.steps} steps",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        bench = Bench(args, device, data_root, Path(scratch))
        samples = run_benchmark(
            bench, list(args.candidates), args.rounds, progress=not args.no_progress, threads=threads
        )
        busy: Dict[str, Any] = {}
        if device.type == "cuda":
            try:  # the measured rates are kept even if the profiler fails
                busy = bench.profile_gpu_busy()
            except Exception as err:  # noqa: BLE001 - reported in the output and the JSON
                busy = {"gpu_busy_share": None, "gpu_busy_error": f"{type(err).__name__}: {err}"}
                print(f"warning: could not profile the GPU-busy share: {busy['gpu_busy_error']}", file=sys.stderr)
    torch.set_num_threads(threads)
    report: Dict[str, Any] = {
        "environment": environment(device),
        "device_type": device.type,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("json", "no_progress")
        },
        "candidates": summarize(samples),
    }
    c = report["candidates"]
    for key, name in (
        ("fit_images_per_s", "fit_ffcv"),
        ("fit_imagefolder_images_per_s", "fit_imagefolder"),
        ("model_only_images_per_s", "model_only"),
        ("bare_loop_images_per_s", "bare_loop"),
        ("reference_loop_images_per_s", "reference_loop"),
    ):
        report[key] = c[name]["images_per_s"] if name in c else None
    report["data_wait_share"] = c["fit_ffcv"]["between_steps_share"] if "fit_ffcv" in c else None
    report.update(busy)
    if busy.get("gpu_busy_share") is not None and report["fit_images_per_s"]:
        report["fit_gpu_busy_share"] = min(
            1.0, busy["kernel_ms_per_step"] / 1e3 * report["fit_images_per_s"] / args.batch_size
        )
    report["verdicts"] = verdicts(report)
    print(format_report(report))
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main(prog="python benchmarks/train_throughput.py")
