"""Metrics: information kept, frozen readers, distribution match, plug-in proxy, per-RF quality."""

from toconv.metrics.distribution import (
    frechet_distance,
    sample_per_image,
    sliced_wasserstein,
)
from toconv.metrics.grid import cell_geometry, cell_tokens, window_centres
from toconv.metrics.information import information_kept, linear_information
from toconv.metrics.plug_in import AttentionPoolHead, PlugInProxy
from toconv.metrics.readers import (
    PositionReader,
    PseudoLabels,
    SetToGridReader,
    TokenReader,
    kmeans,
)
from toconv.metrics.rf_stats import BUCKETS, RFStats, rf_cosines, rf_statistics
from toconv.metrics.settings import ProbeSettings

__all__ = [
    "BUCKETS",
    "AttentionPoolHead",
    "PlugInProxy",
    "PositionReader",
    "ProbeSettings",
    "PseudoLabels",
    "RFStats",
    "SetToGridReader",
    "TokenReader",
    "cell_geometry",
    "cell_tokens",
    "frechet_distance",
    "information_kept",
    "kmeans",
    "linear_information",
    "rf_cosines",
    "rf_statistics",
    "sample_per_image",
    "sliced_wasserstein",
    "window_centres",
]
