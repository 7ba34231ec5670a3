"""Model registry: name -> builder, so configs and command lines name a model."""

from typing import Callable, Dict, List

from torch import nn

from .shufflenetv2 import shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5, shufflenet_v2_x2_0

__all__ = ["MODELS", "build_model", "list_models"]

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "shufflenet_v2_x0_5": shufflenet_v2_x0_5,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "shufflenet_v2_x1_5": shufflenet_v2_x1_5,
    "shufflenet_v2_x2_0": shufflenet_v2_x2_0,
}


def list_models() -> List[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODELS)


def build_model(name: str = "shufflenet_v2_x1_0", num_classes: int = 1000) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: one of :func:`list_models`, e.g. ``"shufflenet_v2_x1_0"``.
        num_classes: size of the classifier's output.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes)
