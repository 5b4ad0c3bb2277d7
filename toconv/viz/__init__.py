"""Plots a person can look at."""

from toconv.viz.heatmap import plot_rf_heatmap
from toconv.viz.rf_examples import plot_rf_example

__all__ = ["plot_rf_example", "plot_rf_heatmap"]
