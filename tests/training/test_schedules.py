"""Pure LR schedules: endpoints, warmup, monotonic decay, step milestones, bad input."""

import pytest

from shufflenet_pl.schedules import lr_factor


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_warmup_then_decay_to_final(schedule: str) -> None:
    total, warmup = 100, 10
    values = [lr_factor(s, total, warmup, schedule) for s in range(total + 1)]
    assert values[0] == 0.0
    assert values[5] == pytest.approx(0.5)
    assert values[warmup] == pytest.approx(1.0)
    assert values[total] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(values[:warmup], values[1 : warmup + 1]))  # rises
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1 :]))  # then falls


def test_linear_is_linear_and_cosine_is_half_at_midpoint() -> None:
    assert lr_factor(50, 100, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(25, 100, 0, "linear") == pytest.approx(0.75)
    assert lr_factor(50, 100, 0, "cosine") == pytest.approx(0.5)
    assert lr_factor(25, 100, 0, "cosine") == pytest.approx(0.8535533905932737)
    assert lr_factor(100, 100, 0, "cosine", final_factor=0.1) == pytest.approx(0.1)


def test_step_schedule() -> None:
    assert [
        lr_factor(s, 100, 0, "step", milestones=[30, 60], gamma=0.1) for s in (0, 29, 30, 59, 60, 99)
    ] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "warmup_steps": 11}, "warmup_steps"),
        ({"total_steps": 10, "schedule": "exp"}, "unknown schedule 'exp'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lr_factor(step=5, **kwargs)
