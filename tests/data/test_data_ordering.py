"""Sample order and the resumable loader protocol (pure Python, fast), and the progressive-resizing
schedule."""

import itertools
from typing import Iterator, List, Tuple

import numpy as np
import pytest

from shufflenet_pl.data.ordering import (
    ResumableLoader,
    epoch_permutation,
    num_batches,
    rank_samples,
    rank_train_samples,
)
from shufflenet_pl.schedules import progressive_resolution


def test_epoch_permutation_is_a_pure_function_of_seed_and_epoch() -> None:
    a = epoch_permutation(1000, seed=3, epoch=5)
    assert sorted(a.tolist()) == list(range(1000))
    assert np.array_equal(a, epoch_permutation(1000, seed=3, epoch=5))
    assert not np.array_equal(a, epoch_permutation(1000, seed=3, epoch=6))  # a new shuffle each epoch
    assert not np.array_equal(a, epoch_permutation(1000, seed=4, epoch=5))


@pytest.mark.parametrize("num_samples, world_size", [(59, 2), (60, 2), (10, 3), (7, 4), (1, 1)])
def test_evaluation_shards_cover_every_sample_exactly_once(num_samples: int, world_size: int) -> None:
    order = np.arange(num_samples)
    shards = [rank_samples(order, r, world_size, pad=False) for r in range(world_size)]
    merged = np.concatenate(shards)
    assert len(merged) == num_samples  # no padded duplicates
    assert sorted(merged.tolist()) == list(range(num_samples))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("num_samples, world_size", [(59, 2), (10, 3), (7, 4)])
