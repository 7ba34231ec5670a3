"""The CLI's config saver: the resolved config beside the run, and in the W&B run's config."""

import os
from typing import Any, Dict

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

__all__ = ["RunConfigSaver"]


def _config_dict(parser: Any, config: Namespace) -> Dict[str, Any]:
    import yaml

    return yaml.safe_load(parser.dump(config, skip_none=False))


class RunConfigSaver(SaveConfigCallback):
    """The CLI's config saver: writes the resolved config as ``config.yaml`` and sends it, with the
    processes and devices actually used, to the W&B run's config (keys ``config`` and ``runtime``).

    With a W&B logger first, ``config.yaml`` goes into the run's folder
    ``<save_dir>/<project>/<run id>/``, beside the ``checkpoints/`` that Lightning puts there, instead
    of one file in ``save_dir`` that every run would overwrite. Other loggers keep Lightning's place
    (``trainer.log_dir``).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        first = trainer.loggers[0] if trainer.loggers else None
        if self.already_saved or not self.save_to_log_dir or not isinstance(first, WandbLogger):
            super().setup(trainer, pl_module, stage)
            return
        # Same folder as ModelCheckpoint's default: <save_dir>/<name>/<version>; rank 0 knows the run id.
        run_dir = os.path.join(first.save_dir or trainer.default_root_dir, str(first.name), str(first.version))
        run_dir = trainer.strategy.broadcast(run_dir)
        if trainer.is_global_zero:
            os.makedirs(run_dir, exist_ok=True)
            self.parser.save(
                self.config,
                os.path.join(run_dir, self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not wandb_loggers:
            return
        runtime: Dict[str, Any] = {
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "devices_per_node": trainer.num_devices,
            "accelerator": trainer.strategy.root_device.type,
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        }
        if trainer.strategy.root_device.type == "cuda":
            runtime["device_name"] = torch.cuda.get_device_name(trainer.strategy.root_device)
        update = {"config": _config_dict(self.parser, self.config), "runtime": runtime}
        for logger in wandb_loggers:
            logger.experiment.config.update(update, allow_val_change=True)
