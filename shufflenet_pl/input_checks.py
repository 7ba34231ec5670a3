"""Checks of the user's config and files that run before anything is built: ``shufflenet-pl fit`` (and
``validate``, ``test``, ``predict``) calls them on its parsed config before it instantiates a class, and
``launch.py`` calls the same ones on the resolved config before it makes a job folder or submits. Each
refusal is an :class:`~shufflenet_pl.errors.InputError` of one line that names the file or key and
says what to do.

Nothing here imports Lightning; FFCV's file layout (``ffcv.types``) is imported only to read a ``.beton``.
"""

import importlib
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import yaml

from .errors import InputError

__all__ = [
    "BETON_FIELDS",
    "InputError",
    "beton_num_samples",
    "check_batch_size",
    "check_checkpoint_fits",
    "check_network",
    "check_run_config",
    "check_yaml_file",
    "config_files",
]

#: The fields ``shufflenet-pl convert`` writes, in order: (name, FFCV field class).
BETON_FIELDS = (("image", "RGBImageField"), ("label", "IntField"))
_CONVERT = "write it with `shufflenet-pl convert IMAGEFOLDER_ROOT {root}`"
_DATA_KEY = "data.init_args"
_NETWORK_KEY = "model.model.init_args"


def config_files(args: Sequence[str]) -> List[str]:
    """The files that ``--config FILE``, ``--config=FILE`` and ``-c FILE`` name in ``args``."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def check_yaml_file(path: Path, option: str = "--config") -> None:
    """A config file that is missing or not YAML, named by its file and line (jsonargparse would say
    ``<unicode string>``)."""
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file; give the path of a YAML config (see configs/)")
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{option} {where}: not valid YAML ({problem}); fix the file") from None


def check_batch_size(value: Any, key: str = "data.batch_size") -> None:
    """A batch size that is not a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{key} must be a whole number >= 1, got {value!r}; give a positive batch size")
    if value < 1:
        raise InputError(f"{key} must be >= 1, got {value}; give a positive batch size")


def check_network(init_args: Mapping[str, Any], key: str = _NETWORK_KEY) -> None:
    """ShuffleNet V2's ``stages_out_channels`` and ``stages_repeats``: five positive channel counts, the
    three stages' even (each unit splits its channels in two halves), three positive repeat counts."""
    channels = init_args.get("stages_out_channels")
    if channels is not None:
        channels = list(channels)
        if len(channels) != 5 or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise InputError(
                f"{key}.stages_out_channels must be 5 positive channel counts (conv1, stage2-4, conv5), got "
                f"{channels}; e.g. [24, 116, 232, 464, 1024] (configs/model/x1_0.yaml)"
            )
        odd = [c for c in channels[1:4] if c % 2]
        if odd:
            raise InputError(
                f"{key}.stages_out_channels={channels}: the stage widths (2nd to 4th) must be even, got {odd}; "
                f"each unit splits its channels in two halves"
            )
    repeats = init_args.get("stages_repeats")
    if repeats is not None:
        repeats = list(repeats)
        if len(repeats) != 3 or not all(isinstance(r, int) and r >= 1 for r in repeats):
            raise InputError(f"{key}.stages_repeats must be 3 positive unit counts, got {repeats}; e.g. [4, 8, 4]")


