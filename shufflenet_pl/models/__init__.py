"""ShuffleNet V2 in pure PyTorch (no Lightning, FFCV or W&B imports here)."""

from .registry import MODELS, build_model, list_models
from .shufflenetv2 import (
    InvertedResidual,
    ShuffleNetV2,
    channel_shuffle,
    concat_shuffle,
    concat_shuffle_split,
    shufflenet_v2_x0_5,
    shufflenet_v2_x1_0,
    shufflenet_v2_x1_5,
    shufflenet_v2_x2_0,
)
from .weights import import_weights, load_state_dict_file, load_torchvision_weights

__all__ = [
    "MODELS",
    "InvertedResidual",
    "ShuffleNetV2",
    "build_model",
    "channel_shuffle",
    "concat_shuffle",
    "concat_shuffle_split",
    "import_weights",
    "list_models",
    "load_state_dict_file",
    "load_torchvision_weights",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
]
