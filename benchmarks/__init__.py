"""Speed benchmarks: scripts, not tests. ``model_throughput`` (our ShuffleNet V2 against torchvision's, and
speed against FLOPs; ``shufflenet-pl bench``), ``guidelines`` (the paper's Tables 1-4;
``shufflenet-pl guidelines``) and ``data_throughput`` (FFCV against ImageFolder). Run them as files,
e.g. ``python benchmarks/model_throughput.py --help``, or through the CLI."""
