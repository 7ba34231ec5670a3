"""The LightningModule: training logic around a built ``nn.Module`` (no dataset code here).

Cross-entropy with label smoothing, SGD with per-step LR schedules, no weight decay on BatchNorm
and bias parameters, top-1/top-5 accuracy from torchmetrics, optional channels_last,
``torch.compile`` (optionally captured as CUDA graphs) and an EMA of the weights.
"""

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics.classification import MulticlassAccuracy

from .data.common import normalize_on_device
from .errors import InputError
from .models.weights import state_dict_mismatch
from .schedules import LRSchedule, lr_factor

__all__ = ["COMPILE_MODES", "OPTIMIZER_IMPLS", "ImageClassifier", "split_weight_decay_params"]

# torch.compile modes: ``reduce-overhead`` and ``max-autotune`` capture the compiled step as CUDA
# graphs (one replay instead of hundreds of kernel launches); ``max-autotune-no-cudagraphs`` only tunes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# How SGD updates the parameters: ``fused`` (a few multi-tensor kernels), ``foreach`` (grouped ops),
# ``for-loop`` (one op per tensor); ``auto`` is fused on CUDA and torch's default elsewhere.
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for-loop")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def split_weight_decay_params(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Two optimizer parameter groups: weights of convolutions and linear layers get
    ``weight_decay``; BatchNorm scales/shifts and biases (every parameter with ``ndim <= 1``) get
    none. Selected by shape, never by name (a name test like ``'bn' in name`` matches nothing in
    torchvision's ShuffleNetV2, whose BN layers are called ``conv1.1``, ``branch2.4``...)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class ImageClassifier(L.LightningModule):
    """Train and evaluate an image classifier.

    Args:
        model: the network, e.g. ``ShuffleNetV2``; its last ``nn.Linear`` gives the class count.
        lr: peak learning rate (the official recipe: 0.5 at global batch 1024).
        momentum: SGD momentum.
        nesterov: use Nesterov momentum.
        weight_decay: L2 on conv/linear weights only; BatchNorm and biases get none.
        label_smoothing: cross-entropy label smoothing (0.1 in the official recipe).
        schedule: LR shape after warmup: ``linear`` (to 0, official), ``cosine``, ``step``, ``constant``.
        warmup_epochs: linear warmup length in epochs (fractions allowed); stepped per batch.
        milestones: epochs at which the ``step`` schedule multiplies the LR by ``gamma``.
        gamma: decay factor of the ``step`` schedule.
        channels_last: train and evaluate in NHWC memory format (faster with AMP on GPUs).
        compile: ``torch.compile`` the training step (input normalisation, network and loss as one
            region, static shapes: one graph per training resolution) and the evaluation forward
            (state-dict names are unchanged).
        compile_mode: ``torch.compile`` mode of the training step, one of :data:`COMPILE_MODES`;
            ``reduce-overhead`` (CUDA graphs) needs a CUDA device and whole batches.
        optimizer_impl: SGD implementation, one of :data:`OPTIMIZER_IMPLS`.
        ema_decay: keep an exponential moving average of the weights with this decay (e.g.
            0.9999) and validate/test with it; ``None`` turns it off.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.5,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 4e-5,
        label_smoothing: float = 0.1,
        schedule: LRSchedule = "linear",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (),
        gamma: float = 0.1,
        channels_last: bool = False,
        compile: bool = False,
        ema_decay: Optional[float] = None,
        compile_mode: str = "default",
        optimizer_impl: str = "auto",
    ) -> None:
        super().__init__()
        for key, value, ok in [
            ("lr", lr, lr > 0),
            ("momentum", momentum, 0 <= momentum < 1),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1),
            ("warmup_epochs", warmup_epochs, warmup_epochs >= 0),
            ("ema_decay", ema_decay, ema_decay is None or 0 < ema_decay < 1),
        ]:
            if not ok:
                raise ValueError(f"model.{key}={value!r} is out of range")
        if nesterov and momentum == 0:
            raise ValueError("model.nesterov=true needs model.momentum > 0")
        if schedule not in ("cosine", "linear", "step", "constant"):
            raise ValueError(f"model.schedule={schedule!r}: choose cosine, linear, step or constant")
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"model.compile_mode={compile_mode!r}: choose {', '.join(COMPILE_MODES)}")
        if compile_mode != "default" and not compile:
            raise ValueError(f"model.compile_mode={compile_mode!r} needs model.compile=true")
        if optimizer_impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"model.optimizer_impl={optimizer_impl!r}: choose {', '.join(OPTIMIZER_IMPLS)}")
        self.save_hyperparameters(ignore=["model"])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.num_classes = self._infer_num_classes(model)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top5 = min(5, self.num_classes)
        self.val_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")
        self.ema_model: Optional[AveragedModel] = None
        if ema_decay is not None:
            self.ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self._train_loss: Callable[[Tensor, Tensor], Tensor] = self._loss
        self._eval_forward: Callable[[Tensor], Tensor] = self._forward
        if compile:
            # Compiled functions around the unchanged modules: parameter and state-dict names stay the same.
            # dynamic=False: whole batches have one shape per resolution, so each resolution gets its own
            # static graph (CUDA graphs need that) instead of a slower shape-generic one.
            self._train_loss = torch.compile(self._loss, mode=compile_mode, dynamic=False)
            self._eval_forward = torch.compile(self._forward)  # last eval batches differ in size: default mode

    @staticmethod
    def _infer_num_classes(model: nn.Module) -> int:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear classifier to read the number of classes from")
        return linears[-1].out_features

    @property
    def eval_model(self) -> nn.Module:
        """The weights used for validation, test and predict: the EMA copy when it is on."""
        return self.ema_model.module if self.ema_model is not None else self.model

    def _prepare(self, images: Tensor) -> Tensor:
        if self.hparams.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _normalize(self, images: Tensor) -> Tensor:
        # uint8 batches (a loader that leaves normalisation to the device) are normalised here, inside
        # the compiled region, where it fuses into the first convolution's input.
        if images.dtype == torch.uint8:
            return normalize_on_device(images)
        return images

    def _forward(self, images: Tensor) -> Tensor:
        return self.eval_model(self._prepare(self._normalize(images)))

    def _loss(self, images: Tensor, targets: Tensor) -> Tensor:
        return self.criterion(self.model(self._prepare(self._normalize(images))), targets)

    def forward(self, images: Tensor) -> Tensor:
        return self._eval_forward(images)

    def check_device(self, device: torch.device) -> None:
        """Refuse settings that cannot run on ``device`` (CUDA graphs off CUDA).

        Raises:
            ValueError: naming the setting.
        """
        mode = self.hparams.compile_mode
        if mode in _CUDA_GRAPH_MODES and device.type != "cuda":
            raise ValueError(
                f"model.compile_mode={mode!r} captures CUDA graphs and needs a CUDA device "
                f"(this run trains on {device.type}); use model.compile_mode=default"
            )

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Before Lightning loads the weights: a checkpoint of another width or class count is
        refused in one line that names both networks (not one ``size mismatch`` line per tensor)."""
        path = self._trainer.ckpt_path if self._trainer is not None else None
        source = f"checkpoint {path}" if path else "the checkpoint"
        mismatch = state_dict_mismatch(source, checkpoint.get("state_dict", {}), self.model, prefix="model.")
        if mismatch is not None:
            raise InputError(mismatch)

    def on_fit_start(self) -> None:
        self.check_device(self.device)

    def training_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        if self.hparams.compile_mode in _CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be reused now
        loss = self._train_loss(images, targets)
        # A CUDA graph overwrites its output on the next replay: log a copy, not the graph's own tensor.
        logged = loss.detach().clone() if self.hparams.compile_mode in _CUDA_GRAPH_MODES else loss
        # Nothing logged here may wait for the device: Lightning turns progress-bar values into Python
        # numbers after every batch, and copies a Python float to the device with a blocking copy. So the
        # loss is not a progress-bar value (the bar reads it itself, twice a second at most) and the
        # learning rate is made on the device by a fill kernel.
        self.log("train/loss", logged, on_step=True, on_epoch=False)
        lr = self.optimizers().param_groups[0]["lr"]
        self.log("train/lr", torch.full((), float(lr), device=logged.device), on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_model is not None:
            self.ema_model.update_parameters(self.model)

    def _evaluate(self, batch: Tuple[Tensor, Tensor], stage: str) -> None:
        images, targets = batch
        logits = self(images)
        loss = nn.functional.cross_entropy(logits, targets)
        acc1, acc5 = (self.val_acc1, self.val_acc5) if stage == "val" else (self.test_acc1, self.test_acc5)
        acc1(logits, targets)
        acc5(logits, targets)
        # torchmetrics reduces correct/total across ranks; the loss is a mean of per-rank means.
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True)
        self.log(f"{stage}/acc1", acc1, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc5", acc5, on_epoch=True)

    def validation_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self(images).softmax(dim=1)
        top_probs, top_classes = probs.topk(min(5, self.num_classes), dim=1)
        return {"classes": top_classes, "probs": top_probs}

    def build_optimizer(self, device: Optional[torch.device] = None) -> torch.optim.SGD:
        """SGD over the weight-decay groups in the implementation ``optimizer_impl`` picks for
        ``device`` (default: the module's): ``auto`` is fused on CUDA, torch's default elsewhere."""
        hp = self.hparams
        device_type = (device or self.device).type
        impl = hp.optimizer_impl
        if impl == "auto":
            impl = "fused" if device_type == "cuda" else "default"
        flags: Dict[str, Any] = {
            "fused": {"fused": True},
            "foreach": {"foreach": True},
            "for-loop": {"foreach": False},
        }.get(impl, {})
        return torch.optim.SGD(
            split_weight_decay_params(self.model, hp.weight_decay),
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov,
            **flags,
        )

    def configure_optimizers(self) -> Dict[str, Any]:
        hp = self.hparams
        optimizer = self.build_optimizer()
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = self._steps_per_epoch(total_steps)
        warmup_steps = min(total_steps, round(hp.warmup_epochs * steps_per_epoch))
        milestones = [round(m * steps_per_epoch) for m in hp.milestones]

        def factor(step: int) -> float:
            return lr_factor(step, total_steps, warmup_steps, hp.schedule, milestones, hp.gamma)

        scheduler = LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self, total_steps: int) -> float:
        # estimated_stepping_batches has set up the train loader, so its length is known.
        batches = self.trainer.num_training_batches
        if math.isfinite(batches) and batches > 0:
            return math.ceil(batches / self.trainer.accumulate_grad_batches)
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            return total_steps / max_epochs
        if self.hparams.warmup_epochs or self.hparams.milestones:
            raise ValueError("model.warmup_epochs/milestones need trainer.max_epochs or a sized train loader")
        return float(total_steps)
