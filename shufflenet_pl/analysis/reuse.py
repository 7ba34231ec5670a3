"""Feature reuse in ShuffleNet V2, traced from the code (Ma et al., ECCV 2018, section 3, "Analysis of
Network Accuracy", Fig. 4).

The paper argues that half of each basic unit's channels pass through it unchanged and join the next
unit, a DenseNet-like feature reuse whose amount decays with distance: "the number of directly-connected
channels between i-th building block and (i+j)-th building block is r^j·c", r = 0.5 (Fig. 4(b)).

Here that matrix is not evaluated from the formula but traced through the model's real forward:
:func:`trace_reuse` feeds every unit (:class:`~shufflenet_pl.models.InvertedResidual`) a tagged input
(each channel holds its own random, strictly negative values) and records which output channels are
bit-exact copies of which input channels; the split, identity branch, concat and shuffle are whatever
the model's code does. Every branch ends in a ReLU, so a computed channel is never negative and can
never be mistaken for a copy, whatever the weights. Composing the per-unit maps gives

* :meth:`ReuseTrace.count_matrix` — Fig. 4(b): ``M[s, l]`` = how many of block ``l``'s output
  channels are block ``s``'s output channels carried through blocks ``s+1..l`` unchanged (equivalently,
  how many of block ``s``'s outputs the block after ``l`` receives); :func:`reuse_formula` is the
  paper's r^j·c for comparison, and
* :func:`empirical_reuse` — beyond the paper, a Fig. 4(a)-style matrix for trained weights: the mean
  absolute weight of block ``l``'s first 1x1 conv (the one that reads the block's input) over the input
  channels that were computed by block ``s`` (row 0: the stem, conv1 + maxpool). DenseNet's Fig. 4(a)
  (Huang et al., CondenseNet, CVPR 2018) is the same statistic over dense connections.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..models import InvertedResidual

__all__ = [
    "REUSE_RATIO",
    "ReuseTrace",
    "UnitTrace",
    "distance_profile",
    "empirical_reuse",
    "format_matrix",
    "reuse_formula",
    "trace_reuse",
]

#: The paper's r = (c - c') / c with c' = c / 2: the share of a unit's channels that pass through it.
REUSE_RATIO = 0.5


@dataclass
class UnitTrace:
    """What one unit does to channel identities, as observed in its forward.

    Attributes:
        name: the unit's module name, e.g. ``"stage3.2"``.
        stage: the name of the module that holds it, e.g. ``"stage3"``.
        in_channels: channels of its input.
        out_channels: channels of its output.
        copied_from: for each output channel, the input channel it is an unchanged copy of, or ``None``
            where the unit computed it.
        conv_name: the first 1x1 convolution that reads the unit's input, e.g. ``"stage3.2.branch2.0"``.
        conv_inputs: for each input channel of that convolution, the unit input channel it reads.
    """

    name: str
    stage: str
    in_channels: int
    out_channels: int
    copied_from: List[Optional[int]]
    conv_name: str
    conv_inputs: List[int]

    @property
    def label(self) -> str:
        """Short label ``"3.2"`` for ``stage3.2``, as the paper numbers stages."""
        return f"{self.stage.removeprefix('stage')}.{self.name.rsplit('.', 1)[-1]}"


@dataclass
class ReuseTrace:
    """The traced channel flow through all units of a model, in the order its forward calls them.

    Attributes:
        units: one :class:`UnitTrace` per unit, in call order.
        stem_channels: channels entering the first unit (the output of conv1 + maxpool).
    """

    units: List[UnitTrace]
    stem_channels: int

    @property
    def labels(self) -> List[str]:
        return [unit.label for unit in self.units]

    def carried(self) -> List[Dict[int, np.ndarray]]:
        """For each unit ``l``: source unit ``s`` -> the positions of ``l``'s output channels that are
        ``s``'s output channels passed on unchanged (``s == l``: all of them)."""
        result: List[Dict[int, np.ndarray]] = []
        for index, unit in enumerate(self.units):
            positions: Dict[int, np.ndarray] = {index: np.arange(unit.out_channels)}
            if index > 0:
                copied = unit.copied_from
                for source, previous in result[index - 1].items():
                    # Output channel m carries s's output if it copies an input channel that did.
                    in_previous = np.zeros(self.units[index - 1].out_channels, dtype=bool)
                    in_previous[previous] = True
                    mask = [k is not None and bool(in_previous[k]) for k in copied]
                    positions[source] = np.flatnonzero(mask)
            result.append(positions)
        return result

    def count_matrix(self) -> np.ndarray:
        """Fig. 4(b) as channel counts: ``M[s, l]`` (rows source ``s``, columns target ``l``) = how many
        of block ``l``'s output channels are block ``s``'s outputs passed through unchanged; zero for
        ``s > l``."""
        size = len(self.units)
        matrix = np.zeros((size, size), dtype=np.int64)
        for target, positions in enumerate(self.carried()):
            for source, carried in positions.items():
                matrix[source, target] = len(carried)
        return matrix

    def output_origins(self) -> List[np.ndarray]:
        """For each unit ``l``: for each of its output channels, the index of the unit that computed it.
        A channel is computed by the earliest unit it is carried from."""
        origins = []
        for positions, unit in zip(self.carried(), self.units):
            origin = np.full(unit.out_channels, -1, dtype=np.int64)
            for source in sorted(positions, reverse=True):  # earliest source written last, so it wins
                origin[positions[source]] = source
            origins.append(origin)
        return origins

    def input_origins(self) -> List[np.ndarray]:
        """For each unit ``l``: for each of its input channels, the index of the unit that computed it
        (``-1`` for the stem, conv1 + maxpool)."""
        return [np.full(self.stem_channels, -1, dtype=np.int64), *self.output_origins()[:-1]]


