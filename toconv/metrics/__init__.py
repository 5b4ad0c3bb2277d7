"""Metrics: per-RF reconstruction quality."""

from toconv.metrics.rf_stats import BUCKETS, RFStats, rf_cosines, rf_statistics

__all__ = ["BUCKETS", "RFStats", "rf_cosines", "rf_statistics"]
