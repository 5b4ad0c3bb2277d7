"""Plots a person can look at."""

from toconv.viz.heatmap import plot_rf_heatmap
from toconv.viz.rf_examples import RFExample, plot_rf_examples

__all__ = ["RFExample", "plot_rf_examples", "plot_rf_heatmap"]