def test_training_shards_are_equal_sized_and_cover_everything(num_samples: int, world_size: int) -> None:
    order = epoch_permutation(num_samples, 0, 0)
    shards = [rank_samples(order, r, world_size, pad=True) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # every rank the same number of batches: DDP stays in step
    assert set(np.concatenate(shards).tolist()) == set(range(num_samples))
    assert len(shards[0]) == -(-num_samples // world_size)


def test_training_shards_keep_whole_batches_only_with_drop_last() -> None:
    order = epoch_permutation(23, 0, 0)  # 12 per rank over 2 ranks (one padded)
    assert (
        rank_train_samples(order, 1, 2, batch_size=5, drop_last=True).tolist()
        == rank_samples(order, 1, 2, pad=True)[:10].tolist()
    )
    assert (
        rank_train_samples(order, 1, 2, batch_size=5, drop_last=False).tolist()
        == rank_samples(order, 1, 2, pad=True).tolist()
    )


def test_a_batch_larger_than_the_training_set_is_refused(demo_root) -> None:
    from shufflenet_pl.data import ImageFolderDataModule

    data = ImageFolderDataModule(root=str(demo_root), batch_size=256, num_workers=0)  # 200 training images
    data.setup("fit")
    with pytest.raises(ValueError, match=r"data.batch_size=256 is larger than the 200 training images \(1 processes\)"):
        data.train_dataloader()


def test_rank_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 2 is outside"):
        rank_samples(np.arange(4), 2, 2, pad=False)


def test_num_batches() -> None:
    assert num_batches(10, 4, drop_last=True) == 2
    assert num_batches(10, 4, drop_last=False) == 3


class _Recorder:
    """A fake 'real loader': epoch e yields batches (e, 0..n-1); records what was started."""

    def __init__(self, batches_per_epoch: int) -> None:
        self.n = batches_per_epoch
        self.started: List[Tuple[int, int]] = []

    def __call__(self, epoch: int, skip: int) -> Iterator[Tuple[int, int]]:
        self.started.append((epoch, skip))
        return iter([(epoch, b) for b in range(skip, self.n)])


def _loader(n: int = 5) -> Tuple[ResumableLoader, _Recorder]:
    recorder = _Recorder(n)
    return ResumableLoader(recorder, n, lambda: {"seed": 0, "batch_size": 8}), recorder


def test_iteration_is_lazy_and_follows_set_epoch() -> None:
    loader, recorder = _loader()
    iterator = iter(loader)  # Lightning calls iter() before the epoch-start callbacks ...
    iter(loader)  # ... and once more just to check that it is iterable
    assert recorder.started == []  # nothing decoded yet
    loader.set_epoch(0)
    assert list(iterator) == [(0, b) for b in range(5)]
    loader.set_epoch(1)
    assert list(loader) == [(1, b) for b in range(5)]
    assert list(loader) == [(2, b) for b in range(5)]  # without set_epoch: the next epoch
    assert recorder.started == [(0, 0), (1, 0), (2, 0)]


def test_mid_epoch_state_resumes_at_the_next_unseen_batch() -> None:
    loader, _ = _loader()
    loader.set_epoch(3)
    seen = list(itertools.islice(iter(loader), 2))
    state = loader.state_dict()
    assert state["epoch"] == 3 and state["batches_done"] == 2

    resumed, recorder = _loader()
    resumed.load_state_dict(state)
    iterator = iter(resumed)
    resumed.set_epoch(3)  # what Lightning does at the start of the resumed epoch
    rest = list(iterator)
    assert seen + rest == [(3, b) for b in range(5)]  # 0 lost, 0 repeated
    assert recorder.started == [(3, 2)]
    assert list(resumed) == [(4, b) for b in range(5)]  # and the next epoch is whole again


def test_state_after_the_last_batch_resumes_with_the_next_epoch() -> None:
    loader, _ = _loader()
    list(loader)
    resumed, _ = _loader()
    resumed.load_state_dict(loader.state_dict())
    assert list(resumed) == [(1, b) for b in range(5)]


def test_resume_with_other_settings_is_refused() -> None:
    loader, _ = _loader()
    state = {**loader.state_dict(), "batch_size": 16}
    with pytest.raises(ValueError, match="batch_size: checkpoint 16 vs now 8"):
        loader.load_state_dict(state)


def test_progressive_resolution_endpoints_monotonic_multiples_of_32() -> None:
    values = [progressive_resolution(e, 160, 192, end_ramp=13, start_ramp=11) for e in range(16)]
    assert values[:12] == [160] * 12 and values[13:] == [192] * 3
    assert all(a <= b for a, b in zip(values, values[1:]))
    wide = [progressive_resolution(e, 96, 256, end_ramp=10, start_ramp=2) for e in range(12)]
    assert wide[2] == 96 and wide[10] == 256
    assert all(v % 32 == 0 for v in wide[3:10]), wide
    assert all(a <= b for a, b in zip(wide, wide[1:]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_res": 200, "max_res": 100, "end_ramp": 5}, "min_res <= max_res"),
        ({"min_res": 100, "max_res": 200, "end_ramp": 2, "start_ramp": 3}, "start_ramp <= end_ramp"),
    ],
)
def test_progressive_resolution_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        progressive_resolution(0, **kwargs)


def test_state_is_plain_python_for_weights_only_checkpoints() -> None:
    loader = ResumableLoader(lambda e, s: iter([1, 2]), 2, lambda: {"num_samples": np.uint64(200), "seed": np.int64(0)})
    next(iter(loader))
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 1, "num_samples": 200, "seed": 0}
    assert all(type(v) is int for v in state.values())


def _imagefolder_batches(root, epoch: int, skip: int, num_workers: int) -> List:
    import torch

    from shufflenet_pl.data import ImageFolderDataModule

    data = ImageFolderDataModule(root=str(root), batch_size=40, num_workers=num_workers, train_res=48, seed=3)
    data.setup("fit")
    torch.manual_seed(num_workers)  # the global RNG must not matter
    return [images for images, _ in data._start_train_epoch(epoch, skip)]


def test_imagefolder_augmentation_is_a_function_of_seed_epoch_and_sample(demo_root) -> None:
    """A resumed epoch reads the same crops and flips as an uninterrupted one, with any worker count;
    another epoch reads other crops."""
    import torch

    full = _imagefolder_batches(demo_root, epoch=1, skip=0, num_workers=0)
    resumed = _imagefolder_batches(demo_root, epoch=1, skip=2, num_workers=2)
    assert len(full) == 5 and len(resumed) == 3
    for expected, got in zip(full[2:], resumed):
        assert torch.equal(expected, got)
    other_epoch = _imagefolder_batches(demo_root, epoch=2, skip=0, num_workers=0)
    assert not torch.equal(full[0], other_epoch[0])
