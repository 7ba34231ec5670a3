"""Our FFCV decode stage (shufflenet_pl.data.ffcv_decode): seeded boxes with torchvision's
distribution, decoded crops against PIL, mirror-image flips, and bitwise-reproducible batches
through real .beton files."""

import math
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from shufflenet_pl.data import ffcv_decode as fd  # noqa: E402

LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def test_boxes_follow_torchvision_random_resized_crop() -> None:
    stats = pytest.importorskip("scipy.stats")
    from torchvision.transforms import RandomResizedCrop

    height, width, draws = 375, 500, 4000
    ours = np.array(
        [fd.random_crop_box(height, width, 0.08, 1.0, *LOG_RATIO, 7, 0, index)[:4] for index in range(draws)]
    )
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(draws)])
    for boxes in (ours, theirs):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()

    def features(boxes: np.ndarray) -> List[np.ndarray]:
        top, left, h, w = boxes.T
        centre_y, centre_x = (top + h / 2) / height, (left + w / 2) / width
        return [h * w / (height * width), np.log(w / h), centre_y, centre_x]

    for name, a, b in zip(("scale", "log-aspect", "centre y", "centre x"), features(ours), features(theirs)):
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
    flips = [fd.random_crop_box(height, width, 0.08, 1.0, *LOG_RATIO, 7, 0, index)[4] for index in range(draws)]
    assert abs(np.mean(flips) - 0.5) < 0.04


def test_box_fallback_is_torchvisions_center_crop() -> None:
    from torchvision.transforms import RandomResizedCrop

    # No try can fit (every h exceeds the height): both fall back to the centered box of the widest ratio.
    for height, width in ((10, 1000), (1000, 10)):
        expected = RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.9, 1.0], [3 / 4, 4 / 3])
        assert fd.random_crop_box(height, width, 0.9, 1.0, *LOG_RATIO, 0, 0, 0)[:4] == tuple(expected)


def test_boxes_are_keyed_by_seed_epoch_and_index() -> None:
    def boxes(seed: int, epoch: int) -> List[Tuple]:
        return [fd.random_crop_box(375, 500, 0.08, 1.0, *LOG_RATIO, seed, epoch, index) for index in range(50)]

    assert boxes(0, 0) == boxes(0, 0)
    assert boxes(0, 0) != boxes(1, 0)
    assert boxes(0, 0) != boxes(0, 1)
    assert fd.random_draws(0, 0, 3, 8).tolist() != fd.random_draws(0, 0, 4, 8).tolist()


@pytest.fixture(scope="module")
def natural_jpegs(tmp_path_factory: pytest.TempPathFactory) -> List[Tuple[np.ndarray, np.ndarray]]:
    """ImageNet-sized photo-like JPEGs as FFCV stores them in a .beton: (jpeg bytes, PIL's decode)."""
    from PIL import Image

    from benchmarks.data_throughput import make_imagenet_like_jpegs, stored_jpegs
    from shufflenet_pl.data.convert import convert_split

    root = tmp_path_factory.mktemp("natural")
    split = make_imagenet_like_jpegs(root, 6)
    convert_split(split, root / "train.beton", write_mode="jpg", jpeg_quality=90, num_workers=1, progress=False)
    out = []
    for data, height, width in stored_jpegs(root / "train.beton"):
        from io import BytesIO

        image = np.asarray(Image.open(BytesIO(data.tobytes())).convert("RGB"))
        assert image.shape == (height, width, 3)
        out.append((np.ascontiguousarray(data), image))
    return out


def _decode(
    data: np.ndarray,
    mode: int,
    height: int,
    width: int,
    box: Tuple[int, int, int, int],
    flip: bool,
    res: int,
    interpolation: int = fd.DEFAULT_INTERPOLATION,
) -> np.ndarray:
    out = np.empty((res, res, 3), np.uint8)
    temp = np.empty(height * width * 3, np.uint8)
    assert fd.decode_box(data, mode, height, width, *box, flip, temp, out, interpolation) == 0
    return out


@pytest.mark.parametrize("res", [176, 64])
def test_decoded_crops_match_pil_and_flips_mirror(natural_jpegs: list, res: int) -> None:
    from PIL import Image

    scales_seen = set()
    for index, (data, image) in enumerate(natural_jpegs):
        height, width = image.shape[:2]
        for epoch in range(3):
            box = fd.random_crop_box(height, width, 0.08, 1.0, *LOG_RATIO, 0, epoch, index)[:4]
            num = fd.decode_plan(height, width, *box, res, res)[0]
            scales_seen.add(num)
            top, left, h, w = box  # the decoded box is the box, rounded to the scaled grid
            assert np.allclose(
                fd.decoded_box(height, width, *box, res, res), (left, top, left + w, top + h), atol=4 / num + 1e-9
            )
            reference = np.asarray(
                Image.fromarray(image).resize(
                    (res, res), Image.BILINEAR, box=fd.decoded_box(height, width, *box, res, res)
                )
            )
            plain = _decode(data, 0, height, width, box, False, res)
            assert psnr(plain, reference) >= 30, (index, box)
            flipped = _decode(data, 0, height, width, box, True, res)
            assert np.array_equal(flipped, plain[:, ::-1])
    assert len(scales_seen) > 1  # the DCT scale path is exercised, not only full-size decodes


