"""A torchvision ImageFolder datamodule with the same augmentation semantics as the FFCV one:
the fallback where FFCV cannot be installed, and the baseline that the data benchmark compares with.

Workers decode and crop to uint8; conversion to float and normalisation happen on the device after
the batch is transferred (as in FFCV's pipeline), so the CPU workers do the least work.

The sample order is :mod:`shufflenet_pl.data.ordering`'s, not Lightning's injected
``DistributedSampler``: training order is a pure function of (seed, epoch) sharded over the ranks,
validation gives every rank a disjoint slice (each image counted once, no padded duplicates), and
the train loader can be checkpointed and resumed mid-epoch.

Images are decoded by the converter's :func:`~shufflenet_pl.data.convert.open_rgb` (EXIF orientation
applied, alpha composited on white), so both datamodules see the same pixels. A file that cannot be
decoded is skipped and reported (``bad_images="skip"``) or refused with the full list before training
(``bad_images="error"``); an empty class folder is refused, naming it, as the converter does.
"""

import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2 as T

from ..errors import InputError
from .convert import check_class_folders
from .images import check_images, open_rgb
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_crop_args,
    default_num_workers,
    ignore_sigterm,
    normalize_on_device,
    per_device_batch_size,
)
from .demo import DEMO_CLASSES, make_demo_dataset
from .ordering import (
    ResumableLoader,
    TrainLoaderStateMixin,
    epoch_permutation,
    num_batches,
    overfitting,
    rank_samples,
    rank_train_samples,
)

__all__ = [
    "ImageFolderDataModule",
    "SeededAugmentation",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize_on_device",
    "per_device_batch_size",
]

BadImages = Literal["skip", "error"]


class _ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder decoding through :func:`open_rgb`; with ``bad_images="skip"`` a file
    that cannot be decoded is reported once (per worker) on stderr and replaced by the next readable
    sample of the split, so that batches keep their size and the run goes on."""

    def __init__(self, root: str, transform: Any, bad_images: BadImages) -> None:
        super().__init__(root, transform=transform, loader=open_rgb)
        self.bad_images = bad_images
        self.reported: set = set()

    def __getitem__(self, index: int) -> Any:
        for offset in range(len(self.samples)):
            current = (index + offset) % len(self.samples)
            try:
                return super().__getitem__(current)
            except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
                path = self.samples[current][0]
                if self.bad_images != "skip":
                    raise
                if path not in self.reported:
                    self.reported.add(path)
                    print(
                        f"warning: data.bad_images=skip: skipped {path}, which cannot be decoded "
                        f"({type(err).__name__}: {err})",
                        file=sys.stderr,
                        flush=True,
                    )
        raise OSError(f"data.root: none of the {len(self.samples)} images under {self.root} can be decoded")


class SeededAugmentation(Dataset):
    """``dataset[index]`` with its random augmentation drawn from a seed of ``(seed, epoch, index)``.

    torchvision's transforms draw from the global torch RNG of whichever loader worker runs them, so
    without this a resumed epoch would read the same images with other crops and flips. Indexed by
    ``(epoch, index)`` pairs (what the training sampler yields); the caller's RNG is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        epoch, index = key
        sample_seed = hash((self.seed, epoch, index))  # ints hash the same in every process (no PYTHONHASHSEED)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed)  # CPU only: torch.manual_seed also seeds CUDA, 200x slower
            return self.dataset[index]


