"""Plots a person can look at."""

from toconv.viz.heatmap import plot_rf_heatmap

__all__ = ["plot_rf_heatmap"]
