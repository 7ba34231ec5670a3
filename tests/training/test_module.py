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
    assert all(
        p.ndim == 4 for m in model.modules() if isinstance(m, nn.Conv2d) for p in [m.weight] if id(p) in decay_ids
    )
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    assert len(decay_ids) + len(no_decay_ids) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"lr": 0.0}, "model.lr"),
        ({"momentum": 1.5}, "model.momentum"),
        ({"label_smoothing": 1.0}, "model.label_smoothing"),
        ({"ema_decay": 1.0}, "model.ema_decay"),
        ({"schedule": "exp"}, "model.schedule"),
        ({"momentum": 0.0, "nesterov": True}, "model.nesterov"),
    ],
)
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
    module = ImageClassifier(
        build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.1, schedule="cosine", warmup_epochs=1, ema_decay=0.5
    )
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[RecordLR()],
        default_root_dir=tmp_path,
    )
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
    from shufflenet_pl.callbacks import VerifiedModelCheckpoint

    class WorseEveryEpoch(L.Callback):  # a monitored score that only falls: only epoch 0 is "best"
        def on_validation_epoch_end(self, trainer, pl_module):
            pl_module.log("score", -float(trainer.current_epoch))

    checkpoint = VerifiedModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="score",
        mode="max",
        save_last=True,
        filename="best-{epoch}",
        save_on_train_epoch_end=on_train_epoch_end,
    )
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.01, schedule="constant")
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[WorseEveryEpoch(), checkpoint],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _tiny_loader(), _tiny_loader())
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False, map_location="cpu")
    assert last["global_step"] == trainer.global_step == 12
    assert last["epoch"] == 2
    assert Path(checkpoint.best_model_path).name == "best-epoch=0.ckpt"


def _fit_one_step(module: ImageClassifier, tmp_path, callbacks=()) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _tiny_loader())
    return trainer


def test_configure_optimizers_keeps_batchnorm_and_bias_out_of_weight_decay(tmp_path) -> None:
    """The optimizer the Trainer actually steps (not only the helper): every parameter with weight
    decay is a conv/linear weight; every BatchNorm parameter and bias has none; each parameter once."""
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.01, weight_decay=4e-5)
    trainer = _fit_one_step(module, tmp_path)
    (optimizer,) = trainer.optimizers
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(decay_of)  # no duplicates
    assert set(decay_of) == {id(p) for p in module.model.parameters()}
    no_decay = [p for m in module.model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    no_decay += [m.bias for m in module.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    assert no_decay and all(decay_of[id(p)] == 0.0 for p in no_decay)
    decay = [m.weight for m in module.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(decay_of[id(p)] == 4e-5 for p in decay)


def test_training_loss_is_label_smoothed_cross_entropy(tmp_path) -> None:
    """training_step's loss equals cross-entropy against smoothed targets, computed by hand from the
    network's logits on the same batch: (1 - eps) * NLL(target) + eps * mean over classes of -log p."""
    eps = 0.3
    torch.manual_seed(0)
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.01, label_smoothing=eps)
    with torch.no_grad():  # confident logits: far from uniform, where smoothing changes the loss most
        module.model.fc.weight.mul_(50)
    seen = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            images, targets = batch
            with torch.no_grad():  # the pre-step weights, in train mode as the step uses them
                log_p = pl_module.model(images).log_softmax(dim=1)
            nll = -log_p.gather(1, targets[:, None]).squeeze(1)
            seen["smoothed"] = ((1 - eps) * nll + eps * -log_p.mean(dim=1)).mean().item()
            seen["plain"] = nll.mean().item()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["loss"] = float(outputs["loss"])

    _fit_one_step(module, tmp_path, [Record()])
    assert abs(seen["smoothed"] - seen["plain"]) > 1e-2  # the test can tell the two apart
    assert seen["loss"] == pytest.approx(seen["smoothed"], rel=1e-5)


def test_validation_uses_the_ema_weights(tmp_path) -> None:
    """With EMA on, validation's logits come from the EMA copy: make it differ from the raw weights
    and compare the logged val/loss and val/acc1 with both, computed by hand."""
    torch.manual_seed(0)
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), ema_decay=0.9)
    with torch.no_grad():  # another classifier head in the EMA copy
        module.ema_model.module.fc.weight.normal_(0, 0.05)
        module.ema_model.module.fc.bias.normal_(0, 3.0)
    loader = _tiny_loader()

    def metrics(network: nn.Module) -> tuple:
        network.eval()
        with torch.no_grad():
            logits = torch.cat([network(x) for x, _ in loader])
        targets = torch.cat([y for _, y in loader])
        return (
            nn.functional.cross_entropy(logits, targets).item(),
            (logits.argmax(1) == targets).float().mean().item(),
        )

    ema_loss, ema_acc1 = metrics(module.ema_model.module)
    raw_loss, _ = metrics(module.model)
    assert abs(ema_loss - raw_loss) > 0.1, (ema_loss, raw_loss)  # the test can tell the two apart
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    (result,) = trainer.validate(module, loader, verbose=False)
    assert result["val/loss"] == pytest.approx(ema_loss, rel=1e-4)
    assert result["val/acc1"] == pytest.approx(ema_acc1, abs=1e-6)


def test_training_steps_do_not_read_values_back_from_the_device(tmp_path) -> None:
    """A step of ``fit`` reads no tensor value back to the host (on a GPU each read waits for the device
    and stalls the queue of a captured step): only the progress bar reads ``train/loss``, rate-limited.
    Counted as ``aten._local_scalar_dense`` calls (``.item()``, ``float()``) from one step to the next."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from shufflenet_pl.callbacks import LogFriendlyProgressBar

    class CountReads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                self.reads += 1
            return func(*args, **(kwargs or {}))

    counter = CountReads()

    class Window(L.Callback):  # from the start of batch 1 to the start of the last batch
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                counter.__enter__()
            elif batch_idx == trainer.num_training_batches - 1:
                counter.__exit__(None, None, None)

    bar = LogFriendlyProgressBar(interactive=False, log_every_percent=10)
    module = ImageClassifier(build_model("shufflenet_v2_x0_5", num_classes=10), lr=0.1, schedule="cosine")
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=100,
        callbacks=[Window(), bar],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(_tiny_loader(96).dataset, batch_size=8))
    steps_counted = trainer.num_training_batches - 2
    assert steps_counted == 10
    # The bar reads the loss at most twice a second (a slow machine gives a few reads in 10 steps).
    assert counter.reads <= 4, f"{counter.reads} device reads in {steps_counted} steps"
    assert torch.is_tensor(trainer.callback_metrics["train/lr"])
