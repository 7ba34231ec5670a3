"""ImageNet (or any ImageFolder set converted to ``.beton``) streamed through FFCV.

The pipelines follow FFCV's ImageNet example (ffcv-imagenet ``train_imagenet.py``) with our own decode
stage (:mod:`shufflenet_pl.data.ffcv_decode`): training decodes only each image's RandomResizedCrop
box, at the smallest DCT scale that still leaves it at least the output size, resizes the box once
into the batch and mirrors it when flipped; the box and flip come from a counter-based generator
keyed by (seed, epoch, sample index), so a seed fixes every batch for any number of threads and after
a mid-epoch resume. Validation decodes a center crop of ratio 224/256 the same way. On a GPU the uint8
batch goes to the local rank's device and the module normalises it inside its training step.
Progressive resizing changes the crop size between epochs
(:class:`shufflenet_pl.callbacks.ProgressiveResizing` calls :meth:`set_train_resolution`).

Differences from FFCV's own ``distributed=True`` (which wraps ``DistributedSampler``): the sample
order is :mod:`shufflenet_pl.data.ordering`'s, so validation counts every image exactly once across
ranks (no padded duplicates), QUASI_RANDOM works under DDP, and a run resumed from a mid-epoch
checkpoint continues with the next unseen batch. Normalisation on a GPU is a torch op rather than
FFCV's cupy kernel, so cupy is not needed.
"""

import json
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from . import quiet_numba  # noqa: F401  (silences numba's exit-time finalizer noise; see module)
from .demo import DEMO_CLASSES, make_demo_dataset
from .beton_check import CPU_SHARE, BackgroundCheck, check_group
from ..input_checks import beton_num_samples
from .jit_cache import cache_typed_containers, pipeline_cache
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputError,
    check_crop_args,
    default_num_workers,
    per_device_batch_size,
)
from .ordering import (
    ResumableLoader,
    TrainLoaderStateMixin,
    epoch_permutation,
    num_batches,
    overfitting,
    rank_samples,
    rank_train_samples,
)

cache_typed_containers()  # before ffcv's import builds its typed dicts (see jit_cache)

try:
    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, Squeeze, ToDevice, ToTensor, ToTorchImage
    from ffcv.traversal_order.quasi_random import generate_order_inner
    from ffcv.traversal_order.base import TraversalOrder

    from .ffcv_decode import CenterCropDecoder, SeededRandomResizedCropDecoder
    from .ffcv_epoch import start_epoch
except ImportError as _error:  # pragma: no cover - exercised on machines without ffcv
    _FFCV_IMPORT_ERROR: Optional[ImportError] = _error
    TraversalOrder = object  # type: ignore[assignment,misc]
else:
    _FFCV_IMPORT_ERROR = None

__all__ = ["FFCVImageNetDataModule", "require_ffcv"]

Order = Literal["random", "quasi_random"]


def require_ffcv() -> None:
    """Raise an ``ImportError`` that says how to install FFCV (never fall back silently)."""
    if _FFCV_IMPORT_ERROR is not None:
        raise ImportError(
            f"ffcv is not importable ({_FFCV_IMPORT_ERROR}). Install it with 'bash setup.sh' (see README, "
            f"'FFCV'), or use shufflenet_pl.data.ImageFolderDataModule (configs/data/imagenet_folder.yaml)"
        ) from _FFCV_IMPORT_ERROR


class _PlannedOrder(TraversalOrder):  # type: ignore[misc,valid-type]
    """A traversal order that plays back the sample indices the datamodule planned for the epoch."""

    def __init__(self, loader: "Loader") -> None:
        super().__init__(loader)
        self.plan = np.asarray(self.indices)

    def sample_order(self, epoch: int) -> Sequence[int]:
        return self.plan


def _input_dtype(precision: str) -> torch.dtype:
    """The dtype the network's input should have under the Trainer's ``precision``."""
    precision = str(precision)
    if precision.startswith("16") or precision == "half":
        return torch.float16
    if precision.startswith("bf16"):
        return torch.bfloat16
    return torch.float32