def test_only_the_box_is_decoded_and_equals_the_full_decode(natural_jpegs: list) -> None:
    """The box kernel's pixels are exactly those of a full decode (libffcv's) at the same DCT scale,
    and it decodes fewer columns than the image has when the box is narrow."""
    from ffcv.libffcv import imdecode

    data, image = natural_jpegs[0]
    height, width = image.shape[:2]
    box = (40, 96, 120, 100)  # top, left, h, w: well inside, narrow
    num, decoded_h, decoded_w, r0, r1, c0, c1 = fd.decode_plan(height, width, *box, 64, 64)
    full = np.zeros((decoded_h, decoded_w, 3), dtype=np.uint8)
    assert imdecode(data, full, height, width, height, width, 0, 0, num, 8, False, False) == 0
    temp = np.zeros(height * width * 3, dtype=np.uint8)
    status, offset, row_bytes, box_w, box_h = fd.decode_jpeg_box(data, height, width, *box, 64, 64, temp)
    assert (box_w, box_h) == (c1 - c0, r1 - r0)
    assert status == 0 and row_bytes < decoded_w * 3  # columns were cropped
    region = np.stack([temp[offset + r * row_bytes : offset + r * row_bytes + (c1 - c0) * 3] for r in range(r1 - r0)])
    assert np.array_equal(region.reshape(r1 - r0, c1 - c0, 3), full[r0:r1, c0:c1])


def test_a_corrupt_jpeg_gives_an_error_status_and_a_black_image_then_decoding_goes_on(natural_jpegs: list) -> None:
    data, image = natural_jpegs[0]
    height, width = image.shape[:2]
    broken = data.copy()
    broken[2:200] = 0  # the markers after SOI are gone
    out = np.full((64, 64, 3), 7, dtype=np.uint8)
    temp = np.zeros(height * width * 3, dtype=np.uint8)
    status = fd.decode_box(
        broken, int(fd._JPG), height, width, 0, 0, height, width, False, temp, out, fd.DEFAULT_INTERPOLATION
    )
    assert status != 0 and not out.any()
    # the thread's decoder is reused: the next image decodes normally
    assert (
        fd.decode_box(
            data, int(fd._JPG), height, width, 0, 0, height, width, False, temp, out, fd.DEFAULT_INTERPOLATION
        )
        == 0
        and out.any()
    )


def test_raw_images_take_the_same_path(natural_jpegs: list) -> None:
    from PIL import Image

    data, image = natural_jpegs[0]
    height, width = image.shape[:2]
    raw = np.ascontiguousarray(image).reshape(-1)
    box = (30, 50, 200, 260)
    reference = np.asarray(Image.fromarray(image).resize((96, 96), Image.BILINEAR, box=(50, 30, 310, 230)))
    plain = _decode(raw, 1, height, width, box, False, 96)
    assert psnr(plain, reference) >= 30
    assert np.array_equal(_decode(raw, 1, height, width, box, True, 96), plain[:, ::-1])


def test_center_crop_is_deterministic_and_close_to_pil(natural_jpegs: list) -> None:
    from PIL import Image

    for data, image in natural_jpegs:
        height, width = image.shape[:2]
        out, again = (np.empty((112, 112, 3), np.uint8) for _ in range(2))
        temp = np.empty(height * width * 3, np.uint8)
        for target in (out, again):
            assert fd.decode_center_crop(data, 0, height, width, 224 / 256, temp, target, fd.DEFAULT_INTERPOLATION) == 0
        assert np.array_equal(out, again)
        top, left, h, w = fd.center_crop_box(height, width, 224 / 256)
        assert h == w == int(224 / 256 * min(height, width)) and top == (height - h) // 2 and left == (width - w) // 2
        reference = np.asarray(
            Image.fromarray(image).resize(
                (112, 112), Image.BILINEAR, box=fd.decoded_box(height, width, top, left, h, w, 112, 112)
            )
        )
        assert psnr(out, reference) >= 30


def test_decoder_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        fd.SeededRandomResizedCropDecoder((32, 32), interpolation=7)
    with pytest.raises(ValueError, match="ratio"):
        fd.CenterCropDecoder((32, 32), ratio=1.5)


def _epoch_images(data, epoch: int, skip: int = 0) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat([images for images, _ in data._start_train_epoch(epoch, skip)])


