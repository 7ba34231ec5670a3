"""Cluster layer of shufflenet-pl: resources, submission through submitit, requeue; no training logic.

``python launch.py`` runs :func:`cluster.submission.launch`, which reads in one screen; its parts:

- :mod:`cluster.args`: the command line, sweeps, the ``--config`` files checked first.
- :mod:`cluster.config`: the resolved training config, the job's size and folder put into it, the batch check.
- :mod:`cluster.submit`: SLURM or this machine, submitit's executors, submission, the dry run.
- :mod:`cluster.sbatch_script`: the one use of submitit's private script writer (the dry run).
- :mod:`cluster.follow`: rank 0's log followed, each fault and requeue told, the job's end, its failure explained.
- :mod:`cluster.slurm_state`: what ``scontrol`` and ``sinfo`` say about a job and its nodes.
- :mod:`cluster.resume`: ``--resume FOLDER``.
- :mod:`cluster.resources`: ``--nodes/--gpus`` and SLURM options, presets (``cluster/*.yaml``), checks.
- :mod:`cluster.job`: the submitit callable (``__call__`` runs ``shufflenet-pl fit``; ``checkpoint()``
  requeues it).
- :mod:`cluster.requeue`: the preemption signal deferred to a batch boundary, ``last.ckpt`` saved there.
- ``cluster/local/``: start/stop a real single-host SLURM cluster (tests, trying it out).
"""
