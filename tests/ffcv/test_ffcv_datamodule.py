"""FFCVImageNetDataModule outside a Trainer: arguments, errors, QUASI_RANDOM order, and batches."""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule, _input_dtype  # noqa: E402


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"order": "quasi_random"}, ValueError, "needs data.os_cache=false"),
        ({"order": "shuffle"}, ValueError, "data.order must be random or quasi_random"),
        ({"crop_scale": (0.5, 0.1)}, ValueError, "data.crop_scale"),
        ({"val_res": 4}, ValueError, "data.val_res must be >= 8"),
    ],
)
def test_bad_arguments_name_the_key(kwargs: dict, error: type, match: str, tmp_path: Path) -> None:
    with pytest.raises(error, match=match):
        FFCVImageNetDataModule(str(tmp_path), num_classes=10, **kwargs)


def test_missing_files_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shufflenet-pl convert"):
        FFCVImageNetDataModule(str(tmp_path / "nowhere"))


def test_input_dtype_follows_the_precision() -> None:
    assert _input_dtype("16-mixed") == torch.float16 and _input_dtype("bf16-mixed") == torch.bfloat16
    assert _input_dtype("32-true") == torch.float32


@pytest.mark.slow
def test_quasi_random_order_and_batches(demo_beton_root: Path) -> None:
    data = FFCVImageNetDataModule(
        str(demo_beton_root),
        batch_size=20,
        num_workers=1,
        train_res=40,
        val_res=48,
        order="quasi_random",
        os_cache=False,
        seed=3,
    )
    assert data.num_classes == 10 and data.classes[0] == "checker"  # from train.beton.json
    data.setup("fit")
    orders = [data.train_order(epoch) for epoch in (0, 1)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(200))  # every image once per epoch
    assert not np.array_equal(orders[0], orders[1])
    assert np.array_equal(orders[0], data.train_order(0))  # a pure function of (seed, epoch)
    # two ranks: disjoint halves of the same global order
    data.world_size, data.per_device_batch_size = 2, 10
    shards = [None, None]
    for rank in (0, 1):
        data.rank = rank
        shards[rank] = set(data.train_order(0).tolist())
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 200
    data.rank, data.world_size, data.per_device_batch_size = 0, 1, 20

    loader = data.train_dataloader()
    assert len(loader) == 10
    batches = list(loader)
    assert len(batches) == 10
    images, labels = batches[0]
    assert images.shape == (20, 3, 40, 40) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert abs(float(images.mean())) < 1.0  # normalised
    val_images, _ = next(iter(data.val_dataloader()))
    assert val_images.shape == (20, 3, 48, 48)
    assert len(data.val_dataloader()) == 3  # 60 images, batch 20
