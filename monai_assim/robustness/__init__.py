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
from monai_assim.robustness.cost import EvaluationCost, estimate_cost, format_duration
from monai_assim.robustness.results import (
    PER_IMAGE_COLUMNS,
    RESULT_COLUMNS,
    WORST,
    load_per_image_rows,
    load_robustness_rows,
    worst_case_correct,
    write_per_image,
    write_results,
)
from monai_assim.robustness.stats import aggregate_over_seeds, mcnemar_exact, paired_flips, read_per_image

__all__ = [
    "APGDMargin",
    "ATTACK_BUDGETS",
    "DEFAULT_EPS",
    "ENSEMBLES",
    "EvaluationCost",
    "PAPER_ATTACKS",
    "PER_IMAGE_COLUMNS",
    "RESULT_COLUMNS",
    "SUPPORTED_ATTACKS",
    "WORST",
    "aggregate_over_seeds",
    "attack_budget",
    "build_attack",
    "build_eps_grouped_attack",
    "canonical_attack_name",
    "check_eps",
    "convergence_members",
    "describe_attack",
    "estimate_cost",
    "format_duration",
    "load_per_image_rows",
    "load_robustness_rows",
    "mcnemar_exact",
    "paired_flips",
    "parse_attacks",
    "read_per_image",
    "run_attack",
    "worst_case_correct",
    "write_per_image",
    "write_results",
]
