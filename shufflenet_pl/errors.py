"""The command line's error type: a problem that ``shufflenet-pl`` and ``launch.py`` report as one
line (``error: ...``, exit status 2), not as a traceback. Nothing here imports a third-party library,
so any module (the data modules, the input checks, the launcher) can raise it."""

__all__ = ["InputError"]


class InputError(ValueError):
    """A problem with the user's files or settings (a truncated ``.beton``, an empty class folder, a
    checkpoint of another width, a batch that does not divide): the command line reports it as one
    line (``error: ...``) wherever it is raised, also during ``fit``/``validate``, not as a traceback."""
