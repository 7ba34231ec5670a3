"""Import a torchvision ``shufflenet_v2_x*`` state-dict file into our model.

torchvision's module names are ours, so the import is a strict ``load_state_dict``; the file is read
with ``weights_only=True`` so that a checkpoint from the internet cannot run code on load.
"""

from pathlib import Path
from typing import Dict, Union

import torch
from torch import Tensor, nn

from .registry import build_model

__all__ = ["import_weights", "load_state_dict_file", "load_torchvision_weights"]


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a state dict saved by ``torch.save(model.state_dict(), path)`` (torchvision's
    ``*.pth`` downloads) or a Lightning checkpoint, safely (``weights_only=True``).

    Lightning checkpoints keep the network under ``state_dict`` with a ``model.`` prefix; that
    prefix is removed, and EMA copies (``ema_model.``) are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise ValueError(f"{path} is not a state-dict file torch.load(weights_only=True) can read: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def load_torchvision_weights(model: nn.Module, path: Union[str, Path]) -> nn.Module:
    """Load a torchvision ``shufflenet_v2_x*`` state-dict file into ``model`` strictly.

    Args:
        model: a :class:`~shufflenet_pl.models.ShuffleNetV2` of the same width and class count.
        path: the ``.pth`` file, e.g. ``~/.cache/torch/hub/checkpoints/shufflenetv2_x1-5666bf0f80.pth``.
    """
    state_dict = load_state_dict_file(path)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit this model (wrong width or num_classes?): {err}") from err
    return model


def import_weights(name: str, path: Union[str, Path], num_classes: int = 1000) -> nn.Module:
    """Build the registered model ``name`` and load the torchvision weights at ``path``."""
    return load_torchvision_weights(build_model(name, num_classes=num_classes), path)
