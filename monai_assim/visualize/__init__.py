"""Plots of monai_assim results."""

from monai_assim.visualize.examples_plot import plot_examples
from monai_assim.visualize.robustness_plot import load_robustness_rows, plot_robustness, plot_worst_case_by_arm

__all__ = ["load_robustness_rows", "plot_examples", "plot_robustness", "plot_worst_case_by_arm"]