def _find_units(model: nn.Module) -> Dict[nn.Module, str]:
    units = {module: name for name, module in model.named_modules() if isinstance(module, InvertedResidual)}
    if not units:
        raise ValueError(f"{type(model).__name__} has no InvertedResidual units to trace")
    return units


def _channel_keys(x: Tensor) -> List[bytes]:
    """One hashable fingerprint per channel of ``(N, C, H, W)``: the channel's exact bytes."""
    # float64 holds every float16/bfloat16/float32 value exactly, and numpy has no bfloat16.
    per_channel = x.detach().transpose(0, 1).reshape(x.shape[1], -1).cpu().double().contiguous().numpy()
    return [row.tobytes() for row in per_channel]


def _match_channels(x: Tensor, tags: Tensor) -> List[Optional[int]]:
    """For each channel of ``x``, the channel of ``tags`` it equals bit for bit, or ``None``."""
    if x.dim() != 4 or x.shape[0] != tags.shape[0] or x.shape[2:] != tags.shape[2:]:
        return [None] * (x.shape[1] if x.dim() > 1 else 0)
    index = {key: channel for channel, key in enumerate(_channel_keys(tags))}
    return [index.get(key) for key in _channel_keys(x)]


def _random_like(x: Tensor, generator: torch.Generator, taken: Optional[Dict[bytes, int]] = None) -> Tensor:
    """A tag tensor shaped like ``x`` (same dtype, device and memory format): every channel its own
    random values in (-2, -1], different from every other channel and from the keys in ``taken``.
    Every branch of a unit ends in a ReLU, so a computed channel is never negative and can never pass
    for a tag."""
    taken = taken if taken is not None else {}
    for _ in range(1000):  # low precision (bfloat16: 128 values in [1, 2)) on tiny maps can repeat a channel
        tag = torch.empty_like(x)
        tag.copy_(-1.0 - torch.rand(x.shape, generator=generator))
        keys = _channel_keys(tag)
        if len(set(keys)) == len(keys) and not any(key in taken for key in keys):
            return tag
    raise ValueError(
        f"cannot draw {x.shape[1]} distinct {x.dtype} tag channels of {tuple(x.shape[2:])} pixels; "
        "trace with a larger image_size or batch_size"
    )


