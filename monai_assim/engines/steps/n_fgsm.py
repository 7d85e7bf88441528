"""N-FGSM (de Jorge et al., NeurIPS 2022): one FGSM step from a larger noise, not projected on the eps-ball."""

from __future__ import annotations

from monai_assim.engines.steps.fgsm_rs import FGSMRSStep

__all__ = ["NFGSMStep"]


class NFGSMStep(FGSMRSStep):
    """
    Args:
        eps: L-inf budget in [0, 1]. ratio: fraction of each batch replaced by adversarial examples, in (0, 1].

    The examples: ``x + U(-2 eps, 2 eps)`` clipped to [0, 1], one signed-gradient step of CE of size ``eps``,
    clipped to [0, 1] and NOT projected on the eps-ball (the perturbation reaches ``3 eps``): the noise, not
    a projection or a step schedule, is what avoids catastrophic overfitting. The rest of the step is
    :class:`FGSMRSStep`'s (and so :class:`~monai_assim.engines.steps.PGDStep`'s).
    """

    mode = "n_fgsm"
    #: step size in units of eps
    step_factor = 1.0
    #: half-width of the noise in units of eps (the paper's k = 2)
    noise_factor = 2.0
    #: not projected on the eps-ball
    project = False
