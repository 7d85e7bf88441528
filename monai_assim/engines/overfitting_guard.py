"""
A guard against catastrophic overfitting of adversarial training: a warning, with its cause and the
settings to change, when robust accuracy falls to about 0 while clean accuracy stays up.

Single-step adversarial training (FGSM-RS, N-FGSM; PGD-AT with one or two steps) can fail suddenly: within
an epoch the model learns to defeat its own one-step attack (its loss surface curves so that one signed
gradient step no longer finds the adversarial direction), and accuracy under a multi-step attack drops to
about 0 while clean accuracy rises (Wong, Rice & Kolter, ICLR 2020; de Jorge et al., NeurIPS 2022). The
guard watches for that drop in two places:

- **every epoch**, on the validation evaluator: ``val_robust_acc`` (:class:`~monai_assim.metrics.RobustAccuracy`,
  the robust validation that also chooses ``best.pt``) and ``val_acc``;
- **within the epoch** (optional, ``probe_every`` iterations > 0): PGD on a fixed held-out batch (the
  first ``probe_per_class`` images of each class that ``probe_loader`` yields; the bundles use the
  validation set), attacked with :class:`~monai_assim.metrics.RobustAccuracy`'s seeded rule, so the
  training's random stream and BatchNorm statistics are left as they were.

The rule, for each source against its own history: the robust accuracy ``r`` is at most ``robust_floor``,
below ``drop_fraction`` times the best robust accuracy ``r*`` seen before (``r*`` above the floor: there
was robustness to lose), and the clean accuracy is at least ``clean_fraction`` times the best clean accuracy
seen before (clean accuracy staying up tells catastrophic overfitting from a diverged or collapsed run, the
:class:`~monai_assim.engines.CollapseGuard`'s case; an epoch predicting a single class is left to it).

Each finding is logged as a warning and passed to ``on_warning`` (the bundles' run summary keeps them
under ``"warnings"``). The guard reads metrics and writes none, so the checkpoint that robust selection
keeps (``best.pt``, :class:`~monai_assim.engines.EpochSelection`) is the robust-best epoch before the drop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_assim.engines.adversarial_training import ONE_STEP_MODES
from monai_assim.utils import as_class_indices, eval_mode, output_tensor, unwrap_module

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["CatastrophicOverfittingGuard", "overfitting_drop"]


@dataclass
class _History:
    """The best robust and clean accuracy of one source so far, and where the robust one was seen."""

    best_robust: float | None = None
    best_at: str = ""
    best_clean: float = 0.0

    def add(self, robust: float, clean: float, at: str) -> None:
        if self.best_robust is None or robust > self.best_robust:
            self.best_robust, self.best_at = robust, at
        self.best_clean = max(self.best_clean, clean)


def overfitting_drop(
    robust: float,
    clean: float,
    best_robust: float | None,
    best_clean: float,
    drop_fraction: float = 0.5,
    robust_floor: float = 0.1,
    clean_fraction: float = 0.9,
) -> bool:
    """
    Whether ``(robust, clean)`` after a history with best ``best_robust`` / ``best_clean`` shows catastrophic
    overfitting (the rule of the module docstring): ``robust <= robust_floor < best_robust``,
    ``robust < drop_fraction * best_robust`` and ``clean >= clean_fraction * best_clean``.
    """
    if best_robust is None or best_robust <= robust_floor:
        return False
    return robust <= robust_floor and robust < drop_fraction * best_robust and clean >= clean_fraction * best_clean


class CatastrophicOverfittingGuard:
    """
    Handler of the validation evaluator that warns on catastrophic overfitting (see the module docstring).

    Args:
        settings: the run's settings, to name the values to change (``adversarial_training``, ``at_eps``,
            ``at_steps``, ``at_eps_warmup_epochs``, ``lr_schedule``, ``select_by``, ``val_robust_*``); may be empty.
            With ``adversarial_training`` ``"none"`` the guard stays quiet (robust accuracy near 0 is then
            expected, not a failure).
        drop_fraction: the robust accuracy must fall below this fraction of its best so far.
        robust_floor: ... and to at most this (absolute) robust accuracy.
        clean_fraction: ... while clean accuracy stays at least this fraction of its best so far.
        on_warning: called with each warning as a dict (``epoch``, ``kind``: ``"catastrophic_overfitting"``
            (per epoch) or ``"catastrophic_overfitting_probe"`` (within the epoch, with ``iteration``), the
            measured values, ``message``).
        history: earlier epochs' validation records (a resumed run's ``"epochs"``), replayed without warnings.
        probe_loader: batches (dicts with ``image`` and ``label``) of held-out images for the within-epoch
            check; ``None``: no probe.
        probe_every: run the probe every this many training iterations (0: never).
        probe_per_class: images per class in the probe batch.
        num_classes: the number of classes (labels are class indices below it).
        probe_steps: PGD steps of the probe (step size ``2.5 * eps / steps``, random start).
        probe_eps: the probe's budget in [0, 1]; default ``settings["val_robust_eps"] / 255``, else
            ``settings["at_eps"] / 255``, else 2/255.
        seed: the probe attack's seed (the same random start every time: a paired comparison).
        trainer: the trainer (its epoch numbers the warnings; the probe attaches to it); see :meth:`set_trainer`.
        prefix: prefix of the validation metrics.
        name: logger name.
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        drop_fraction: float = 0.5,
        robust_floor: float = 0.1,
        clean_fraction: float = 0.9,
        on_warning: Callable[[dict[str, Any]], None] | None = None,
        history: Iterable[Mapping[str, Any]] | None = None,
        probe_loader: Iterable[Any] | None = None,
        probe_every: int = 0,
        probe_per_class: int = 16,
        num_classes: int = 2,
        probe_steps: int = 10,
        probe_eps: float | None = None,
        seed: int = 0,
        trainer: Engine | None = None,
        prefix: str = "val_",
        name: str | None = None,
    ) -> None:
        for key, value in (("drop_fraction", drop_fraction), ("clean_fraction", clean_fraction)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{key} must be in (0, 1], got {value}.")
        if not 0.0 <= float(robust_floor) < 1.0:
            raise ValueError(f"robust_floor must be in [0, 1), got {robust_floor}.")
        if isinstance(probe_every, bool) or int(probe_every) != probe_every or int(probe_every) < 0:
            raise ValueError(f"probe_every must be an int >= 0, got {probe_every!r}.")
        self.settings = dict(settings or {})
        self.drop_fraction = float(drop_fraction)
        self.robust_floor = float(robust_floor)
        self.clean_fraction = float(clean_fraction)
        self.on_warning = on_warning
        self.prefix = prefix
        self.logger = logging.getLogger(name or __name__)
        self.active = self.settings.get("adversarial_training", "any") != "none"
        self.probe_loader = probe_loader
        self.probe_every = int(probe_every)
        self.probe_per_class = int(probe_per_class)
        self.num_classes = int(num_classes)
        self.probe_steps = int(probe_steps)
        s = self.settings
        eps_255 = s.get("val_robust_eps", s.get("at_eps", 2.0))
        self.probe_eps = float(probe_eps) if probe_eps is not None else float(eps_255) / 255
        self.seed = int(seed)
        self._epochs = _History()
        self._probes = _History()
        self._probe_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        #: every warning given so far
        self.warnings: list[dict[str, Any]] = []
        #: the probe's measurements: dicts with ``epoch``, ``iteration``, ``robust``, ``clean``
        self.probes: list[dict[str, Any]] = []
        for record in history or []:
            robust, clean = record.get(f"{prefix}robust_acc"), record.get(f"{prefix}acc")
            if isinstance(robust, (int, float)) and isinstance(clean, (int, float)):
                self._epochs.add(float(robust), float(clean), f"epoch {int(record.get('epoch', 0))}")
        self.trainer: Engine | None = None
        self._probed: list[Engine] = []
        if trainer is not None:
            self.set_trainer(trainer)

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        """Check the validation metrics at the end of every evaluation of ``engine``."""
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def set_trainer(self, trainer: Engine) -> None:
        """Number warnings by the trainer's epoch; with ``probe_every`` > 0, run the probe on the trainer."""
        self.trainer = trainer
        probing = self.active and self.probe_every > 0 and self.probe_loader is not None
        if probing and trainer not in self._probed:  # a filtered event wraps the handler: keep count here
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.probe_every), self.probe)
            self._probed.append(trainer)

    # ------------------------------------------------------------------ the checks
    def __call__(self, engine: Engine) -> None:
        """The per-epoch check on the evaluator's ``val_robust_acc`` and ``val_acc``."""
        metrics = engine.state.metrics
        robust, clean = metrics.get(f"{self.prefix}robust_acc"), metrics.get(f"{self.prefix}acc")
        if not self.active or not isinstance(robust, (int, float)) or not isinstance(clean, (int, float)):
            return
        classes = metrics.get(f"{self.prefix}pred_classes")
        epoch = int(self.trainer.state.epoch if self.trainer is not None else engine.state.epoch)
        if isinstance(classes, (int, float)) and int(classes) < 2:
            return  # a constant model: its robust accuracy is the class share (CollapseGuard)
        self._check(self._epochs, float(robust), float(clean), epoch, None, f"epoch {epoch}")

    def probe_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe's fixed images and labels: the first ``probe_per_class`` of each class from ``probe_loader``."""
        if self._probe_batch is None:
            from monai_assim.metrics.robust_accuracy import stratified_mask

            images, labels, taken = [], [], {}
            for batch in self.probe_loader or []:
                x = output_tensor(batch, "image").float()
                y = as_class_indices(output_tensor(batch, "label"), self.num_classes, x.shape[0], x.device)
                keep = stratified_mask(y, taken, self.probe_per_class)
                images.append(x[keep].cpu())
                labels.append(y[keep].cpu())
                if all(taken.get(c, 0) >= self.probe_per_class for c in range(self.num_classes)):
                    break
            if not images or sum(len(y) for y in labels) == 0:
                raise ValueError("the catastrophic-overfitting probe got no images from probe_loader.")
            self._probe_batch = (torch.cat(images), torch.cat(labels))
        x, y = self._probe_batch
        return x.to(device), y.to(device)

    def probe(self, trainer: Engine) -> None:
        """The within-epoch check: clean and PGD accuracy of the network on the probe batch (seeded, eval mode)."""
        from monai_assim.metrics.robust_accuracy import RobustAccuracy

        net = unwrap_module(trainer.network)
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x, y = self.probe_batch(device)
        metric = RobustAccuracy(
            net, self.probe_eps, "PGD", steps=self.probe_steps, seed=self.seed, num_classes=self.num_classes
        )
        metric.reset()
        metric.update({"image": x, "label": y})
        robust = float(metric.compute())
        with torch.no_grad(), eval_mode(net):
            clean = float((net(x).argmax(dim=1) == y).float().mean())
        epoch, iteration = int(trainer.state.epoch), int(trainer.state.iteration)
        self.probes.append({"epoch": epoch, "iteration": iteration, "robust": robust, "clean": clean})
        self._check(self._probes, robust, clean, epoch, iteration, f"iteration {iteration}")

    def _check(
        self, history: _History, robust: float, clean: float, epoch: int, iteration: int | None, at: str
    ) -> None:
        best, best_at, best_clean = history.best_robust, history.best_at, history.best_clean
        rule = (self.drop_fraction, self.robust_floor, self.clean_fraction)
        if overfitting_drop(robust, clean, best, best_clean, *rule):
            self._warn(epoch, iteration, robust, clean, best, best_at, best_clean)
        history.add(robust, clean, at)

    # ------------------------------------------------------------------ the warning
    def _attack_text(self, probe: bool) -> str:
        s = self.settings
        if probe:
            eps = round(self.probe_eps * 255, 4)
            return f"PGD-{self.probe_steps} at {eps:g}/255 on {self._probe_size()} held-out images"
        attack, steps, eps = s.get("val_robust_attack"), s.get("val_robust_steps"), s.get("val_robust_eps")
        if attack is None or eps is None:
            return "the robust validation attack"
        return f"{attack}-{steps} at {float(eps):g}/255"

    def _probe_size(self) -> int:
        return 0 if self._probe_batch is None else int(self._probe_batch[1].shape[0])

    def remedies(self) -> str:
        """The settings to change, for this run's mode."""
        s = self.settings
        mode = s.get("adversarial_training")
        parts = []
        if mode == "fgsm_rs":
            parts.append("--adversarial_training n_fgsm (larger noise, no projection: it resists this failure)")
        if mode in ONE_STEP_MODES:
            parts.append("--adversarial_training pgd --at_steps 2 or more (k + 1 passes a step)")
        elif mode in ("pgd", "trades"):
            parts.append(f"more --at_steps (this run: {s.get('at_steps')})")
        eps = s.get("at_eps")
        parts.append(f"a smaller --at_eps (this run: {eps}/255)" if eps is not None else "a smaller --at_eps")
        if not s.get("at_eps_warmup_epochs"):
            parts.append("--at_eps_warmup_epochs 2 or more (eps rises from 0; this run: none)")
        if s.get("lr_schedule") in (None, "none"):
            parts.append("--lr_schedule cosine (end at a small learning rate)")
        return "; ".join(parts)

    def _kept(self) -> str:
        select_by = self.settings.get("select_by")
        if select_by == "robust":
            return "best.pt keeps the robust-best epoch (--select_by robust)"
        if select_by == "clean":
            return (
                "best.pt follows clean accuracy and may keep this model: use checkpoints/best_robust.pt or "
                "--select_by robust"
            )
        return "keep the robust-best checkpoint"

    def _warn(
        self,
        epoch: int,
        iteration: int | None,
        robust: float,
        clean: float,
        best: float | None,
        best_at: str,
        best_clean: float,
    ) -> None:
        probe = iteration is not None
        where = f"epoch {epoch}, iteration {iteration}" if probe else f"epoch {epoch}"
        mode = self.settings.get("adversarial_training")
        text = (
            f"{where}: robust accuracy ({self._attack_text(probe)}) fell to {robust:.4f} from {best:.4f} at "
            f"{best_at} while clean accuracy is {clean:.4f} (best {best_clean:.4f}): catastrophic overfitting"
            f"{f' of {mode} training' if mode else ''}; the model defeats its training attack instead of resisting "
            f"attacks. {self._kept()}. Settings to change: {self.remedies()}."
        )
        self.logger.warning(f"CATASTROPHIC OVERFITTING: {text}")
        record: dict[str, Any] = {
            "epoch": epoch,
            "kind": "catastrophic_overfitting_probe" if probe else "catastrophic_overfitting",
            "robust_acc": robust,
            "clean_acc": clean,
            "best_robust_acc": best,
            "best_at": best_at,
            "message": text,
        }
        if probe:
            record["iteration"] = iteration
        self.warnings.append(record)
        if self.on_warning is not None:
            self.on_warning(record)
