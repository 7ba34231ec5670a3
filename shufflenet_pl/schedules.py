"""Pure schedules: functions of (step) or (epoch) with no state, so that a resumed run recomputes
exactly what an uninterrupted one would have used."""

import math
from typing import Literal, Sequence

__all__ = ["LRSchedule", "lr_factor", "progressive_resolution"]

LRSchedule = Literal["cosine", "linear", "step", "constant"]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: LRSchedule = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_start_factor: float = 0.0,
    final_factor: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup from ``warmup_start_factor`` over ``warmup_steps`` steps, then:
    ``cosine`` or ``linear`` decay to ``final_factor`` at ``total_steps`` (the official ShuffleNet V2
    recipe decays linearly to 0), ``step`` multiplies by ``gamma`` at each of ``milestones`` (steps),
    or ``constant``.

    Args:
        step: optimizer steps taken so far.
        total_steps: optimizer steps of the whole run.
        warmup_steps: length of the linear warmup.
        schedule: shape after the warmup.
        milestones: steps at which ``step`` decays.
        gamma: decay factor per milestone for ``step``.
        warmup_start_factor: multiplier at step 0 when warming up.
        final_factor: multiplier reached at ``total_steps`` by ``cosine`` and ``linear``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return final_factor + (1.0 - final_factor) * (1.0 - progress)
    if schedule == "cosine":
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine, linear, step or constant")


def progressive_resolution(
    epoch: int, min_res: int, max_res: int, end_ramp: int, start_ramp: int = 0, multiple: int = 32
) -> int:
    """Training resolution at epoch ``epoch`` (0-based) under progressive resizing (FFCV's ImageNet
    recipe: low resolution early, rising linearly to the final one).

    ``min_res`` up to epoch ``start_ramp``, ``max_res`` from epoch ``end_ramp`` on, and in between the
    linear interpolation rounded to the nearest multiple of ``multiple`` (cheap sizes for the
    network's stride-32 stages and for the GPU), clipped to ``[min_res, max_res]``.

    Args:
        epoch: current epoch.
        min_res: resolution before the ramp.
        max_res: resolution after the ramp.
        end_ramp: first epoch at ``max_res``.
        start_ramp: last epoch at ``min_res``.
        multiple: the ramp's resolutions are multiples of this.
    """
    if not 0 < min_res <= max_res:
        raise ValueError(f"need 0 < min_res <= max_res, got min_res={min_res}, max_res={max_res}")
    if not 0 <= start_ramp <= end_ramp:
        raise ValueError(f"need 0 <= start_ramp <= end_ramp, got start_ramp={start_ramp}, end_ramp={end_ramp}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    value = min_res + (max_res - min_res) * (epoch - start_ramp) / (end_ramp - start_ramp)
    return int(min(max_res, max(min_res, round(value / multiple) * multiple)))
