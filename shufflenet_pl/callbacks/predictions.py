"""Write what ``predict`` returns to a CSV file, one row per image."""

import csv
from pathlib import Path
from typing import Any, List, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from ..files import atomic_write

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` results to ``<output_dir>/predictions.csv``: one row per image with its path
    (when the datamodule has ``predict_samples()``), the top-k class names and probabilities.

    Args:
        output_dir: folder for the CSV; ``None`` uses the trainer's log dir.
    """

    def __init__(self, output_dir: Optional[str] = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.path: Optional[Path] = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rank_suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.path = out_dir / f"predictions{rank_suffix}.csv"
        datamodule = trainer.datamodule
        classes: List[str] = list(getattr(datamodule, "classes", []))
        samples = list(datamodule.predict_samples()) if hasattr(datamodule, "predict_samples") else []
        rows = []
        for batch in predictions:
            for top_classes, top_probs in zip(batch["classes"].tolist(), batch["probs"].tolist()):
                names = [classes[c] if c < len(classes) else str(c) for c in top_classes]
                rows.append((names, top_probs))
        with atomic_write(self.path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "top1", "top1_prob", "topk", "topk_probs"])
            for index, (names, probs) in enumerate(rows):
                path = samples[index] if trainer.world_size == 1 and index < len(samples) else ""
                writer.writerow(
                    [index, path, names[0], f"{probs[0]:.5f}", " ".join(names), " ".join(f"{p:.5f}" for p in probs)]
                )
        print(f"wrote {len(rows)} predictions to {self.path}")