def _unit_call_order(model: nn.Module, units: Dict[nn.Module, str], images: Tensor) -> List[nn.Module]:
    """Pass 1: run the model plainly and check that each unit receives what the previous one returned,
    so that per-unit channel maps can be chained."""
    calls: List[Tuple[nn.Module, Tensor, Tensor]] = []

    def record(unit: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
        calls.append((unit, args[0].clone(), output.clone()))

    handles = [unit.register_forward_hook(record) for unit in units]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    if len(calls) != len(units) or len({id(unit) for unit, _, _ in calls}) != len(calls):
        raise RuntimeError("every unit must be called exactly once per forward to be traced")
    for (previous, _, previous_output), (unit, unit_input, _) in zip(calls, calls[1:]):
        if not torch.equal(previous_output, unit_input):
            raise RuntimeError(
                f"{units[unit]} does not receive the output of {units[previous]}; cannot chain the trace"
            )
    return [unit for unit, _, _ in calls]


def _trace_units(
    model: nn.Module, units: Dict[nn.Module, str], order: List[nn.Module], images: Tensor, generator: torch.Generator
) -> List[UnitTrace]:
    """Pass 2: replace each unit's input with tags; its output channels equal to a tag are copies, and
    its first 1x1 conv whose input channels are all tags reads the unit's input."""
    conv_owner = {
        conv: unit
        for unit in units
        for conv in unit.modules()
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1
    }
    tags: Dict[nn.Module, Tensor] = {}
    outputs: Dict[nn.Module, Tensor] = {}
    conv_inputs: Dict[nn.Module, List[Tuple[nn.Module, Tensor]]] = {unit: [] for unit in units}

    def tag_input(unit: nn.Module, args: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        tag = _random_like(args[0], generator)
        tags[unit] = tag.clone()  # kept apart: the unit could modify its input in place
        return (tag, *args[1:])

    def record_output(unit: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
        outputs[unit] = output.clone()

    def record_conv_input(conv: nn.Module, args: Tuple[Tensor, ...]) -> None:
        conv_inputs[conv_owner[conv]].append((conv, args[0].clone()))

    handles = [unit.register_forward_pre_hook(tag_input) for unit in units]
    handles += [unit.register_forward_hook(record_output) for unit in units]
    handles += [conv.register_forward_pre_hook(record_conv_input) for conv in conv_owner]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()

    names = {module: name for name, module in model.named_modules()}
    traces = []
    for unit in order:
        name, tag, output = units[unit], tags[unit], outputs[unit]
        first_conv = None
        for conv, conv_input in conv_inputs[unit]:
            read = _match_channels(conv_input, tag)
            if read and all(k is not None for k in read):
                first_conv = (names[conv], [int(k) for k in read])
                break
        if first_conv is None:
            raise ValueError(f"{name} calls no 1x1 convolution that reads its input; cannot attribute weights")
        traces.append(
            UnitTrace(
                name=name,
                stage=name.rsplit(".", 1)[0] if "." in name else "",
                in_channels=tag.shape[1],
                out_channels=output.shape[1],
                copied_from=_match_channels(output, tag),
                conv_name=first_conv[0],
                conv_inputs=first_conv[1],
            )
        )
    return traces


def _check_stage_forward(model: nn.Module, trace: "ReuseTrace", images: Tensor, generator: torch.Generator) -> None:
    """Pass 3: with no hook on any unit, so that each stage runs its own (possibly fused) forward, tag the
    output of every branch inside the units and read where the tags arrive: at every unit's first 1x1
    conv and at every stage output. The origins must be the ones chained from the per-unit maps."""
    modules = dict(model.named_modules())
    origin_of: Dict[bytes, int] = {}
    seen: Dict[str, Tensor] = {}

    def tag_branch(index: int) -> Callable[[nn.Module, Tuple[Tensor, ...], Tensor], Tensor]:
        def hook(_: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> Tensor:
            tag = _random_like(output, generator, taken=origin_of)  # unique across all branches
            origin_of.update((key, index) for key in _channel_keys(tag))
            return tag

        return hook

    def record(name: str, output: bool) -> Callable:
        def hook(_: nn.Module, args: Tuple[Tensor, ...], *result: Tensor) -> None:
            seen.setdefault(name, (result[0] if output else args[0]).clone())

        return hook

    handles = []
    stages = {unit.stage: index for index, unit in enumerate(trace.units) if unit.stage}  # stage -> its last unit
    try:
        for index, unit in enumerate(trace.units):
            for branch in modules[unit.name].children():
                if any(True for _ in branch.parameters()):  # a parameter-free child would be an identity
                    handles.append(branch.register_forward_hook(tag_branch(index)))
            handles.append(modules[unit.conv_name].register_forward_pre_hook(record(unit.conv_name, output=False)))
        for stage in stages:
            handles.append(modules[stage].register_forward_hook(record(stage, output=True)))
        model(images)
    finally:
        for handle in handles:
            handle.remove()

    def origins(name: str) -> List[int]:
        return [origin_of.get(key, -1) for key in _channel_keys(seen[name])]  # untagged: from the stem

    inputs, outputs = trace.input_origins(), trace.output_origins()
    for index, unit in enumerate(trace.units):
        expected = inputs[index][np.asarray(unit.conv_inputs)].tolist()
        if origins(unit.conv_name) != expected:
            raise RuntimeError(
                f"{unit.conv_name} reads other channels in the model's own forward than unit by unit; "
                f"cannot trust the trace"
            )
    for stage, last in stages.items():
        if origins(stage) != outputs[last].tolist():
            raise RuntimeError(
                f"{stage} returns other channels in its own forward than unit by unit; cannot trust the trace"
            )


@torch.no_grad()
def trace_reuse(model: nn.Module, image_size: int = 64, batch_size: int = 2, seed: int = 0) -> ReuseTrace:
    """Trace channel identities through every unit of ``model`` by running its real forward.

    Three forward passes, in eval mode (BatchNorm statistics are not touched; the mode is restored):

    1. a plain one, hooked, that checks each unit receives exactly what the previous unit returned,
       so that the per-unit maps can be chained;
    2. a tagged one: a pre-hook replaces each unit's input with a tag tensor (every channel its own
       random values in (-2, -1]), and hooks record the unit's output and the input of every 1x1
       convolution it calls. Output channels equal to a tag channel are unchanged copies;
    3. a check of the stages' own forward, which may fuse concat + shuffle + split across units and
       does so only when no unit is hooked: tags on the branch outputs must reach every unit's first
       1x1 conv and every stage output where the chained per-unit maps say they do.

    Args:
        model: a :class:`~shufflenet_pl.models.ShuffleNetV2` (any width, any weights).
        image_size: side of the random input images; the result does not depend on it.
        batch_size: images per pass.
        seed: seed of the random input and tags.

    Raises:
        ValueError: the model has no units, or a unit has no 1x1 convolution reading its input.
        RuntimeError: the forward does not chain the units one after another, or the stages' own
            forward moves channels differently from the units run one by one.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (five stride-2 layers), got {image_size}")
    units = _find_units(model)
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(parameter)
    was_training = model.training
    model.eval()
    try:
        order = _unit_call_order(model, units, images)
        traces = _trace_units(model, units, order, images, generator)
        trace = ReuseTrace(units=traces, stem_channels=traces[0].in_channels)
        _check_stage_forward(model, trace, images, generator)
    finally:
        model.train(was_training)
    return trace


def reuse_formula(trace: ReuseTrace, ratio: float = REUSE_RATIO) -> np.ndarray:
    """The paper's Fig. 4(b) for the same blocks: ``r^j·c`` for blocks ``j = l - s >= 0`` apart in the
    same stage (``c`` its width), zero otherwise (a down-sampling unit convolves all its input)."""
    size = len(trace.units)
    matrix = np.zeros((size, size), dtype=np.float64)
    for s, source in enumerate(trace.units):
        for l in range(s, size):
            target = trace.units[l]
            if target.stage == source.stage:
                matrix[s, l] = ratio ** (l - s) * source.out_channels
    return matrix


def empirical_reuse(model: nn.Module, trace: Optional[ReuseTrace] = None) -> np.ndarray:
    """Fig. 4(a) for ShuffleNet V2's weights: ``E[s + 1, l]`` = mean absolute weight of block ``l``'s
    first 1x1 conv over its input channels computed by block ``s`` (row 0: the stem); NaN where block
    ``l`` reads nothing computed by ``s``.

    Args:
        model: the model whose weights are read (a checkpoint or torchvision's weights loaded).
        trace: its :func:`trace_reuse`; traced here when not given.
    """
    trace = trace if trace is not None else trace_reuse(model)
    modules = dict(model.named_modules())
    size = len(trace.units)
    matrix = np.full((size + 1, size), np.nan, dtype=np.float64)
    for target, (unit, origins) in enumerate(zip(trace.units, trace.input_origins())):
        weight = modules[unit.conv_name].weight.detach().float().cpu()
        per_input = weight.abs().mean(dim=(0, 2, 3)).numpy()  # mean |w| of each input channel
        channel_origin = origins[np.asarray(unit.conv_inputs)]
        for source in np.unique(channel_origin):
            matrix[source + 1, target] = per_input[channel_origin == source].mean()
    return matrix


def distance_profile(trace: ReuseTrace, empirical: np.ndarray) -> Dict[int, float]:
    """Mean of ``E[s, l] / E[l - 1, l]`` over stride-1 blocks ``l`` and earlier blocks ``s`` of the same
    stage, by distance ``j = l - s``: how the weight per channel falls off with distance (1 at j = 1)."""
    ratios: Dict[int, List[float]] = {}
    for l, target in enumerate(trace.units):
        if l == 0 or trace.units[l - 1].stage != target.stage:
            continue
        nearest = empirical[l, l]  # row l is block l - 1 (row 0 is the stem)
        for s in range(l):
            if trace.units[s].stage == target.stage and not math.isnan(empirical[s + 1, l]) and nearest > 0:
                ratios.setdefault(l - s, []).append(float(empirical[s + 1, l] / nearest))
    return {j: float(np.mean(values)) for j, values in sorted(ratios.items())}


def format_matrix(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], fmt: str = "{:d}") -> str:
    """A plain-text matrix with labelled rows and columns; zeros and NaN print as ``.``."""
    cells = [
        [("." if (isinstance(v, float) and math.isnan(v)) or v == 0 else fmt.format(v)) for v in row]
        for row in matrix.tolist()
    ]
    width = max([len(c) for row in cells for c in row] + [len(c) for c in col_labels])
    label_width = max(len(r) for r in row_labels)
    lines = [" " * label_width + " " + " ".join(c.rjust(width) for c in col_labels)]
    lines += [
        label.rjust(label_width) + " " + " ".join(c.rjust(width) for c in row) for label, row in zip(row_labels, cells)
    ]
    return "\n".join(lines)
