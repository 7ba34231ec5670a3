"""Import a torchvision ``shufflenet_v2_x*`` state-dict file into our model.

torchvision's module names are ours, so the import is a strict ``load_state_dict``; the file is read
with ``weights_only=True`` so that a checkpoint from the internet cannot run code on load.
"""

from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .registry import build_model

__all__ = [
    "describe_state_dict",
    "import_weights",
    "load_state_dict_file",
    "load_torchvision_weights",
    "state_dict_mismatch",
]

# stages_out_channels of the published widths (the paper's Table 5) -> width and config file.
_WIDTHS = {
    (24, 48, 96, 192, 1024): ("0.5x", "configs/model/x0_5.yaml"),
    (24, 116, 232, 464, 1024): ("1.0x", "configs/model/x1_0.yaml"),
    (24, 176, 352, 704, 1024): ("1.5x", "configs/model/x1_5.yaml"),
    (24, 244, 488, 976, 2048): ("2.0x", "configs/model/x2_0.yaml"),
}


def describe_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "") -> str:
    """What network a ShuffleNet V2 state dict holds, read from its shapes: e.g. ``ShuffleNet V2
    0.5x (configs/model/x0_5.yaml), 10 classes``; other networks are described by their tensor count."""

    def shape(key: str) -> Optional[torch.Size]:
        tensor = state_dict.get(prefix + key)
        return tensor.shape if isinstance(tensor, Tensor) else None

    shapes = [
        shape("conv1.0.weight"),
        *(shape(f"stage{i}.0.branch1.2.weight") for i in (2, 3, 4)),
        shape("conv5.0.weight"),
    ]
    classes = shape("fc.weight")
    if any(s is None for s in shapes) or classes is None:
        return f"a network that is not a ShuffleNet V2 ({sum(k.startswith(prefix) for k in state_dict)} tensors)"
    channels = (shapes[0][0], *(2 * s[0] for s in shapes[1:4]), shapes[4][0])
    width, config = _WIDTHS.get(channels, (None, None))
    name = f"ShuffleNet V2 {width} ({config})" if width else f"ShuffleNet V2 with stages_out_channels {list(channels)}"
    return f"{name}, {classes[0]} classes"


def state_dict_mismatch(
    source: str, state_dict: Mapping[str, Tensor], model: nn.Module, prefix: str = ""
) -> Optional[str]:
    """``None`` if ``state_dict`` (keys under ``prefix``) has ``model``'s tensor names and shapes,
    else one line that says which network each holds (not one line per mismatched tensor)."""
    own = {prefix + k: v for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    same_shapes = all(isinstance(theirs.get(k), Tensor) and theirs[k].shape == v.shape for k, v in own.items())
    if same_shapes and set(theirs) == set(own):
        return None
    return (
        f"{source} does not fit the model: it holds {describe_state_dict(theirs, prefix)}, but the config builds "
        f"{describe_state_dict(own, prefix)}; use the model config the weights were trained with"
    )


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
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]  # torch's message runs to many lines
        raise ValueError(f"{path} is not a state-dict file torch.load(weights_only=True) can read: {reason}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = {k[len("model.") :]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
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
    mismatch = state_dict_mismatch(f"weights file {path}", state_dict, model)
    if mismatch is not None:
        raise ValueError(mismatch)
    model.load_state_dict(state_dict, strict=True)
    return model


def import_weights(name: str, path: Union[str, Path], num_classes: int = 1000) -> nn.Module:
    """Build the registered model ``name`` and load the torchvision weights at ``path``."""
    return load_torchvision_weights(build_model(name, num_classes=num_classes), path)
