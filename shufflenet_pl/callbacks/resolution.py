"""Progressive resizing: the training crop grows with the epoch (FFCV's ImageNet recipe)."""

from typing import List

import lightning as L

__all__ = ["ProgressiveResizing"]


class ProgressiveResizing(L.Callback):
    """Progressive resizing (FFCV's ImageNet recipe): the training crop at epoch ``e`` is
    :func:`shufflenet_pl.schedules.progressive_resolution` of ``e``, set on the datamodule
    (``set_train_resolution``, which both the FFCV and the ImageFolder datamodules have) before the
    epoch's first batch is decoded. Validation keeps the datamodule's own ``val_res``.

    A pure function of the epoch has no state to save: a run resumed mid-epoch recomputes the
    resolution of its epoch in ``on_train_start`` (Lightning does not call ``on_train_epoch_start``
    again for a resumed epoch).

    Args:
        min_res: resolution up to epoch ``start_ramp``.
        max_res: resolution from epoch ``end_ramp`` on.
        end_ramp: first epoch at ``max_res``.
        start_ramp: last epoch at ``min_res``.
        multiple: resolutions on the ramp are multiples of this.
    """

    def __init__(
        self, min_res: int = 160, max_res: int = 192, end_ramp: int = 13, start_ramp: int = 11, multiple: int = 32
    ) -> None:
        from ..schedules import progressive_resolution

        progressive_resolution(0, min_res, max_res, end_ramp, start_ramp, multiple)  # validates the arguments
        self.min_res, self.max_res = min_res, max_res
        self.start_ramp, self.end_ramp, self.multiple = start_ramp, end_ramp, multiple

    def resolution(self, epoch: int) -> int:
        """Training resolution of ``epoch``."""
        from ..schedules import progressive_resolution

        return progressive_resolution(epoch, self.min_res, self.max_res, self.end_ramp, self.start_ramp, self.multiple)

    def _apply(self, trainer: L.Trainer) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_train_resolution"):
            raise ValueError(
                f"ProgressiveResizing needs a datamodule with set_train_resolution(res); "
                f"{type(datamodule).__name__} has none"
            )
        datamodule.set_train_resolution(self.resolution(trainer.current_epoch))

    def training_resolutions(self, max_epochs: int) -> List[int]:
        """The distinct training resolutions of a run of ``max_epochs`` epochs, in order."""
        return list(dict.fromkeys(self.resolution(epoch) for epoch in range(max(max_epochs, 1))))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A compiled step keeps one static graph per resolution; torch recompiles a function at most
        # recompile_limit times, after which it silently falls back to eager.
        if (
            not getattr(pl_module, "hparams", {}).get("compile", False)
            or not trainer.max_epochs
            or trainer.max_epochs < 0
        ):
            return
        import torch._dynamo

        limit = getattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.cache_size_limit)
        resolutions = self.training_resolutions(trainer.max_epochs)
        if len(resolutions) > limit:
            raise ValueError(
                f"ProgressiveResizing: {len(resolutions)} training resolutions ({resolutions[0]}..{resolutions[-1]}) "
                f"need one compiled graph each, more than torch's limit of {limit}; raise `multiple` or "
                "narrow min_res..max_res"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer)
        pl_module.log("train/res", float(self.resolution(trainer.current_epoch)), on_step=False, on_epoch=True)
