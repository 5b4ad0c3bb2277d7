"""Metrics: per-RF reconstruction quality, information kept, distribution match, plug-in proxy."""

from toconv.metrics.distribution import frechet_distance, sample_rows, sliced_wasserstein
from toconv.metrics.information import information_kept, linear_information
from toconv.metrics.plug_in import AttentionPoolHead, PlugInProxy
from toconv.metrics.rf_stats import BUCKETS, RFStats, rf_cosines, rf_statistics
from toconv.metrics.settings import ProbeSettings

__all__ = [
    "BUCKETS",
    "AttentionPoolHead",
    "PlugInProxy",
    "ProbeSettings",
    "RFStats",
    "frechet_distance",
    "information_kept",
    "linear_information",
    "rf_cosines",
    "rf_statistics",
    "sample_rows",
    "sliced_wasserstein",
]