class ImageFolderDataModule(TrainLoaderStateMixin, L.LightningDataModule):
    """ImageNet-style ``root/train/<class>/*`` and ``root/val/<class>/*`` through torchvision.

    Args:
        root: folder holding ``train/`` and ``val/``.
        demo: generate the built-in demo set under ``root`` when it is not there yet.
        batch_size: global batch size, divided by the number of processes.
        num_workers: loader processes per device; ``None``: the CPUs the process may use, less one for
            the training step where there are more than two.
        train_res: side of the RandomResizedCrop for training.
        val_res: side of the center crop for validation.
        val_crop_ratio: center-crop ratio (224/256: resize the short side to res/ratio first).
        crop_scale: area range of RandomResizedCrop.
        drop_last: drop the last incomplete training batch.
        seed: seed of the training order and augmentation: epoch ``e`` always reads the same images
            in the same order with the same crops and flips, which is what makes mid-epoch resume exact.
        bad_images: files that cannot be decoded: ``skip`` (each is reported on stderr when met and
            replaced by the next readable image of the split), or ``error`` (every image is decoded
            once at setup, in ``num_workers`` processes, and the run refused with the list of bad
            files before training; costs a pass over the data).
    """

    def __init__(
        self,
        root: str = "data/demo",
        demo: bool = False,
        batch_size: int = 256,
        num_workers: Optional[int] = None,
        train_res: int = 176,
        val_res: int = 224,
        val_crop_ratio: float = 224 / 256,
        crop_scale: Tuple[float, float] = (0.08, 1.0),
        drop_last: bool = True,
        seed: int = 0,
        bad_images: BadImages = "skip",
    ) -> None:
        super().__init__()
        check_crop_args(train_res, val_res, val_crop_ratio, crop_scale)
        if bad_images not in ("skip", "error"):
            raise ValueError(f"data.bad_images must be skip or error, got {bad_images!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.train_res = train_res
        self.val_res = val_res
        self.classes: List[str] = sorted(DEMO_CLASSES) if demo else self._find_classes(self.root / "train")
        if not demo:
            for split in ("train", "val"):
                check_class_folders(self.root / split, self.classes)
        self.train_set: Optional[_ImageFolder] = None
        self.val_set: Optional[_ImageFolder] = None
        self.rank, self.world_size = 0, 1

    @staticmethod
    def _find_classes(folder: Path) -> List[str]:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data.root: {folder} does not exist; give an ImageFolder root holding train/ and val/ "
                f"(one folder per class), or set data.demo=true for the built-in demo set"
            )
        classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        if not classes:
            raise FileNotFoundError(f"data.root: {folder} has no class folders")
        return classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare_data(self) -> None:
        if self.hparams.demo:
            make_demo_dataset(self.root)

    def _train_transform(self) -> T.Compose:
        return T.Compose(
            [
                T.RandomResizedCrop(self.train_res, scale=tuple(self.hparams.crop_scale), antialias=True),
                T.RandomHorizontalFlip(),
                T.PILToTensor(),
            ]
        )

    def _val_transform(self) -> T.Compose:
        return T.Compose(
            [
                T.Resize(round(self.val_res / self.hparams.val_crop_ratio), antialias=True),
                T.CenterCrop(self.val_res),
                T.PILToTensor(),
            ]
        )

    def set_train_resolution(self, res: int) -> None:
        """Change the training crop; takes effect from the next epoch (or resumed epoch) that starts:
        its loader workers are started lazily, after the epoch-start callbacks."""
        self.train_res = res
        if self.train_set is not None:
            self.train_set.transform = self._train_transform()

    def setup(self, stage: str) -> None:
        self.world_size = self.trainer.world_size if self.trainer is not None else 1
        self.rank = self.trainer.global_rank if self.trainer is not None else 0
        self.per_device_batch_size = per_device_batch_size(self.batch_size, self.world_size)
        if self.train_set is None:
            for split in ("train", "val"):
                check_class_folders(self.root / split, self.classes)
            bad_images = self.hparams.bad_images
            self.train_set = _ImageFolder(str(self.root / "train"), self._train_transform(), bad_images)
            self.val_set = _ImageFolder(str(self.root / "val"), self._val_transform(), bad_images)
            for split in (self.train_set, self.val_set):
                if split.classes != self.classes:
                    raise ValueError(f"data.root: class folders of {split.root} differ from {self.root / 'train'}")
            if bad_images == "error":
                self._refuse_bad_images()

    def _refuse_bad_images(self) -> None:
        """Decode every image once; raise naming the files that cannot be decoded."""
        paths = [path for split in (self.train_set, self.val_set) for path, _ in split.samples]
        failures = check_images(paths, max(1, self.num_workers), "check images", progress=False)
        bad = [(path, reason) for path, reason in zip(paths, failures) if reason is not None]
        if bad:
            listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:3]) + (
                f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
            )
            raise InputError(
                f"data.root: {len(bad)} of {len(paths)} images cannot be decoded: {listed}; fix or remove "
                f"them, or set data.bad_images=skip to skip them"
            )

    def _loader(self, dataset: Dataset, samples: Sequence[int]) -> DataLoader:
        """A DataLoader over ``samples`` of ``dataset``, in that order."""
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            sampler=samples,  # any iterable of indices; the order was decided by the caller
            drop_last=False,  # the caller passes whole batches only where drop_last applies
            num_workers=self.num_workers,
            worker_init_fn=ignore_sigterm,
            pin_memory=torch.cuda.is_available(),
            # Fresh workers each epoch pick up a new training resolution (progressive resizing).
            persistent_workers=False,
        )

    def train_order(self, epoch: int) -> np.ndarray:
        """Sample indices this rank reads in epoch ``epoch`` (whole batches only when ``drop_last``)."""
        if overfitting(self.trainer):  # the same first batches every epoch, as Lightning does
            order = np.arange(len(self.train_set))
        else:
            order = epoch_permutation(len(self.train_set), self.hparams.seed, epoch)
        return rank_train_samples(order, self.rank, self.world_size, self.per_device_batch_size, self.hparams.drop_last)

    def val_order(self) -> np.ndarray:
        """Validation indices of this rank: disjoint across ranks, each image exactly once."""
        return rank_samples(np.arange(len(self.val_set)), self.rank, self.world_size, pad=False)

    def _start_train_epoch(self, epoch: int, skip_batches: int) -> Iterator[Any]:
        samples = self.train_order(epoch)[skip_batches * self.per_device_batch_size :]
        keys = [(epoch, int(index)) for index in samples]
        return iter(self._loader(SeededAugmentation(self.train_set, self.hparams.seed), keys))

    def _describe(self) -> Dict[str, Any]:
        return {
            "seed": self.hparams.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_samples": len(self.train_set),
        }

    def train_dataloader(self) -> ResumableLoader:
        return self._resumable_train_loader(len(self.train_set))

    def _eval_loader(self) -> ResumableLoader:
        if len(self.val_set) < self.world_size:
            raise ValueError(f"data.root: {len(self.val_set)} validation images for {self.world_size} processes")
        samples = self.val_order().tolist()
        length = num_batches(len(samples), self.per_device_batch_size, drop_last=False)
        return ResumableLoader(lambda epoch, skip: iter(self._loader(self.val_set, samples)), length, dict)

    def val_dataloader(self) -> ResumableLoader:
        return self._eval_loader()

    def test_dataloader(self) -> ResumableLoader:
        return self._eval_loader()

    def predict_dataloader(self) -> DataLoader:
        # A plain DataLoader: Lightning shards it without padding for predict and tracks indices.
        return DataLoader(
            self.val_set,
            batch_size=self.per_device_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            worker_init_fn=ignore_sigterm,
            pin_memory=torch.cuda.is_available(),
        )

    def predict_samples(self) -> Sequence[str]:
        """File paths in the order ``predict_dataloader`` yields them."""
        return [path for path, _ in self.val_set.samples]
