"""Sample order shared by both datamodules: a pure function of (seed, epoch, rank), and a loader
wrapper that Lightning can checkpoint and resume in the middle of an epoch.

Why not ``DistributedSampler``: it pads the validation set with duplicates (accuracy over a
different set than asked for), and neither it nor FFCV's ``Loader`` can start an epoch at batch k.
Here training shards a seeded permutation per epoch over the ranks (padding by wrap-around, as
``DistributedSampler`` does, so every rank gets the same number of batches), evaluation gives each
rank a disjoint slice with no padding (every image counted exactly once), and a wrapper exposes
Lightning's stateful-dataloader protocol (``state_dict`` / ``load_state_dict``, saved in
``checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]``) so that a run resumed from a
mid-epoch checkpoint continues with the next unseen batch: 0 lost, 0 repeated.

Lightning 2.6 skips that restore when ``trainer.estimated_stepping_batches`` set the train loader up
before the checkpoint's loop state was loaded (Lightning-AI/pytorch-lightning#20550, open), which
our ``configure_optimizers`` does for its per-step LR schedule. So the datamodules also save the
loader's position in their own ``state_dict`` (restored before ``configure_optimizers`` runs) and
hand it to the loader they create: :class:`TrainLoaderStateMixin`. Restoring twice is harmless.
"""

import math
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

import numpy as np

from ..errors import InputError

__all__ = [
    "ResumableLoader",
    "TrainLoaderStateMixin",
    "epoch_permutation",
    "num_batches",
    "overfitting",
    "rank_samples",
    "rank_train_samples",
]

Batch = TypeVar("Batch")


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a permutation of ``range(num_samples)`` that depends
    only on ``(seed, epoch)``, the same on every rank and after any restart."""
    return np.random.default_rng([seed, epoch]).permutation(int(num_samples))


def rank_samples(order: np.ndarray, rank: int, world_size: int, pad: bool) -> np.ndarray:
    """The part of ``order`` that ``rank`` reads.

    Args:
        order: global sample order (every rank passes the same one).
        rank: this process's global rank.
        world_size: number of processes.
        pad: training: repeat samples from the start so that every rank gets
            ``ceil(len(order) / world_size)`` (equal batch counts keep DDP in step). Evaluation:
            no padding, so the ranks' slices are disjoint and cover ``order`` exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
    if pad and len(order) % world_size:
        extra = world_size - len(order) % world_size
        order = np.concatenate([order, np.resize(order, extra)])
    return order[rank::world_size]