def read_beton_info(beton: Path) -> Dict[str, Any]:
    """The converter's sidecar ``<file>.beton.json`` (classes, settings, image count), or ``{}``."""
    sidecar = beton.with_name(beton.name + ".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


class FFCVImageNetDataModule(TrainLoaderStateMixin, L.LightningDataModule):
    """``train.beton`` and ``val.beton`` (written by ``shufflenet-pl convert``) through FFCV loaders.

    Args:
        root: folder holding ``train.beton`` and ``val.beton``. With ``demo``, the built-in demo
            JPEGs are generated there and converted on first use (and reused afterwards).
        demo: generate and convert the built-in demo set under ``root`` if it is not there yet.
        batch_size: global batch size, divided by the number of processes (must divide).
        num_workers: decoding threads per process; ``None``: the CPUs the process may use (its affinity or
            ``SLURM_CPUS_PER_TASK``), less one for the training step where there are more than two.
        train_res: side of the training crop (progressive resizing changes it per epoch).
        val_res: side of the validation center crop (usually higher than ``train_res``).
        val_crop_ratio: crop side / short image side for validation (224/256).
        crop_scale: area range of RandomResizedCrop.
        order: ``random`` (a full shuffle each epoch) or ``quasi_random`` (shuffles within a
            window of pages: for datasets larger than RAM; needs ``os_cache=false``).
        os_cache: let the OS page cache hold the file (shared by all processes on a node); turn
            off for datasets larger than RAM (then each process reads the pages it needs).
        drop_last: drop the last incomplete training batch.
        seed: seed of the training order and of the crops and flips; epoch ``e`` always has the same
            order and augmentation for the same seed, which is what makes mid-epoch resume exact.
        batches_ahead: batches prepared ahead of the training step.
        num_classes: class count; by default read from ``train.beton.json`` (the converter writes it).
        demo_quality: JPEG quality of the demo ``.beton`` (demo only).
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
        order: Order = "random",
        os_cache: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        batches_ahead: int = 3,
        num_classes: Optional[int] = None,
        demo_quality: int = 90,
    ) -> None:
        super().__init__()
        require_ffcv()
        check_crop_args(train_res, val_res, val_crop_ratio, crop_scale)
        if order not in ("random", "quasi_random"):
            raise ValueError(f"data.order must be random or quasi_random, got {order!r}")
        if order == "quasi_random" and os_cache:
            raise ValueError("data.order=quasi_random reads page by page and needs data.os_cache=false")
        if batches_ahead < 1:
            raise ValueError(f"data.batches_ahead must be >= 1, got {batches_ahead}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.train_path = self.root / "train.beton"
        self.val_path = self.root / "val.beton"
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.train_res = train_res
        self.val_res = val_res
        self.classes: List[str] = self._find_classes(num_classes)
        for beton in (self.train_path, self.val_path):  # a bad or truncated file: one named error now, not ffcv's later
            if beton.is_file():
                beton_num_samples(beton)
        self.train_loader: Optional["Loader"] = None
        self.val_loader: Optional["Loader"] = None
        self._train_decoder: Optional["SeededRandomResizedCropDecoder"] = None
        self._val_decoder: Optional["CenterCropDecoder"] = None
        self.rank, self.world_size = 0, 1
        self.chunk_checks: Dict[Path, BackgroundCheck] = {}

    def _find_classes(self, num_classes: Optional[int]) -> List[str]:
        if self.hparams.demo:
            return sorted(DEMO_CLASSES)
        info_classes = read_beton_info(self.train_path).get("classes")
        if num_classes is not None:
            if info_classes is not None and len(info_classes) != num_classes:
                raise ValueError(
                    f"data.num_classes={num_classes} but {self.train_path}.json lists {len(info_classes)} classes"
                )
            return list(info_classes) if info_classes is not None else [str(i) for i in range(num_classes)]
        if info_classes is None and (self.root / "train").is_dir():
            # No sidecar (yet): the ImageFolder tree the files are converted from names the classes.
            info_classes = sorted(entry.name for entry in (self.root / "train").iterdir() if entry.is_dir()) or None
        if info_classes is None:
            if not self.train_path.is_file():
                raise FileNotFoundError(
                    f"data.root: {self.root / 'train'} does not exist, as {self.train_path.name} or as an ImageFolder "
                    f"folder; write {self.train_path} with `shufflenet-pl convert IMAGEFOLDER_ROOT {self.root}`, "
                    f"or set data.demo=true for the built-in demo set"
                )
            raise InputError(
                f"{self.train_path} has no {self.train_path.name}.json sidecar (the converter writes it beside the "
                f"file with the class names); copy it too, or set data.num_classes"
            )
        return list(info_classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare_data(self) -> None:
        if self.hparams.demo:
            from .convert import convert_split

            make_demo_dataset(self.root)
            for split in ("train", "val"):
                convert_split(
                    self.root / split,
                    self.root / f"{split}.beton",
                    write_mode="jpg",
                    jpeg_quality=self.hparams.demo_quality,
                    num_workers=self.num_workers,
                )

    # --- pipelines ----------------------------------------------------------------------------
    def _image_tail(self, device: torch.device, dtype: torch.dtype) -> list:
        """Normalisation and layout after decoding. On a GPU the uint8 batch goes to the device as it is
        (channels_last, as FFCV's ImageNet example) and the module normalises it inside its training
        step, where it fuses with the first convolution's input (one kernel launch fewer, half the
        bytes into a CUDA graph's static input). On the CPU FFCV's JIT-compiled lookup table in the
        loader threads, off the training thread, then NCHW."""
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        if device.type == "cuda":
            return [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=True)]
        numpy_dtype = np.float16 if dtype == torch.float16 else np.float32  # numpy has no bfloat16
        return [NormalizeImage(mean, std, numpy_dtype), ToTensor(), ToTorchImage(channels_last=False)]

    def _label_pipeline(self, device: torch.device) -> list:
        pipeline = [IntDecoder(), ToTensor(), Squeeze()]
        if device.type == "cuda":
            pipeline.append(ToDevice(device, non_blocking=True))
        return pipeline

    def _make_loader(self, path: Path, image_pipeline: list, device: torch.device) -> "Loader":
        if not path.is_file():
            raise FileNotFoundError(
                f"data.root: {path} does not exist; write it with `shufflenet-pl convert IMAGEFOLDER_ROOT {self.root}`"
            )
        beton_num_samples(path)
        self._start_chunk_check(path)
        quasi = self.hparams.order == "quasi_random" and path == self.train_path
        with pipeline_cache():  # a second start loads the pipeline's numba code from disk (see jit_cache)
            loader = self._new_loader(path, image_pipeline, device, quasi)
        loader.quasi_random_order = loader.traversal_order if quasi else None
        loader.traversal_order = _PlannedOrder(loader)
        return loader

    def _start_chunk_check(self, path: Path) -> None:
        """Verify this rank's share of ``path``'s chunk checksums in a daemon thread while training runs
        (once per file): one line if any chunk is damaged, from rank 0 for all ranks' shares."""
        if path not in self.chunk_checks:
            group = check_group(self.world_size)
            check = BackgroundCheck(path, self.rank, self.world_size, cpu_share=CPU_SHARE, group=group)
            self.chunk_checks[path] = check
            check.start()

    def _new_loader(self, path: Path, image_pipeline: list, device: torch.device, quasi: bool) -> "Loader":
        return Loader(
            str(path),
            batch_size=self.per_device_batch_size,
            num_workers=self.num_workers,
            os_cache=self.hparams.os_cache,
            order=OrderOption.QUASI_RANDOM if quasi else OrderOption.SEQUENTIAL,
            seed=self.hparams.seed,
            distributed=False,  # ranks are handled by the planned order below
            drop_last=False,  # so is drop_last (the plan holds whole batches only)
            batches_ahead=self.hparams.batches_ahead,
            pipelines={"image": image_pipeline, "label": self._label_pipeline(device)},
        )

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        self.world_size = trainer.world_size if trainer is not None else 1
        self.rank = trainer.global_rank if trainer is not None else 0
        self.per_device_batch_size = per_device_batch_size(self.batch_size, self.world_size)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        dtype = _input_dtype(trainer.precision) if trainer is not None else torch.float32
        if self.val_loader is None and self.rank == 0:
            print(f"FFCV loader: {self.num_workers} decoding threads per process", file=sys.stderr)
        if self.val_loader is None:
            self._val_decoder = CenterCropDecoder((self.val_res, self.val_res), ratio=self.hparams.val_crop_ratio)
            self.val_loader = self._make_loader(
                self.val_path, [self._val_decoder, *self._image_tail(device, dtype)], device
            )
            self._check_classes(self.val_path)
        if stage == "fit" and self.train_loader is None:
            # Crop box and flip in one seeded decode (no separate flip op): see ffcv_decode.
            self._train_decoder = SeededRandomResizedCropDecoder(
                (self.train_res, self.train_res), scale=tuple(self.hparams.crop_scale), seed=self.hparams.seed
            )
            self.train_loader = self._make_loader(
                self.train_path, [self._train_decoder, *self._image_tail(device, dtype)], device
            )
            self._check_classes(self.train_path)
            if self.num_train_samples < self.world_size:
                raise ValueError(
                    f"data.root: {self.train_path} has {self.num_train_samples} images, fewer than the "
                    f"{self.world_size} processes"
                )
        if self.val_loader.reader.num_samples < self.world_size:
            raise ValueError(
                f"data.root: {self.val_path} has {self.val_loader.reader.num_samples} images, fewer than "
                f"the {self.world_size} processes: some would validate nothing"
            )

    def _check_classes(self, path: Path) -> None:
        info = read_beton_info(path)
        if "classes" in info and list(info["classes"]) != self.classes:
            raise ValueError(f"data.root: the classes of {path} differ from those of {self.train_path}")

    @property
    def num_train_samples(self) -> int:
        assert self.train_loader is not None, "setup('fit') first"
        return int(self.train_loader.reader.num_samples)  # a numpy uint64: mixed with int64 it turns float

    # --- progressive resizing --------------------------------------------------------------------
    def set_train_resolution(self, res: int) -> None:
        """Change the training crop; takes effect from the next epoch (or resumed epoch) that starts."""
        self.train_res = res
        if self._train_decoder is not None:
            self._train_decoder.output_size = (res, res)

    # --- order -------------------------------------------------------------------------------------
    def train_order(self, epoch: int) -> np.ndarray:
        """Sample indices this rank reads in epoch ``epoch`` (whole batches only when ``drop_last``)."""
        assert self.train_loader is not None, "setup('fit') first"
        quasi = self.train_loader.quasi_random_order
        if overfitting(self.trainer):  # the same first batches every epoch, as Lightning does
            global_order = np.arange(self.num_train_samples)
        elif quasi is not None:
            # FFCV's page-windowed shuffle of the whole set, seeded by (seed, epoch), strided over ranks.
            # Called on a copy of the page table: FFCV's QuasiRandom shuffles it in place, so its own
            # sample_order(epoch) depends on the calls made before (and would differ after a resume).
            global_order = np.zeros(len(quasi.indices), dtype=np.int64)
            generate_order_inner(
                self.hparams.seed * 912300 + epoch,
                quasi.page_to_samples_array.copy(),
                quasi.page_sizes,
                global_order,
                2 * self.per_device_batch_size,
            )
        else:
            global_order = epoch_permutation(self.num_train_samples, self.hparams.seed, epoch)
        return rank_train_samples(
            global_order, self.rank, self.world_size, self.per_device_batch_size, self.hparams.drop_last
        )

    def val_order(self) -> np.ndarray:
        """Validation indices of this rank: disjoint across ranks, each image exactly once."""
        assert self.val_loader is not None
        return rank_samples(np.arange(int(self.val_loader.reader.num_samples)), self.rank, self.world_size, pad=False)

    def _describe(self) -> Dict[str, Any]:
        return {
            "seed": self.hparams.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_samples": self.num_train_samples,
            "order": self.hparams.order,
        }

    def _play(self, loader: "Loader", samples: np.ndarray, decoder: Any) -> Iterator[Tuple[Tensor, Tensor]]:
        loader.traversal_order.plan = samples.astype(np.uint64)
        decoder.take_corrupt_counts()  # what an unfinished earlier epoch left
        # Not iter(loader): a failing loader thread must raise here, not hang; inference mode (validate,
        # test, predict) must not make the epoch's buffers inference tensors (see ffcv_epoch). The
        # pipeline's numba code is compiled (or loaded from the disk cache) at the first epoch.
        with pipeline_cache():
            batches = start_epoch(loader, interrupt=self._stop_on_sigterm)
        return self._reporting_corrupt(batches, Path(loader.fname), decoder)

    def _reporting_corrupt(
        self, batches: Iterator[Tuple[Tensor, Tensor]], path: Path, decoder: Any
    ) -> Iterator[Tuple[Tensor, Tensor]]:
        """``batches``, then one line if the decode stage met corrupt images in them."""
        try:
            for batch in batches:
                yield batch
        finally:
            warned, failed = decoder.take_corrupt_counts()
            if warned or failed:
                rank = f" (rank {self.rank})" if self.world_size > 1 else ""
                print(
                    f"warning: {path}: {warned + failed} corrupt images decoded this epoch{rank} "
                    f"({warned} with libjpeg warnings, {failed} unreadable and left black); run "
                    f"shufflenet-pl check --decode {path}, then convert it again (--force) or copy it again",
                    file=sys.stderr,
                    flush=True,
                )

    def _stop_on_sigterm(self) -> None:
        # Lightning's SIGTERM handler only sets a flag that its loops read between batches: a wait for a
        # batch that does not come must end too (exit status 143 = 128 + SIGTERM, as the shell reports it).
        if self.trainer is not None and self.trainer.received_sigterm:
            raise SIGTERMException(128 + signal.SIGTERM)

    def _start_train_epoch(self, epoch: int, skip_batches: int) -> Iterator[Tuple[Tensor, Tensor]]:
        samples = self.train_order(epoch)[skip_batches * self.per_device_batch_size :]
        self._train_decoder.epoch = epoch  # the boxes and flips of (seed, epoch, sample index)
        return self._play(self.train_loader, samples, self._train_decoder)

    def train_dataloader(self) -> ResumableLoader:
        return self._resumable_train_loader(self.num_train_samples)

    def _eval_loader(self) -> ResumableLoader:
        samples = self.val_order()
        length = num_batches(len(samples), self.per_device_batch_size, drop_last=False)
        play = lambda epoch, skip: self._play(self.val_loader, samples, self._val_decoder)  # noqa: E731
        return ResumableLoader(play, length, dict)

    def val_dataloader(self) -> ResumableLoader:
        return self._eval_loader()

    def test_dataloader(self) -> ResumableLoader:
        return self._eval_loader()

    def predict_dataloader(self) -> ResumableLoader:
        return self._eval_loader()

    def predict_samples(self) -> Sequence[str]:
        """Source image paths in the order ``predict_dataloader`` yields them (from the converter's sidecar)."""
        info = read_beton_info(self.val_path)
        names, source = info.get("files", []), Path(info.get("source", "."))
        return [str(source / names[i]) for i in self.val_order()] if names else []