@pytest.mark.slow
def test_same_seed_same_batches_for_any_worker_count(demo_beton_root: Path) -> None:
    from shufflenet_pl.data.ffcv import FFCVImageNetDataModule

    def module(workers: int, seed: int) -> FFCVImageNetDataModule:
        data = FFCVImageNetDataModule(
            str(demo_beton_root), batch_size=20, num_workers=workers, train_res=40, val_res=48, seed=seed
        )
        data.setup("fit")
        return data

    one, two, other = module(1, 5), module(2, 5), module(2, 6)
    code = one.train_loader.code
    epochs = [_epoch_images(one, epoch) for epoch in (0, 1)]
    assert one.train_loader.code is code  # a new epoch reaches the compiled code without recompiling
    assert one._train_decoder.epoch == 1
    for epoch in (0, 1):
        assert torch.equal(_epoch_images(two, epoch), epochs[epoch])
        assert not torch.equal(_epoch_images(other, epoch), epochs[epoch])
    assert not torch.equal(epochs[0], epochs[1])
    # Same samples in the same order: the epoch alone changes the crops (it reaches the JIT code at run time).
    one.train_order = lambda epoch: np.arange(200)  # type: ignore[method-assign]
    fixed = [_epoch_images(one, epoch) for epoch in (0, 1, 0)]
    assert not torch.equal(fixed[0], fixed[1]) and torch.equal(fixed[0], fixed[2])
    assert one.train_loader.code is code
    # Resumed mid-epoch: the remaining batches are those of the uninterrupted epoch.
    assert torch.equal(_epoch_images(two, 1, skip=4), epochs[1][4 * 20 :])
    # Validation: deterministic and independent of the worker count.
    val = [torch.cat([images for images, _ in data.val_dataloader()]) for data in (one, two, one)]
    assert val[0].shape == (60, 3, 48, 48) and torch.equal(val[0], val[1]) and torch.equal(val[0], val[2])
    # Progressive resizing still changes the output between epochs.
    two.set_train_resolution(32)
    assert _epoch_images(two, 2).shape == (200, 3, 32, 32)


def test_a_batch_hands_out_its_largest_stored_images_first() -> None:
    metadata = np.zeros(6, dtype=[("height", "<u4"), ("width", "<u4")])
    metadata["height"] = [100, 300, 200, 300, 50, 400]
    metadata["width"] = [100, 300, 300, 300, 50, 100]
    batch = np.array([4, 1, 0, 3, 2, 5], dtype=np.uint64)  # areas 2500, 90000, 10000, 90000, 60000, 40000
    order = fd.largest_first(batch, metadata)
    assert order.tolist() == [1, 3, 4, 5, 2, 0]  # equal areas keep batch order


@pytest.mark.slow
def test_images_of_many_sizes_decode_bitwise_alike_on_any_worker_count(tmp_path: Path) -> None:
    """Which thread decodes an image, and in which order, never changes a batch."""
    from ffcv.fields.decoders import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor

    from benchmarks.data_throughput import make_imagenet_like_jpegs
    from shufflenet_pl.data.convert import convert_split
    from shufflenet_pl.data.ffcv_epoch import start_epoch

    split = make_imagenet_like_jpegs(tmp_path / "jpeg", 24)
    beton = tmp_path / "train.beton"
    convert_split(split, beton, write_mode="jpg", max_side=200, num_workers=1, progress=False)

    def batches(workers: int, batch_size: int, decoder: object) -> torch.Tensor:
        loader = Loader(
            str(beton),
            batch_size=batch_size,
            num_workers=workers,
            order=OrderOption.SEQUENTIAL,
            pipelines={"image": [decoder, ToTensor()], "label": [IntDecoder(), ToTensor()]},
        )
        return torch.cat([images.clone() for images, _ in start_epoch(loader)])

    for make in (lambda: fd.SeededRandomResizedCropDecoder((48, 48), seed=3), lambda: fd.CenterCropDecoder((48, 48))):
        alone = batches(1, 1, make())  # one image per batch: nothing to schedule
        assert alone.shape == (24, 48, 48, 3)
        for workers in (1, 2):  # numba allows at most one thread per CPU
            assert torch.equal(batches(workers, 12, make()), alone)


def test_decoders_take_the_lowest_free_row_of_the_run_value_table() -> None:
    """Rows are part of the compiled wrapper's cache key: a freed row is reused first, so the same
    program takes the same rows in every process (and a second start finds its cached code)."""
    import gc

    gc.collect()  # decoders of earlier tests give their rows back
    fd._free_rows.sort()
    first = fd.SeededRandomResizedCropDecoder((32, 32), seed=1)
    second = fd.SeededRandomResizedCropDecoder((32, 32), seed=2)
    rows = sorted([first._row, second._row])
    assert rows[0] < rows[1] < min(fd._free_rows) and first.seed == 1 and second.seed == 2
    del first, second  # both rows go back to the free list, after the higher ones
    gc.collect()
    third = fd.SeededRandomResizedCropDecoder((32, 32), seed=3)
    assert third._row == rows[0] and third.seed == 3
