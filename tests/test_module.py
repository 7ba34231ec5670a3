"""The LightningModule's training logic: weight-decay groups, validation of arguments, EMA, logging."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shufflenet_pl.models import build_model
from shufflenet_pl.module import ImageClassifier, split_weight_decay_params


def test_no_weight_decay_on_batchnorm_and_bias() -> None:
    model = build_model("shufflenet_v2_x0_5", num_classes=10)
    decay, no_decay = split_weight_decay_params(model, 4e-5)
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert bn_params <= no_decay_ids
    assert id(model.fc.bias) in no_decay_ids and id(model.fc.weight) in decay_ids
    assert all(p.ndim == 4 for m in model.modules() if isinstance(m, nn.Conv2d) for p in [m.weight] if id(p) in decay_ids)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    assert len(decay_ids) + len(no_decay_ids) == len(list(model.parameters()))


@pytest.mark.parametrize("kwargs, key", [
    ({"lr": 0.0}, "model.lr"),
    ({"momentum": 1.5}, "model.momentum"),
    ({"label_smoothing": 1.0}, "model.label_smoothing"),
    ({"ema_decay": 1.0}, "model.ema_decay"),
    ({"schedule": "exp"}, "model.schedule"),
    ({"momentum": 0.0, "nesterov": True}, "model.nesterov"),
])
def test_bad_hyperparameters_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), **kwargs)


def _tiny_loader(n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_per_step_schedule_and_ema(tmp_path) -> None:
    """LR follows warmup+cosine per optimizer step; the EMA copy moves towards the weights and is
    what validation uses."""
    torch.manual_seed(0)
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.1, schedule="cosine",
                             warmup_epochs=1, ema_decay=0.5)
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[RecordLR()], default_root_dir=tmp_path)
    trainer.fit(module, _tiny_loader(), _tiny_loader())
    # 4 steps per epoch: warmup over steps 0-3, cosine over 4-7.
    assert lrs[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert lrs[4:] == sorted(lrs[4:], reverse=True)
    assert module.eval_model is module.ema_model.module
    ema_w, w = module.ema_model.module.fc.weight, module.model.fc.weight
    assert not torch.equal(ema_w, w)  # an average, not a copy
    assert int(module.ema_model.n_averaged) == 8


@pytest.mark.parametrize("on_train_epoch_end", [False, True], ids=["after-validation", "after-train-epoch"])
def test_last_checkpoint_is_refreshed_when_the_metric_does_not_improve(tmp_path, on_train_epoch_end: bool) -> None:
    """Lightning's own ModelCheckpoint leaves last.ckpt at the best epoch; ours keeps it at the newest."""
    from shufflenet_pl.callbacks import ModelCheckpoint

    class WorseEveryEpoch(L.Callback):  # a monitored score that only falls: only epoch 0 is "best"
        def on_validation_epoch_end(self, trainer, pl_module):
            pl_module.log("score", -float(trainer.current_epoch))

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="score", mode="max", save_last=True,
                                 filename="best-{epoch}", save_on_train_epoch_end=on_train_epoch_end)
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.01, schedule="constant")
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        callbacks=[WorseEveryEpoch(), checkpoint], default_root_dir=tmp_path)
    trainer.fit(module, _tiny_loader(), _tiny_loader())
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["global_step"] == trainer.global_step == 12
    assert last["epoch"] == 2
    assert Path(checkpoint.best_model_path).name == "best-epoch=0.ckpt"
