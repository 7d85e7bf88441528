"""AssimilationTrainer: MONAI's SupervisedTrainer with the domain-assimilation loss and its terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils.enums import CommonKeys as Keys

from monai_assim.engines.adversarial_training import AT_LOG_KEYS
from monai_assim.engines.steps import AssimilationKeys, Objective, StepContext, make_step
from monai_assim.utils import first_item, unwrap_module

__all__ = ["AssimilationTrainer", "AssimilationKeys", "assimilation_output_transform"]


#: the three logged scalars, in the order total, CE term, GLCM term
LOSS_KEYS = (Keys.LOSS, AssimilationKeys.LOSS_CE, AssimilationKeys.LOSS_GLCM)


def assimilation_output_transform(output: Any) -> dict[str, float]:
    """
    ``output_transform`` for ``StatsHandler`` / ``TensorBoardStatsHandler``: ``{"loss", "loss_ce",
    "loss_glcm"}`` (and, with adversarial training, ``"loss_adv", "acc_clean", "acc_adv"``) as Python
    floats, from ``engine.state.output`` whether it was decollated (a list of per-item dicts, the scalars
    replicated, as ``decollate=True`` leaves it) or not (one dict).
    """
    first = first_item(output)
    if not isinstance(first, Mapping):
        raise TypeError(f"expected the trainer output dict (or a list of them), got {type(output).__name__}.")
    return {
        str(k): float(first[k].detach()) if isinstance(first[k], torch.Tensor) else float(first[k])
        for k in LOSS_KEYS + AT_LOG_KEYS
        if k in first
    }


#: kept for existing imports; the helper lives in :mod:`monai_assim.utils.module`.
_unwrap = unwrap_module


def _plain(x: Any) -> Any:
    """A MetaTensor as a plain tensor (faster maths, and torch.compile friendly); anything else unchanged."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class AssimilationTrainer(SupervisedTrainer):
    r"""
    ``SupervisedTrainer`` for domain assimilation. It takes the same constructor arguments and keeps its
    behaviour (``prepare_batch``, ``inferer``, gradient accumulation, ``optim_set_to_none``, the
    ``IterationEvents`` FORWARD_COMPLETED, LOSS_COMPLETED, BACKWARD_COMPLETED, MODEL_COMPLETED, decollate,
    postprocessing, metrics, handlers); only the iteration differs:

    - with an assimilated :class:`~monai_assim.networks.AssimilationNet` (also inside DDP or
      ``torch.compile``) and an :class:`~monai_assim.losses.AssimilationLoss`, the network is called as
      ``network(x, return_assimilated=True)`` and the loss is
      :math:`\alpha \, \mathrm{CE}(\mathrm{logits}, y) + (1 - \alpha)\, \mathrm{GLCM}(C(T(x)), x)`;
    - with a vanilla AssimilationNet, or any other network, and an AssimilationLoss, the loss is the
      loss's own cross-entropy term alone (plain transfer learning, no GLCM term);
    - with any other loss function ``loss_function(pred, label)``, that loss.

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (logits), ``loss`` (the optimised total),
    ``loss_ce`` and ``loss_glcm`` (detached terms; ``loss_glcm`` is 0 when the GLCM term is not part of
    the objective, and ``loss_ce`` is the loss itself for a plain loss function). Log them with
    ``StatsHandler(output_transform=assimilation_output_transform)`` or the same transform in
    ``TensorBoardStatsHandler``.

    Mixed precision (``amp=True``) is device-agnostic: the forward pass runs under
    ``torch.autocast(device_type of the batch, **amp_kwargs)`` (float16 on CUDA, with a
    ``torch.amp.GradScaler``; bfloat16 on CPU, or on CUDA with ``amp_kwargs={"dtype": torch.bfloat16}``,
    no scaler); the loss is computed in float32 outside
    autocast, because the soft GLCM histograms lose too much precision in half precision.

    Adversarial training (:mod:`monai_assim.engines.adversarial_training`, docs/adversarial.md):

    Args:
        adversarial_training: ``"none"`` (default: the iteration above, unchanged), ``"pgd"`` (PGD-AT,
            Madry et al.), ``"trades"`` (Zhang et al.), ``"fgsm_rs"`` (FGSM from a random start, step
            1.25 eps, Wong et al.) or ``"n_fgsm"`` (noise 2 eps, step eps, no projection, de Jorge et al.);
            the examples are crafted against the whole network in [0, 1] pixel space, in eval mode.
        at_eps: L-inf budget in [0, 1] pixel units (2/255 by default).
        at_steps: attack iterations T of ``pgd`` / ``trades``, step size ``2.5 * at_eps / T`` (the
            evaluation rule); the one-step modes ignore it.
        at_ratio: PGD-AT and the one-step modes: fraction of each batch replaced by adversarial examples
            (1.0 = Madry).
        trades_beta: TRADES weight of the KL term.
        args, kwargs: those of ``SupervisedTrainer``.

    With adversarial training ``engine.state.output`` also holds ``loss_adv``, ``acc_clean``, ``acc_adv``
    and ``image_adv`` (:class:`~monai_assim.engines.adversarial_training.AdversarialKeys`).
    """

    def __init__(
        self,
        *args: Any,
        adversarial_training: str = "none",
        at_eps: float = 2 / 255,
        at_steps: int = 5,
        at_ratio: float = 1.0,
        trades_beta: float = 6.0,
        **kwargs: Any,
    ) -> None:
        self.step = make_step(adversarial_training, at_eps, at_steps, at_ratio, trades_beta)
        super().__init__(*args, **kwargs)

    def run(self) -> None:  # type: ignore[override]
        """
        Train; unlike ``Trainer.run`` the gradient scaler is created only where it is needed: AMP on a CUDA
        device in float16 (autocast's CUDA default), not for ``amp_kwargs={"dtype": torch.bfloat16}``,
        whose exponent range needs no loss scaling, nor on the CPU.
        """
        device = self.state.device if self.state.device is not None else torch.device("cpu")
        amp_dtype = (self.amp_kwargs or {}).get("dtype", torch.float16)
        use_scaler = self.amp and torch.device(device).type == "cuda" and amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        Workflow.run(self)

    @staticmethod
    def _accumulation(engine: AssimilationTrainer) -> tuple[bool, bool]:
        """(zero the gradients before this iteration, step the optimiser after it), as SupervisedTrainer."""
        acc = engine.accumulation_steps
        if acc <= 1:
            return True, True
        epoch_length = engine.state.epoch_length
        i = (engine.state.iteration - 1) % epoch_length if epoch_length is not None else engine.state.iteration - 1
        last_of_epoch = epoch_length is not None and i + 1 == epoch_length
        return i % acc == 0, (i + 1) % acc == 0 or last_of_epoch

    def _iteration(self, engine: AssimilationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One training iteration: ``engine.step`` (:mod:`monai_assim.engines.steps`) gives the prediction, the
        loss and the terms to log; the events, gradient accumulation and optimiser step are those of
        ``SupervisedTrainer``. Returns (and stores in ``engine.state.output``) ``{"image", "label", "pred",
        "loss", "loss_ce", "loss_glcm"}`` and the step's other terms.

        Raises:
            ValueError: when ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        x, y = _plain(inputs), _plain(targets)
        objective = Objective(engine.loss_function, unwrap_module(engine.network))

        def forward(batch_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            if objective.with_glcm:
                return engine.inferer(batch_in, engine.network, *args, return_assimilated=True, **kwargs)
            return engine.inferer(batch_in, engine.network, *args, **kwargs), None

        def amp() -> torch.autocast:
            return torch.autocast(x.device.type, enabled=engine.amp, **engine.amp_kwargs)

        should_zero_grad, should_step = self._accumulation(engine)
        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        pred, loss, terms = engine.step(StepContext(unwrap_module(engine.network), forward, objective, amp), x, y)
        engine.state.output[Keys.PRED] = pred
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = loss
        engine.state.output.update(terms)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        acc = engine.accumulation_steps
        scaled = loss / acc if acc > 1 else loss
        (engine.scaler.scale(scaled) if engine.scaler is not None else scaled).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step and engine.scaler is not None:
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        elif should_step:
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
