"""Plots of monai_assim results."""

from monai_assim.visualize.examples_plot import plot_examples
from monai_assim.visualize.robustness_compare import (
    COMPARE_COLUMNS,
    compare_robustness,
    comparison_rows,
    needs_evaluation,
    results_run_name,
    robustness_results_path,
    write_robustness_figures,
)
from monai_assim.visualize.robustness_plot import (
    load_robustness_rows,
    plot_robustness,
    plot_worst_case_by_arm,
    robustness_lines,
)

__all__ = [
    "COMPARE_COLUMNS",
    "compare_robustness",
    "comparison_rows",
    "load_robustness_rows",
    "needs_evaluation",
    "plot_examples",
    "plot_robustness",
    "plot_worst_case_by_arm",
    "results_run_name",
    "robustness_lines",
    "robustness_results_path",
    "write_robustness_figures",
]
