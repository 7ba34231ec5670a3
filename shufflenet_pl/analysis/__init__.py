"""Analyses of ShuffleNet V2 from its code: the paper's Fig. 4 feature reuse (:mod:`.reuse`, traced
through the real forward) and a per-width report that regenerates Table 5 with parameters, FLOPs,
activation memory and measured throughput (:mod:`.report`). Command line: ``shufflenet-pl analyze``."""

from .report import activation_bytes, count_multiply_adds, format_report, layer_table, measure_throughput
from .reuse import REUSE_RATIO, ReuseTrace, UnitTrace, distance_profile, empirical_reuse, reuse_formula, trace_reuse

__all__ = [
    "REUSE_RATIO",
    "ReuseTrace",
    "UnitTrace",
    "activation_bytes",
    "count_multiply_adds",
    "distance_profile",
    "empirical_reuse",
    "format_report",
    "layer_table",
    "measure_throughput",
    "reuse_formula",
    "trace_reuse",
]
