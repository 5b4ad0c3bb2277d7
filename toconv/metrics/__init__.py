"""Metrics: information kept, readers, distribution match, per-RF quality."""

from toconv.metrics.distribution import frechet_distance
from toconv.metrics.grid import cell_assignments, cell_geometry, cell_tokens
from toconv.metrics.information import (
    cell_pca_codes,
    decode_cells,
    fit_slot_maps,
    information_per_image,
)
from toconv.metrics.readers import (
    PseudoLabels,
    QueryReader,
    TokenReader,
    TrainedReader,
    covered_histograms,
    token_positions,
)
from toconv.metrics.rf_stats import BUCKETS, RFStats, rf_cosines, rf_statistics
from toconv.metrics.settings import ProbeSettings

__all__ = [
    "BUCKETS",
    "ProbeSettings",
    "PseudoLabels",
    "QueryReader",
    "RFStats",
    "TokenReader",
    "TrainedReader",
    "cell_assignments",
    "cell_geometry",
    "cell_pca_codes",
    "cell_tokens",
    "covered_histograms",
    "decode_cells",
    "fit_slot_maps",
    "frechet_distance",
    "information_per_image",
    "rf_cosines",
    "rf_statistics",
    "token_positions",
]
