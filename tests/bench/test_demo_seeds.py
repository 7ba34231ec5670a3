"""``benchmarks/demo_seeds.py``: the spread it records over the seeds' runs."""

from benchmarks.demo_seeds import summary


def test_summary_spans_all_runs() -> None:
    runs = [{"val_acc1": acc, "wall_s": wall} for acc, wall in ((0.99, 300.0), (0.95, 420.0), (0.97, 310.0))]
    assert summary(runs) == {"val_acc1_min": 0.95, "val_acc1_median": 0.97, "val_acc1_max": 0.99, "wall_s_max": 420.0}
    assert summary(runs[:2])["val_acc1_median"] == 0.97  # an even count: the mean of the middle two
