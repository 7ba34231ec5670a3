"""Data: built-in demo set, ImageFolder datamodule, and (with ffcv installed) the FFCV datamodule
and the ImageFolder -> .beton converter."""

from typing import Any

from .demo import DEMO_CLASSES, make_demo_dataset
from .imagefolder import ImageFolderDataModule

__all__ = ["DEMO_CLASSES", "FFCVImageNetDataModule", "ImageFolderDataModule", "make_demo_dataset"]


def __getattr__(name: str) -> Any:
    # Imported on first use: importing ffcv pulls in numba and OpenCV (seconds), which the
    # ImageFolder path does not need.
    if name == "FFCVImageNetDataModule":
        from .ffcv import FFCVImageNetDataModule

        return FFCVImageNetDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
