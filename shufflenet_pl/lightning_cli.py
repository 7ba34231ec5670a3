"""The Lightning side of ``shufflenet-pl``: :class:`ShuffleNetCLI` (``fit``, ``validate``, ``test``,
``predict``). Kept apart from :mod:`shufflenet_pl.cli` so that the tools there start without importing
Lightning."""

import argparse
from typing import Any, List, Optional

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .callbacks import PredictionWriter
from .tools import tools_epilog
from .module import ImageClassifier
from .quiet import make_trainer_quiet, silence_third_party_noise
from .tracking.wandb_logger import RunConfigSaver, apply_cli_defaults, remove_wandb_loggers

__all__ = ["ShuffleNetCLI", "build_cli"]


SUBCOMMAND_HELP = {
    "fit": "train a model, validating after every epoch; --ckpt_path resumes from a checkpoint",
    "validate": "evaluate a checkpoint (--ckpt_path) or weights (--weights) on the validation set",
    "test": "evaluate once more on the held-out images (the validation set: ImageNet publishes no test labels)",
    "predict": "write top-5 predictions for the validation images to predictions.csv",
}


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
        parser.add_argument(
            "--no-wandb",
            action="store_true",
            help="do not log to W&B: the config's W&B logger is dropped (a CSVLogger in "
            "trainer.default_root_dir replaces it when no other logger is left)",
        )
        # The data decides the class count; the classifier head follows it so they cannot disagree.
        parser.link_arguments(
            "data", "model.model.init_args.num_classes", compute_fn=lambda data: data.num_classes, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        if self._get(self.config, "no_wandb"):
            remove_wandb_loggers(self.config.get(str(self.subcommand), self.config).trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            # Bad values in the config: a one-line message that names the key, not a traceback.
            self.parser.exit(2, f"error: {err}\n")
        apply_cli_defaults(self.trainer, self.subcommand)
        make_trainer_quiet(self.trainer)
        weights = self._get(self.config, "weights")
        if weights:
            from .models.weights import load_torchvision_weights

            load_torchvision_weights(self.model.model, weights)
            if self.model.ema_model is not None:
                self.model.ema_model.module.load_state_dict(self.model.model.state_dict())

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Lightning takes each subcommand's help from the first sentence of the Trainer method's
        # docstring, which its line wrapping cuts mid-sentence ("never run on your"); say it whole.
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

    def before_fit(self) -> None:
        try:  # a setting the chosen device cannot run: one line before any work, not a traceback from fit
            self.model.check_device(self.trainer.strategy.root_device)
        except ValueError as err:
            self.parser.exit(2, f"error: {err}\n")

    def before_predict(self) -> None:
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def build_cli(args: Optional[List[str]] = None, run: bool = True) -> ShuffleNetCLI:
    """The Lightning CLI over ``args`` (``run=False`` only parses and instantiates)."""
    silence_third_party_noise()
    return ShuffleNetCLI(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": tools_epilog(), "formatter_class": argparse.RawDescriptionHelpFormatter},
        auto_configure_optimizers=False,
    )
