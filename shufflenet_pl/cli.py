"""``shufflenet-pl``: the Lightning CLI (``fit``, ``validate``, ``test``, ``predict``) driven by the
YAML files in ``configs/``, plus a few tools that are not training runs (``shufflenet-pl TOOL -h``).

Lightning is imported only for the Lightning subcommands (:mod:`shufflenet_pl.lightning_cli`), so the
tools start quickly."""

import importlib
import sys
from typing import Any, Callable, List, Optional

from .tools import TOOLS

__all__ = ["TOOLS", "build_cli", "main"]  # ShuffleNetCLI: lazily, through __getattr__


def build_cli(args: Optional[List[str]] = None, run: bool = True, save_config: bool = True) -> Any:
    """The Lightning CLI (:class:`~shufflenet_pl.lightning_cli.ShuffleNetCLI`) over ``args``
    (``run=False`` only parses and instantiates; ``save_config=False``: no copy of the resolved
    config in the run's folder, for a caller that keeps it already)."""
    from .lightning_cli import build_cli as build_lightning_cli

    return build_lightning_cli(args, run, save_config)


def __getattr__(name: str) -> Any:
    if name == "ShuffleNetCLI":
        from .lightning_cli import ShuffleNetCLI

        return ShuffleNetCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run_tool(name: str, argv: List[str]) -> None:
    target, _ = TOOLS[name]
    module_name, function_name = target.split(":")
    function: Callable[[List[str]], None] = getattr(importlib.import_module(module_name), function_name)
    function(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point of ``shufflenet-pl``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in TOOLS:
        _run_tool(args[0], args[1:])
        return
    build_cli(argv)


if __name__ == "__main__":
    main()
