"""The sbatch script a submitit ``SlurmExecutor`` would submit, without submitting it (``--dry-run``).

submitit has no public call for this: the script comes from its executor's private
``_make_submission_file_text`` and ``_submitit_command_str``. They are used here only, so that a
submitit release that changes them breaks one function (and its test), not the launcher.
"""

from typing import Any

__all__ = ["sbatch_script"]


def sbatch_script(executor: Any) -> str:
    """The text of the sbatch script ``executor`` (a ``submitit.SlurmExecutor``) writes for a job."""
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