def rank_train_samples(order: np.ndarray, rank: int, world_size: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """The training part of ``order`` that ``rank`` reads: padded like every rank's
    (:func:`rank_samples`), and cut to whole batches of ``batch_size`` when ``drop_last``."""
    samples = rank_samples(order, rank, world_size, pad=True)
    if drop_last:
        samples = samples[: len(samples) // batch_size * batch_size]
    return samples


def overfitting(trainer: Any) -> bool:
    """``Trainer(overfit_batches=...)`` is on: train on the same first batches every epoch (Lightning
    swaps a DataLoader's sampler for a sequential one then; ours is no DataLoader, so we do it)."""
    return trainer is not None and bool(getattr(trainer, "overfit_batches", 0))


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of ``num_samples`` samples."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


class ResumableLoader:
    """An iterable of batches whose epoch ``e`` yields the batches of a plan fixed by ``(seed, e)``,
    which Lightning can save and restore mid-epoch.

    It does no loading itself: ``start_epoch(epoch, skip)`` (given by a datamodule) starts the real
    loader of epoch ``epoch`` with its first ``skip`` batches left out and returns an iterator.

    Lightning calls ``iter()`` on a train loader before ``on_train_epoch_start`` (in
    ``FitLoop.setup_data``, and once more just to check that it is iterable), so the real loader is
    started lazily at the first ``next()``: by then ``set_epoch`` and the callbacks (progressive
    resizing) have run, and no decoding is wasted on a throw-away iterator.

    Args:
        start_epoch: ``(epoch, skip_batches) -> iterator`` over the remaining batches of that epoch.
        length: batches per epoch on this rank (``len()``, what Lightning plans with).
        describe: ``() -> dict`` of settings that must match on resume (e.g. seed, batch size,
            world size); a checkpoint with other values is refused rather than resumed wrongly.
    """

    def __init__(
        self, start_epoch: Callable[[int, int], Iterator[Batch]], length: int, describe: Callable[[], Dict[str, Any]]
    ) -> None:
        self._start_epoch = start_epoch
        self._length = length
        self._describe = describe
        self.epoch = 0
        self._skip = 0  # batches of `epoch` already consumed before a restore
        self._yielded = 0  # batches yielded so far in the running epoch
        self._running_epoch: Optional[int] = None
        # Lightning calls `loader.sampler.set_epoch(e)` for every train loader at each epoch start,
        # and reads `batch_sampler` to tell whether a loader shuffles.
        self.sampler = self
        self.batch_sampler = None

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Lightning's per-epoch hook: the next iteration plays epoch ``epoch``."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._skip = 0

    def __iter__(self) -> Iterator[Batch]:
        return _LazyEpoch(self)

    def _begin(self) -> Iterator[Batch]:
        epoch, skip = self.epoch, self._skip
        self._running_epoch, self._yielded = epoch, skip
        self._skip = 0
        # What follows this epoch is the next one unless Lightning says otherwise via set_epoch.
        self.epoch = epoch + 1
        return self._start_epoch(epoch, skip)

    def _count(self) -> None:
        self._yielded += 1

    def state_dict(self) -> Dict[str, Any]:
        """Where the loader stands: the epoch in progress and the batches of it already yielded.
        Plain Python values only, so that ``torch.load(weights_only=True)`` reads the checkpoint."""
        if self._running_epoch is None:
            state = {"epoch": self.epoch, "batches_done": self._skip, **self._describe()}
        else:
            state = {"epoch": self._running_epoch, "batches_done": self._yielded, **self._describe()}
        return {key: value.item() if isinstance(value, np.generic) else value for key, value in state.items()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue at batch ``batches_done`` of epoch ``epoch`` on the next iteration."""
        expected = self._describe()
        changed = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: checkpoint {old!r} vs now {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"cannot resume the data order mid-epoch: {details}. Resume with the settings of the "
                f"checkpointed run, or resume from an end-of-epoch checkpoint"
            )
        batches_done = int(state["batches_done"])
        if batches_done >= self._length:  # the checkpoint was taken after the last batch
            self.epoch, self._skip = int(state["epoch"]) + 1, 0
        else:
            self.epoch, self._skip = int(state["epoch"]), batches_done
        self._running_epoch = None


class _LazyEpoch:
    """Iterator that starts its epoch at the first ``next()``."""

    def __init__(self, owner: ResumableLoader) -> None:
        self._owner = owner
        self._iterator: Optional[Iterator[Any]] = None

    def __iter__(self) -> "_LazyEpoch":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._owner._begin()
        batch = next(self._iterator)
        self._owner._count()
        return batch


class TrainLoaderStateMixin:
    """For a LightningDataModule (list it first among the bases): keeps the train loader's position
    in the datamodule's checkpoint state and applies it to the next train loader created.
    :meth:`_resumable_train_loader` builds that loader from the datamodule's ``train_order``,
    ``_start_train_epoch``, ``_describe``, ``per_device_batch_size``, ``batch_size`` and ``world_size``."""

    _train_loader: Optional[ResumableLoader] = None
    _pending_train_loader_state: Optional[Dict[str, Any]] = None

    def _resumable_train_loader(self, num_train_samples: int) -> ResumableLoader:
        """The tracked train loader: epochs of ``self.train_order(epoch)``, started (or resumed) by
        ``self._start_train_epoch(epoch, skip_batches)``; refuses a batch larger than the set."""
        datamodule: Any = self
        length = num_batches(len(datamodule.train_order(0)), datamodule.per_device_batch_size, drop_last=True)
        if length == 0:
            raise InputError(
                f"data.batch_size={datamodule.batch_size} is larger than the {num_train_samples} "
                f"training images ({datamodule.world_size} processes); give a smaller batch size"
            )
        return self._track_train_loader(ResumableLoader(datamodule._start_train_epoch, length, datamodule._describe))

    def _track_train_loader(self, loader: ResumableLoader) -> ResumableLoader:
        if self._pending_train_loader_state is not None:
            loader.load_state_dict(self._pending_train_loader_state)
            self._pending_train_loader_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> Dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state is not None:
            if self._train_loader is not None:
                self._train_loader.load_state_dict(state)
            else:
                self._pending_train_loader_state = state
