"""Cluster layer of shufflenet-pl: resources, submission through submitit, requeue; no training logic.

- :mod:`cluster.resources`: ``--nodes/--gpus`` and SLURM options, presets (``cluster/*.yaml``), checks.
- :mod:`cluster.submission`: ``python launch.py``: resolved config, job folder, submit, follow.
- :mod:`cluster.job`: the submitit callable (``__call__`` runs ``shufflenet-pl fit``; ``checkpoint()``
  requeues it).
- :mod:`cluster.requeue`: the preemption signal deferred to a batch boundary, ``last.ckpt`` saved there.
- ``cluster/local/``: start/stop a real single-host SLURM cluster (tests, trying it out).
"""
