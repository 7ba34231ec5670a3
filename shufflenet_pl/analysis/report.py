"""A model report: the paper's Table 5 (ShuffleNet V2 architecture) regenerated from the code, extended
with what a user needs to pick a width: parameters, FLOPs, activation memory and throughput measured on
this device — one table, per width.

* Layers and shapes come from hooks on a real forward, not from the builder's tables.
* FLOPs are multiply-adds of convolutions and the classifier as ``torch.utils.flop_counter`` counts them
  (it reports 2 FLOPs per multiply-add); the paper's "MFLOPs" (Table 8: 41/146/299/591) are the same unit.
* Activation memory is what autograd keeps for the backward pass of one image in training mode:
  every tensor saved by a forward, each storage counted once, parameters excluded. It is what grows
  with the batch size when you train.
* Throughput is images per second, median over timed iterations after warm-up, on the chosen device;
  the widths take turns step by step, so load that comes and goes affects them alike.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import InvertedResidual, build_model, list_models
from .timing import median, time_interleaved

__all__ = [
    "LayerRow",
    "WidthReport",
    "activation_bytes",
    "build_reports",
    "count_multiply_adds",
    "format_report",
    "layer_table",
    "measure_throughput",
    "resolve_model_name",
    "width_label",
]


@dataclass
class LayerRow:
    """One row of Table 5.

    Attributes:
        layer: module name in the code (``conv1``, ``maxpool``, ``stage2``, ..., ``fc``); empty for the
            repeated units of a stage.
        output_size: ``"28x28"``, or ``""`` for the classifier.
        kernel: ``"3x3"`` or ``""`` (the units hold several kernels).
        stride: the layer's stride, ``None`` when it has none.
        repeat: how many times the row repeats.
        channels: output channels (classes for ``fc``).
    """

    layer: str
    output_size: str
    kernel: str
    stride: Optional[int]
    repeat: int
    channels: int


@dataclass
class WidthReport:
    """Everything the report says about one width."""

    name: str
    layers: List[LayerRow]
    parameters: int
    multiply_adds: int
    activation_bytes: int
    throughput: Dict[str, float] = field(default_factory=dict)


def width_label(name: str) -> str:
    """``"shufflenet_v2_x1_0"`` -> ``"1.0x"``."""
    return name.rsplit("_x", 1)[-1].replace("_", ".") + "x" if "_x" in name else name


def resolve_model_name(name: str) -> str:
    """Accept a registered name or a short one: ``x1_0``, ``1.0x``, ``1.0``, ``1``."""
    if name in list_models():
        return name
    by_label = {width_label(full): full for full in list_models()}
    short = name.lower().removeprefix("shufflenet_v2_").removeprefix("x").removesuffix("x").replace("_", ".")
    for candidate in (short, f"{short}.0"):
        if f"{candidate}x" in by_label:
            return by_label[f"{candidate}x"]
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())} (or 0.5x, 1.0x, 1.5x, 2.0x)")


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape[2:]) if len(shape) == 4 else ""


def _pair(value: Union[int, Tuple[int, ...]]) -> str:
    value = value if isinstance(value, tuple) else (value, value)
    return "x".join(str(v) for v in value)


@torch.no_grad()
def layer_table(model: nn.Module, image_size: int = 224) -> List[LayerRow]:
    """Table 5 for ``model``: run one image through it and record each top-level layer's output.

    Units of a stage are grouped into rows of equal stride (the paper's "stride 2, repeat 1" then
    "stride 1, repeat 3"); a reduction between the last feature map and the classifier is the global pool.
    """
    records: List[Tuple[str, nn.Module, Tensor, Tensor]] = []
    handles = []
    named = [
        (name, module)
        for name, module in model.named_modules()
        if name and (name.count(".") == 0 or isinstance(module, InvertedResidual))
    ]

    def hook(name: str, module: nn.Module) -> Callable:
        def record(_: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
            records.append((name, module, args[0], output))

        return record

    for name, module in named:
        if isinstance(module, nn.Sequential) and any(isinstance(m, InvertedResidual) for m in module):
            continue  # a stage: its units are recorded one by one
        handles.append(module.register_forward_hook(hook(name, module)))
    was_training = model.training
    model.eval()
    try:
        images = torch.zeros(
            1, 3, image_size, image_size, dtype=next(model.parameters()).dtype, device=next(model.parameters()).device
        )
        model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    rows = [LayerRow("image", _size(images.shape), "", None, 1, 3)]
    previous_output: Optional[Tensor] = None
    current_stage: Optional[str] = None
    for name, module, inputs, output in records:
        if isinstance(module, InvertedResidual):
            stage = name.rsplit(".", 1)[0]
            last = rows[-1]
            if stage == current_stage and last.stride == module.stride and last.output_size == _size(output.shape):
                last.repeat += 1
            else:
                layer = stage if stage != current_stage else ""
                rows.append(LayerRow(layer, _size(output.shape), "", module.stride, 1, output.shape[1]))
            current_stage = stage
            previous_output = output
            continue
        current_stage = None
        if isinstance(module, nn.Linear):
            if previous_output is not None and previous_output.dim() == 4 and inputs.dim() == 2:
                kernel = _size(previous_output.shape)
                rows.append(LayerRow("global pool", "1x1", kernel, None, 1, inputs.shape[1]))
            rows.append(LayerRow(name, "", "", None, 1, output.shape[1]))
        else:
            layer = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))), None)
            kernel = _pair(layer.kernel_size) if layer is not None else ""
            stride = layer.stride if layer is not None else None
            stride = stride[0] if isinstance(stride, tuple) else stride
            rows.append(LayerRow(name, _size(output.shape), kernel, stride, 1, output.shape[1]))
        previous_output = output
    return rows


@torch.no_grad()
def count_multiply_adds(model: nn.Module, image_size: int = 224, in_channels: int = 3) -> int:
    """Multiply-adds of one ``image_size`` image with ``in_channels`` channels (``torch.utils.flop_counter``
    FLOPs / 2), counted in eval mode."""
    was_training = model.training
    model.eval()
    parameter = next(model.parameters())
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, in_channels, image_size, image_size, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def activation_bytes(model: nn.Module, image_size: int = 224, batch_size: int = 1) -> int:
    """Bytes autograd saves for the backward pass of a training-mode forward of ``batch_size`` images:
    each saved storage counted once, parameters and buffers excluded."""
    parameter = next(model.parameters())
    exclude = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: Dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training = model.training
    model.train()
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    try:
        images = torch.zeros(batch_size, 3, image_size, image_size, dtype=parameter.dtype, device=parameter.device)
        images.normal_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(images)
    finally:
        with torch.no_grad():  # the forward moved the BatchNorm statistics; put them back
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
        model.train(was_training)
    return sum(saved.values())


def _make_step(
    model: nn.Module,
    batch_size: int,
    image_size: int,
    mode: str,
    device: torch.device,
    channels_last: bool,
    autocast_dtype: Optional[torch.dtype],
) -> Callable[[], None]:
    """One inference or training step of ``model`` on fixed random images, ready to be timed."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=memory_format)
    num_classes = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if mode == "train" else None

    def step() -> None:
        model.train(optimizer is not None)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if optimizer is None:
                with torch.inference_mode():
                    model(images)
            else:
                loss = nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def measure_throughput(
    models: Mapping[str, nn.Module],
    batch_size: int = 32,
    image_size: int = 224,
    mode: str = "infer",
    iterations: int = 10,
    warmup: int = 3,
    device: Optional[torch.device] = None,
    channels_last: bool = False,
    autocast_dtype: Optional[torch.dtype] = None,
    progress: Optional[Callable[[], None]] = None,
    clock: str = "wall",
) -> Dict[str, float]:
    """Images per second of each model: ``batch_size`` / the median time of ``iterations`` timed steps.

    The models take turns (:func:`.timing.time_interleaved`), so that a machine that gets busier or
    quieter during the measurement (shared cores, GPU clocks) affects every model alike and the ratios
    between them stay fair.

    Args:
        models: name -> network; each is moved to ``device`` (and channels_last) in place.
        batch_size: images per step.
        image_size: side of the square images.
        mode: ``"infer"`` (eval, ``inference_mode``) or ``"train"`` (forward, cross-entropy backward and
            an SGD step; the weights change).
        iterations: timed steps per model.
        warmup: untimed steps per model first (allocator, cuDNN autotuning, thread pools).
        device: where to run; each model's own device when ``None``.
        channels_last: convert models and inputs to channels_last.
        autocast_dtype: run under ``torch.autocast`` with this dtype (``torch.bfloat16``, ``torch.float16``).
        progress: called after every timed step (e.g. a progress bar's ``update``).
        clock: ``"wall"``, or ``"process"`` (this process's CPU seconds: steadier CPU numbers on a shared
            machine, with one thread, ``torch.set_num_threads(1)``); see :func:`.timing.time_interleaved`.
    """
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError(
            f"need batch_size >= 1, iterations >= 1, warmup >= 0; got {batch_size}, {iterations}, {warmup}"
        )
    steps = {
        name: _make_step(
            model,
            batch_size,
            image_size,
            mode,
            device or next(model.parameters()).device,
            channels_last,
            autocast_dtype,
        )
        for name, model in models.items()
    }
    # Each step waits for its CUDA work itself, so the timer needs no synchronizer of its own.
    times = time_interleaved(steps, iterations, warmup, synchronize=lambda: None, clock=clock, progress=progress)
    for model in models.values():
        model.eval()
    return {name: batch_size / median(values) for name, values in times.items()}


