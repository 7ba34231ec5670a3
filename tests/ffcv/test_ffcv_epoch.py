"""FFCV epochs through the datamodule: a loader thread's exception ends the iteration with that
exception (never a hang), and inference mode (Lightning's validate/test/predict) does not break the
loader thread (signals during a stalled wait: tests/launch/test_cli.py). Real ``Loader`` on a real ``.beton``; faults
are real pipeline ops (tests/helpers/ffcv_faults.py)."""

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import torch

pytest.importorskip("ffcv", reason="ffcv is installed by setup.sh")

from helpers.ffcv_faults import FAULT_MESSAGE, FaultyFFCVDataModule  # noqa: E402

from shufflenet_pl.data.ffcv import FFCVImageNetDataModule  # noqa: E402

# The first epoch JIT-compiles the pipeline (tens of seconds on a small machine): the bound on a
# whole iteration is generous; the bound that matters is the one on the time from fault to raise.
ITERATION_LIMIT_S = 300
RAISE_WITHIN_S = 5.0


def _iterate_in_thread(loader: Any, inference: bool, **kwargs: Any) -> Dict[str, Any]:
    """Iterate ``loader`` in a daemon thread (so that a hang fails the test instead of blocking it):
    the batches, the exception and when it was raised."""
    out: Dict[str, Any] = {"batches": [], "error": None, "raised_at": None}

    def body() -> None:
        try:
            with torch.inference_mode(inference):
                for images, labels in loader:
                    out["batches"].append((images.clone(), labels.clone()))
        except BaseException as error:  # noqa: B036 - recorded for the test's assertions
            out["raised_at"] = time.monotonic()
            out["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(ITERATION_LIMIT_S)
    out["hung"] = thread.is_alive()
    return out


def _data(cls: Callable = FFCVImageNetDataModule, **kwargs: Any) -> FFCVImageNetDataModule:
    data = cls(batch_size=20, num_workers=1, train_res=32, val_res=32, **kwargs)
    data.setup("validate")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("inference", [False, True], ids=["no_grad", "inference_mode"])
def test_loader_thread_exception_ends_iteration_with_it(demo_beton_root: Path, inference: bool) -> None:
    data = _data(FaultyFFCVDataModule, root=str(demo_beton_root), fault="raise", fault_batch=2)
    out = _iterate_in_thread(data.val_dataloader(), inference)
    assert not out["hung"], "iteration still waits for a batch after the loader thread failed"
    assert isinstance(out["error"], ValueError) and FAULT_MESSAGE in str(out["error"]), repr(out["error"])
    assert any(str(demo_beton_root / "val.beton") in note for note in out["error"].__notes__)
    assert len(out["batches"]) == 2  # the batches finished before the fault are delivered first
    assert out["raised_at"] - data.fault_op.raised_at < RAISE_WITHIN_S


@pytest.mark.slow
def test_inference_mode_gives_the_same_batches(demo_beton_root: Path) -> None:
    """Lightning's validate/test/predict iterate under ``torch.inference_mode``: the loader thread
    must still write its buffers, and the batches must be those of a plain iteration."""
    data = _data(root=str(demo_beton_root))
    plain = _iterate_in_thread(data.val_dataloader(), inference=False)
    inference = _iterate_in_thread(data.val_dataloader(), inference=True)
    assert not plain["hung"] and not inference["hung"]
    assert plain["error"] is None and inference["error"] is None, repr(inference["error"])
    assert len(inference["batches"]) == len(plain["batches"]) == 3  # 60 images, batch 20
    for (x0, y0), (x1, y1) in zip(plain["batches"], inference["batches"]):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
