#!/usr/bin/env python
"""Launch ShuffleNet V2 training as a job: on SLURM through submitit, or on this machine.

    python launch.py                           # the built-in demo (SLURM if sbatch answers, else here)
    python launch.py --nodes 4 --gpus 8 --preset a100-example --config ...   # DDP on 32 GPUs
    python launch.py --help

The launcher only knows resources, submission and requeue (``cluster/``); training is
``shufflenet-pl fit`` with the job's resolved config.
"""

from cluster.submission import main

if __name__ == "__main__":
    main()