def _read_at(path: Path, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(dtype.itemsize * count)
    if len(data) < dtype.itemsize * count:
        from .data.beton_format import TruncatedBetonError

        raise TruncatedBetonError(
            f"{path} is truncated: {path.stat().st_size} bytes, shorter than its FFCV header; "
            f"write it again (shufflenet-pl convert ... --force) or copy it again"
        )
    return np.frombuffer(data, dtype=dtype, count=count)


def beton_num_samples(path: Path, root_key: str = f"{_DATA_KEY}.root") -> int:
    """The image count of ``path`` after checking that it is a complete FFCV file with the converter's
    fields (``image``: RGB image, ``label``: int): a missing file, another file named ``.beton``, a file
    of other fields and a truncated copy are each refused in one line."""
    from ffcv.types import CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType

    from .data.beton_format import check_beton_complete

    root = path.parent
    if not path.is_file():
        raise InputError(f"{root_key}: {path} does not exist; {_CONVERT.format(root=root)}")
    header = _read_at(path, HeaderType, 0, 1)[0]
    if int(header["version"]) != CURRENT_VERSION:
        raise InputError(
            f"{path} is not an FFCV dataset file (format version {int(header['version'])}, expected "
            f"{CURRENT_VERSION}); {_CONVERT.format(root=root)}"
        )
    descriptors = _read_at(path, FieldDescType, HeaderType.itemsize, int(header["num_fields"]))
    found = []
    for descriptor in descriptors:
        name = bytes(descriptor["name"]).rstrip(b"\0").decode(errors="replace")
        handler = TYPE_ID_HANDLER.get(int(descriptor["type_id"]))
        found.append((name, handler.__name__ if handler is not None else f"type {int(descriptor['type_id'])}"))
    if tuple(found) != BETON_FIELDS:
        shown = ", ".join(f"{name} ({kind})" for name, kind in found) or "none"
        wanted = ", ".join(f"{name} ({kind})" for name, kind in BETON_FIELDS)
        raise InputError(f"{path} holds the fields {shown}, but training reads {wanted}; {_CONVERT.format(root=root)}")
    check_beton_complete(path)
    return int(header["num_samples"])


def _ffcv_files(init: Mapping[str, Any], subcommand: str, batch_size: Any) -> None:
    if init.get("demo"):
        return  # generated and converted under root on first use
    root = Path(str(init.get("root", "data/demo")))
    if subcommand == "fit" and not (root / "train.beton").is_file() and not (root / "train").is_dir():
        raise InputError(
            f"data.root: {root / 'train'} does not exist, as train.beton or as an ImageFolder folder; write "
            f"{root / 'train.beton'} with `shufflenet-pl convert IMAGEFOLDER_ROOT {root}`, or set data.demo=true "
            f"for the built-in demo set"
        )
    splits = ("train", "val") if subcommand == "fit" else ("val",)
    counts = {split: beton_num_samples(root / f"{split}.beton") for split in splits}
    train = root / "train.beton"
    if subcommand == "fit" and init.get("num_classes") is None and not (root / "train").is_dir():
        if not train.with_name(train.name + ".json").is_file():
            raise InputError(
                f"{train} has no {train.name}.json sidecar (the converter writes it beside the file with the "
                f"class names); copy it too, or set {_DATA_KEY}.num_classes"
            )
    if subcommand == "fit" and isinstance(batch_size, int) and batch_size > counts["train"]:
        raise InputError(
            f"data.batch_size={batch_size} is larger than the {counts['train']} training images of {train}; "
            f"give a batch size of at most {counts['train']}"
        )


def _imagefolder_files(init: Mapping[str, Any], subcommand: str, batch_size: Any) -> None:
    """A training batch larger than the training images (counted only up to the batch size: cheap on
    ImageNet too)."""
    if init.get("demo") or subcommand != "fit" or not isinstance(batch_size, int):
        return
    from .data.convert import IMAGE_EXTENSIONS

    train = Path(str(init.get("root", "data/demo"))) / "train"
    if not train.is_dir():
        return  # the datamodule names a missing folder itself
    count = 0
    for _, _, files in os.walk(train, followlinks=True):
        count += sum(name.lower().endswith(IMAGE_EXTENSIONS) for name in files)
        if count >= batch_size:
            return
    raise InputError(
        f"data.batch_size={batch_size} is larger than the {count} training images in {train}; "
        f"give a batch size of at most {count}"
    )


def check_run_config(config: Mapping[str, Any], subcommand: Optional[str] = "fit") -> None:
    """Every check of a parsed or resolved run config (a plain mapping, as ``--print_config`` writes it):
    the batch size, the network's widths, the FFCV datamodule's ``.beton`` files and, for both datamodules,
    a training batch larger than the training set.

    Args:
        config: the subcommand's config (``data``, ``model`` and ``trainer`` at its top).
        subcommand: ``fit`` checks ``train.beton`` too; the others read only ``val.beton``; ``None``
            (classes built without a run) checks the values only.

    Raises:
        InputError: naming the first key or file that cannot work.
    """
    data = config.get("data")
    init: Mapping[str, Any] = (data.get("init_args") or {}) if isinstance(data, Mapping) else {}
    class_path = str(data.get("class_path", "")) if isinstance(data, Mapping) else ""
    batch_size = init.get("batch_size")
    if "batch_size" in init:
        check_batch_size(batch_size)
    model = config.get("model")
    network = model.get("model") if isinstance(model, Mapping) else None
    if isinstance(network, Mapping) and str(network.get("class_path", "")).endswith("ShuffleNetV2"):
        check_network(network.get("init_args") or {})
    if subcommand is None:
        return
    if class_path.endswith("FFCVImageNetDataModule"):
        _ffcv_files(init, subcommand, batch_size)
    elif class_path.endswith("ImageFolderDataModule"):
        _imagefolder_files(init, subcommand, batch_size)


def _build_network(network: Mapping[str, Any], num_classes: Optional[int]) -> Any:
    module, _, name = str(network["class_path"]).rpartition(".")
    init: Dict[str, Any] = dict(network.get("init_args") or {})
    if num_classes is not None:
        init["num_classes"] = num_classes
    return getattr(importlib.import_module(module), name)(**init)


def check_checkpoint_fits(checkpoint: Path, config: Mapping[str, Any]) -> None:
    """A checkpoint whose network differs from the one the config builds (another width), refused in one
    line that names both: for a launcher that resumes a job, before it submits anything."""
    import torch

    from .models.weights import state_dict_mismatch

    model = config.get("model")
    network = model.get("model") if isinstance(model, Mapping) else None
    if not isinstance(network, Mapping) or "class_path" not in network:
        return
    try:  # the checkpoint verified already; one that does not load here is the trainer's to report
        state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True).get("state_dict", {})
        head = state.get("model.fc.weight")
        built = _build_network(network, int(head.shape[0]) if isinstance(head, torch.Tensor) else None)
    except Exception:  # noqa: BLE001 - an older file format, a network this check cannot build
        return
    mismatch = state_dict_mismatch(f"checkpoint {checkpoint}", state, built, prefix="model.")
    if mismatch is not None:
        raise InputError(mismatch)
