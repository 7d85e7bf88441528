"""
The paper's experiment as one command: vanilla against assimilated transfer learning under attack,
over several seeds, with paired per-image comparisons.

.. code-block:: bash

    python -m monai_assim.study --bundle chest_xray --dataset_dir ../shared/data/chest_xray \
        --backbone mobilenet_v2 --pretrained ../shared/weights/mobilenet_v2_imagenet_from_tflite.pt \
        --mean 0.5 --std 0.5 --image_size 128 --epochs 4 \
        --train_per_class 300 --val_per_class 50 --test_per_class 100 \
        --seeds 0 1 2 --jobs 2 --output_dir study_out

For one bundle and one backbone it runs the bundle's own ``train.json`` and ``evaluate.json`` (so a
study trains and attacks exactly what a user of the bundles gets), once per arm and seed, each arm of a
seed with the same split and budget. The arms (:data:`ARMS`, name -> bundle overrides; ``--arms``
chooses, default :data:`DEFAULT_ARMS`):

- ``vanilla``: plain transfer learning (grey replicated to RGB, normalisation, backbone, head);
- ``assimilated``: texture and colour modules in front of the backbone, trained with the bundle's
  ``alpha`` (or ``--alpha``), ``assimilation_lr`` and ``assimilation_init`` (or the study's options);
- ``alpha1`` (unless ``--no_ablation``): assimilated with ``alpha = 1``, i.e. without the GLCM term,
  the paper's "w/o GLCM loss" ablation;
- ``vanilla_pgdat``, ``assimilated_pgdat``, ``vanilla_trades``, ``assimilated_trades``,
  ``vanilla_fgsm_rs``, ``assimilated_fgsm_rs``, ``vanilla_n_fgsm``, ``assimilated_n_fgsm``: the same with
  adversarial training (bundle override ``adversarial_training`` ``pgd`` / ``trades`` / ``fgsm_rs`` /
  ``n_fgsm``; ``--at_eps``, ``--at_steps``, ``--trades_beta``, ``--at_eps_warmup_epochs`` and
  ``--co_probe_every`` are forwarded to the bundle when given).

``--lr_schedule`` (``none`` / ``cosine`` / ``step``) is forwarded to every arm when given, so all arms of a
seed train with the same schedule. ``--arm_epochs '{"vanilla_n_fgsm": 11}'`` (JSON, arm -> epochs) replaces
``--epochs`` for the arms it names, e.g. to give a one-step arm PGD-AT's training wall-clock (the runs
tables give the seconds per epoch of every arm; time arms with ``--jobs 1``, since jobs that share a
machine slow each other).

``--clean_selection`` adds, for every arm with adversarial training, the row ``<arm>_cleansel``
(:data:`CLEAN_SELECTION`): the clean-selected checkpoint ``checkpoints/best_clean.pt`` of the same training
(``best.pt``, the arm's own row, is chosen by robust validation accuracy), attacked with the same
evaluation into ``<run>/eval_best_clean/``, without a second training. When both rules kept the same epoch
(identical weights) the arm's own evaluation is copied there, with ``copied.json`` saying so. The paired
tables compare the two rows image by image.

A bundle ``seed`` changes the split (``RunSetup``), the initialisation of the new layers and the data
order (``monai.utils.set_determinism`` in ``initialize``, which also seeds MONAI's ``DataLoader`` and
so the augmentation); with the demo set it also changes the generated images. ``--seeds 0 1 2`` runs
every arm for every seed; ``--jobs 2`` runs two (seed, arm) jobs at once, each a subprocess with one
torch thread (``OMP_NUM_THREADS=1``), its log in ``<run>/study_job.log``. A (seed, arm) whose
``eval/robustness.json`` exists is skipped, and one whose training finished (``checkpoints/best.pt`` and
a finished run summary) is only evaluated, and an interrupted training (``checkpoints/last.pt`` without a
finished summary) resumes from its last epoch (``resume``), so re-running a killed study continues it; a clean-selection
row is evaluated unless its ``eval_best_clean/robustness.json`` exists, and again whenever the arm is (its
``eval/robustness.json`` deleted, e.g. for other eps); the report refuses to pair two rows attacked
differently.

Each run is attacked with the paper's FGSM, BIM, MIFGSM and PGD over eps = 1/255 ... 8/255 (``--eps_255``),
plus the strong ensemble of ``--attack_budget`` (APGD-CE, APGD-margin, the black-box Square) whose per-image
worst case is the headline, with the large-eps PGD check; see
:class:`monai_assim.handlers.AdversarialRobustnessHandler`. The study then writes to ``output_dir``:

- ``runs/<arm>/`` (one seed, ``--seed``) or ``runs/seed<k>/<arm>/`` (``--seeds``): each bundle run's own
  outputs (split lists, run summary, TensorBoard logs with the per-epoch assimilation movement,
  ``eval/robustness.csv`` and ``.json`` with the honesty report, ``eval/robustness_per_image.csv``
  where the handler writes it, ``eval/assimilation_movement.json`` with the saturation of T and C;
  ``eval_best_clean/`` for a clean-selection row); checkpoints are removed with ``--prune``;
- ``comparison.csv`` and ``comparison.md`` (one seed; with ``--seeds``, in ``runs/seed<k>/``): one row per
  (attack, eps) with the columns :data:`COMPARISON_COLUMNS`, one column per arm and clean-selection row,
  then a "Runs" section: the evaluated checkpoint and its epoch, the epochs trained, the training
  wall-clock (from the run summary, validation included) and seconds per epoch, the robust validation
  accuracy at the checkpoint's epoch and at the last epoch with its rise over the last three epochs
  (whether more epochs were still buying robustness), the fraction of the
  output values of T and C their output maps saturate (:func:`monai_assim.networks.saturation`, on
  ``--movement_images`` test images) and a SINGLE CLASS flag for a model that predicts one class;
- ``runs.csv``: those numbers, one line per (seed, row) (:data:`~monai_assim.study.report.RUN_COLUMNS`);
- with ``--seeds``: ``aggregate.csv`` / ``aggregate.md`` (per arm, mean, std, min and max over seeds of the
  clean accuracy and of the accuracy under each attack and eps, worst-case rows included when present,
  the assimilation movement and saturation per arm, and the runs' numbers as mean [min, max] over seeds);
- ``paired.csv`` / ``paired.md`` where the per-image files are (per seed and pooled, each pair of
  :func:`paired_comparisons` on the same test images: every arm against ``vanilla``, each assimilated arm
  against the vanilla arm with the same training and epochs, robust- against clean-selected checkpoint; images that
  flip from correct to wrong under attack and back, with an exact McNemar p-value);
- ``robustness.png``: accuracy against eps (mean over seeds), vanilla dashed and assimilated solid;
- ``examples.png``: test images (of the first seed's test split) as they are, assimilated by the
  ``alpha = 1`` model and by the default-alpha model (the paper's "w/o GLCM loss / w/ GLCM loss" panel),
  each row with its mean grey shift and chroma;
- ``study.json``: the settings, the command line, the honesty reports, the assimilation movement
  (:func:`assimilation_movement`: does a trained T/C move the grey levels or the colour where the GLCM
  term cannot see it), the runs' numbers, the single-class runs, the summaries of the tables and the
  wall time of each step.

The package: :mod:`~monai_assim.study.plan` (the arms, :class:`StudyOptions`, the jobs),
:mod:`~monai_assim.study.run` (one job: train, evaluate, assimilation movement),
:mod:`~monai_assim.study.report` (tables, figures, ``study.json``) and :mod:`~monai_assim.study.cli`.

Subset sizes, image size, epochs and the attack budget are parameters, so the same command runs at the
paper's scale on a GPU and at a small one on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from monai_assim.metrics.assimilation import MOVEMENT_KEYS, assimilation_movement
from monai_assim.robustness.compare import COMPARISON_COLUMNS, compare_results
from monai_assim.study.cli import main
from monai_assim.study.plan import (
    ARMS,
    CLEAN_SELECTION,
    DEFAULT_ARMS,
    STUDY_ATTACKS,
    StudyOptions,
    StudyPlan,
    paired_comparisons,
    plan_study,
)
from monai_assim.study.report import (  # the notes: what the tables say about the worst case and collapsed runs
    _headline_note,  # noqa: F401
    _tables_note,  # noqa: F401
    write_aggregate,
    write_comparison,
    write_paired,
    write_reports,
)
from monai_assim.study.run import run_job, run_jobs
from monai_assim.visualize.examples_plot import plot_examples

__all__ = [
    "ARMS",
    "CLEAN_SELECTION",
    "COMPARISON_COLUMNS",
    "DEFAULT_ARMS",
    "MOVEMENT_KEYS",
    "STUDY_ATTACKS",
    "StudyOptions",
    "StudyPlan",
    "assimilation_movement",
    "compare_results",
    "main",
    "paired_comparisons",
    "plan_study",
    "plot_examples",
    "run_job",
    "run_study",
    "write_aggregate",
    "write_comparison",
    "write_paired",
]


def run_study(options: StudyOptions | str | None = None, **settings: Any) -> dict[str, Any]:
    """
    Train and attack every arm (default vanilla, assimilated and, with ``ablation``, ``alpha = 1``) for every
    seed with the bundle's configs, then write the tables, the paper-style figure and the example panel.

    ``options`` is a :class:`StudyOptions`, or the bundle name with the other options as keywords
    (``run_study("chest_xray", seeds=[0, 1])``; default ``chest_xray``); keywords given with a :class:`StudyOptions` replace its
    fields. A (seed, arm) already evaluated in ``output_dir`` is kept and skipped (:func:`run_job`), so a
    study can be run in parts. Returns the content of ``study.json``.
    """
    if isinstance(options, StudyOptions):
        o = dataclasses.replace(options, **settings)
    else:
        o = StudyOptions(**settings) if options is None else StudyOptions(bundle=options, **settings)
    plan = plan_study(o)
    # run_job is looked up here, in the package, so that it can be replaced (tests stop a study before training)
    timings = run_jobs(plan.specs, o.jobs, lambda spec: run_job(spec))
    return write_reports(o, plan, timings)
