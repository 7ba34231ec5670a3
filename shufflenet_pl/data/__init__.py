"""Data: built-in demo set, ImageFolder datamodule (and, with ffcv installed, the FFCV one)."""

from .demo import DEMO_CLASSES, make_demo_dataset
from .imagefolder import ImageFolderDataModule

__all__ = ["DEMO_CLASSES", "ImageFolderDataModule", "make_demo_dataset"]
