"""
The adversarial-robustness core, usable without Ignite: attacks, the evaluation plan, the evaluation, its
cost, the result rows, statistics and comparisons (docs/adversarial.md). ``monai_assim.handlers`` wraps it
for Ignite / MONAI engines.
"""

from monai_assim.robustness.attacks import (
    ATTACK_BUDGETS,
    DEFAULT_EPS,
    ENSEMBLES,
    PAPER_ATTACKS,
    SUPPORTED_ATTACKS,
    APGDMargin,
    attack_budget,
    build_attack,
    build_eps_grouped_attack,
    canonical_attack_name,
    check_eps,
    convergence_members,
    describe_attack,
    parse_attacks,
    run_attack,
)
from monai_assim.robustness.compare import (
    COMPARE_COLUMNS,
    COMPARISON_COLUMNS,
    compare_results,
    compare_runs,
    comparison_rows,
    paired_flips,
    read_per_image,
)
from monai_assim.robustness.cost import EvaluationCost, estimate_cost, format_duration
from monai_assim.robustness.evaluation import Tally, evaluate, evaluate_batch, finish, images_and_labels
from monai_assim.robustness.plan import (
    DEFAULT_ATTACKS,
    EvaluationPlan,
    Run,
    build_plan,
    robustness_metric_names,
)
from monai_assim.robustness.report import RobustnessResults
from monai_assim.robustness.results import (
    PER_IMAGE_COLUMNS,
    RESULT_COLUMNS,
    WORST,
    eps_tag,
    load_per_image_rows,
    load_robustness_rows,
    row_key,
    worst_case_correct,
    write_per_image,
    write_results,
)
from monai_assim.robustness.stats import aggregate_over_seeds, mcnemar_exact, mean_over_seeds

__all__ = [
    "aggregate_over_seeds",
    "APGDMargin",
    "attack_budget",
    "ATTACK_BUDGETS",
    "build_attack",
    "build_eps_grouped_attack",
    "build_plan",
    "canonical_attack_name",
    "check_eps",
    "COMPARE_COLUMNS",
    "compare_results",
    "compare_runs",
    "COMPARISON_COLUMNS",
    "comparison_rows",
    "convergence_members",
    "DEFAULT_ATTACKS",
    "DEFAULT_EPS",
    "describe_attack",
    "ENSEMBLES",
    "eps_tag",
    "estimate_cost",
    "evaluate",
    "evaluate_batch",
    "EvaluationCost",
    "EvaluationPlan",
    "finish",
    "format_duration",
    "images_and_labels",
    "load_per_image_rows",
    "load_robustness_rows",
    "mcnemar_exact",
    "mean_over_seeds",
    "paired_flips",
    "PAPER_ATTACKS",
    "parse_attacks",
    "PER_IMAGE_COLUMNS",
    "read_per_image",
    "RESULT_COLUMNS",
    "robustness_metric_names",
    "RobustnessResults",
    "row_key",
    "Run",
    "run_attack",
    "SUPPORTED_ATTACKS",
    "Tally",
    "WORST",
    "worst_case_correct",
    "write_per_image",
    "write_results",
]
