"""shufflenet-pl: ShuffleNet V2 on ImageNet with Lightning, FFCV, SLURM and W&B."""

__version__ = "0.1.0"
