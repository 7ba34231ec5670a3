"""``shufflenet-pl``: the Lightning CLI (``fit``, ``validate``, ``test``, ``predict``) driven by the
YAML files in ``configs/``, plus a few tools that are not training runs (``shufflenet-pl TOOL -h``)."""

import argparse
import importlib
import sys
from typing import Callable, Dict, List, Optional

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch import LightningDataModule

from .callbacks import PredictionWriter
from .module import ImageClassifier

__all__ = ["ShuffleNetCLI", "TOOLS", "build_cli", "main"]

# Tools besides the Lightning subcommands: name -> ("module:function", one-line help). Imported only
# when used, so that ``shufflenet-pl fit`` does not pay for them.
TOOLS: Dict[str, tuple] = {
    "import-weights": ("shufflenet_pl.tools:import_weights_main", "check a torchvision shufflenet_v2_x*.pth and save it for --weights"),
}


def _tools_epilog() -> str:
    lines = ["more tools (shufflenet-pl TOOL -h):"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in TOOLS.items()]
    lines.append("example: shufflenet-pl fit --config configs/experiment/demo.yaml")
    lines.append("")
    return "\n".join(lines)


class ShuffleNetCLI(LightningCLI):
    """LightningCLI with the model's class count linked to the data, and ``--weights``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--weights",
            type=Optional[str],
            default=None,
            help="state-dict file loaded strictly into the network before running (torchvision's "
            "shufflenet_v2_x*.pth, or a checkpoint); read with weights_only=True",
        )
        # The data decides the class count; the classifier head follows it so they cannot disagree.
        parser.link_arguments(
            "data", "model.model.init_args.num_classes", compute_fn=lambda data: data.num_classes, apply_on="instantiate"
        )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            # Bad values in the config: a one-line message that names the key, not a traceback.
            self.parser.exit(2, f"error: {err}\n")
        weights = self._get(self.config, "weights")
        if weights:
            from .models.weights import load_torchvision_weights

            load_torchvision_weights(self.model.model, weights)
            if self.model.ema_model is not None:
                self.model.ema_model.module.load_state_dict(self.model.model.state_dict())

    def before_predict(self) -> None:
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def build_cli(args: Optional[List[str]] = None, run: bool = True) -> ShuffleNetCLI:
    """The Lightning CLI over ``args`` (``run=False`` only parses and instantiates)."""
    return ShuffleNetCLI(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": _tools_epilog(), "formatter_class": argparse.RawDescriptionHelpFormatter},
        auto_configure_optimizers=False,
    )


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
