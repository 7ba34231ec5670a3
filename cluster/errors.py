"""The launcher's error type and its status lines (``[launch] ...``), shared by its parts."""

__all__ = ["LaunchError", "say"]


class LaunchError(Exception):
    """A problem the user can fix; printed as one message, without a traceback."""


def say(message: str) -> None:
    print(f"[launch] {message}", flush=True)