def format_report(reports: Sequence[WidthReport], image_size: int, setting: str, fmt: str = "markdown") -> str:
    """One table: Table 5's layers (per width: output channels), then parameters, FLOPs, activation
    memory and the measured throughputs.

    Args:
        reports: one :class:`WidthReport` per width, same image size.
        image_size: the input side used for shapes, FLOPs and memory.
        setting: how throughput was measured (device, batch, precision), for the row labels.
        fmt: ``"markdown"`` (GitHub table) or ``"csv"``.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"format must be 'markdown' or 'csv', got {fmt!r}")
    header = ["layer", "output size", "kernel", "stride", "repeat", *[width_label(r.name) for r in reports]]
    body: List[List[str]] = []
    first = reports[0].layers
    for index, row in enumerate(first):
        channels = [str(r.layers[index].channels) if index < len(r.layers) else "?" for r in reports]
        stride = "" if row.stride is None else str(row.stride)
        body.append([row.layer, row.output_size, row.kernel, stride, str(row.repeat), *channels])

    def summary(label: str, values: List[str]) -> None:
        body.append([label, "", "", "", "", *values])

    summary("parameters", [f"{r.parameters:,}" for r in reports])
    summary(f"MFLOPs (multiply-adds, {image_size} px)", [f"{r.multiply_adds / 1e6:.1f}" for r in reports])
    summary("activation memory (MiB/image, training)", [f"{r.activation_bytes / 2**20:.1f}" for r in reports])
    for mode in reports[0].throughput:
        label = {"infer": "inference", "train": "training step"}.get(mode, mode)
        summary(f"{label} (images/s, {setting})", [f"{r.throughput[mode]:,.0f}" for r in reports])

    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue().rstrip("\n")
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = [False] * 3 + [True] * (len(header) - 3)

    def render(cells: List[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if n else "-" * w for w, n in zip(widths, numeric)) + " |"
    return "\n".join([render(header), rule, *[render(line) for line in body]])


def build_reports(
    names: Sequence[str],
    image_size: int = 224,
    throughput_modes: Sequence[str] = ("infer",),
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    iterations: int = 10,
    warmup: int = 3,
    channels_last: bool = False,
    autocast_dtype: Optional[torch.dtype] = None,
    num_classes: int = 1000,
    progress: Optional[Callable[[], None]] = None,
    clock: str = "wall",
) -> List[WidthReport]:
    """Everything :func:`format_report` prints, for the registered models ``names``; throughput is
    measured with the models taking turns (:func:`measure_throughput`).

    Args:
        names: registered model names (:func:`~shufflenet_pl.models.list_models`).
        image_size: input side for shapes, FLOPs, memory and speed.
        throughput_modes: any of ``"infer"``, ``"train"``; empty to skip timing.
        batch_size, device, iterations, warmup, channels_last, autocast_dtype, progress, clock: as in
            :func:`measure_throughput`.
        num_classes: classifier size.
    """
    torch.manual_seed(0)
    models = {name: build_model(name, num_classes=num_classes) for name in names}
    reports = [
        WidthReport(
            name=name,
            layers=layer_table(model, image_size),
            parameters=sum(p.numel() for p in model.parameters()),
            multiply_adds=count_multiply_adds(model, image_size),
            activation_bytes=activation_bytes(model, image_size),
        )
        for name, model in models.items()
    ]
    for mode in throughput_modes:
        speeds = measure_throughput(
            models,
            batch_size,
            image_size,
            mode,
            iterations,
            warmup,
            device,
            channels_last,
            autocast_dtype,
            progress,
            clock,
        )
        for report in reports:
            report.throughput[mode] = speeds[report.name]
    return reports
