"""``shufflenet-pl``: the Lightning CLI (``fit``, ``validate``, ``test``, ``predict``) driven by the
YAML files in ``configs/``, plus a few tools that are not training runs (``shufflenet-pl TOOL -h``).

Lightning is imported only for the Lightning subcommands (:mod:`shufflenet_pl.lightning_cli`), so the
tools start quickly."""

import importlib
import sys
from typing import Any, Callable, Dict, List, Optional

__all__ = ["ShuffleNetCLI", "TOOLS", "build_cli", "main"]

# Tools besides the Lightning subcommands: name -> ("module:function", one-line help). Imported only
# when used, so that ``shufflenet-pl fit`` does not pay for them.
TOOLS: Dict[str, tuple] = {
    "import-weights": ("shufflenet_pl.tools:import_weights_main", "check a torchvision shufflenet_v2_x*.pth and save it for --weights"),
    "convert": ("shufflenet_pl.data.convert:convert_main", "write train.beton / val.beton (FFCV) from an ImageFolder tree"),
    "analyze": ("shufflenet_pl.analysis.cli:analyze_main", "reuse: Fig. 4 feature-reuse matrices; model: Table 5 + params, FLOPs, memory, speed"),
    "plot": ("shufflenet_pl.tracking.plot:plot_main", "draw a run's accuracy and throughput curves to PNG (W&B offline files or metrics.csv)"),
    "dashboard": ("shufflenet_pl.tracking.dashboard:dashboard_main", "build (and with a W&B key, save) a workspace with accuracy and throughput side by side"),
    "bench": ("benchmarks.model_throughput:main", "time our model against torchvision's per width and setting: table, JSON, speedup and speed-vs-FLOPs PNGs"),
    "guidelines": ("benchmarks.guidelines:main", "the paper's Tables 1-4 (guidelines G1-G4) timed on this device: tables, JSON, PNG"),
}


def tools_epilog() -> str:
    lines = ["more tools (shufflenet-pl TOOL -h):"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in TOOLS.items()]
    lines.append("example: shufflenet-pl fit --config configs/experiment/demo.yaml")
    lines.append("")
    return "\n".join(lines)


def build_cli(args: Optional[List[str]] = None, run: bool = True) -> Any:
    """The Lightning CLI (:class:`~shufflenet_pl.lightning_cli.ShuffleNetCLI`) over ``args``
    (``run=False`` only parses and instantiates)."""
    from .lightning_cli import build_cli as build_lightning_cli

    return build_lightning_cli(args, run)


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
