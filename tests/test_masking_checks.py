"""benchmarks/masking_checks.py on models whose answer is known: a smooth threshold on the mean brightness,
and the same model with its input gradient cut (masked: white-box attacks stall, transfer does not)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location(
    "masking_checks", Path(__file__).resolve().parents[1] / "benchmarks" / "masking_checks.py"
)
masking_checks = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(masking_checks)


class Threshold(torch.nn.Module):
    """Class 1 when the mean brightness is above 0.5; ``masked``: the same answers with a zero input gradient."""

    def __init__(self, masked: bool = False) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(50.0))
        self.masked = masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked:
            x = 0 * x + x.detach()
        d = self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-d, d], dim=1)


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    x = (0.5 + (2 * y.float() - 1) * 0.01)[:, None, None, None] + 0.002 * torch.randn(n, 1, 8, 8)
    return x.clamp(0, 1), y


def _by(rows):
    return {(r["check"], r["attack"], r["eps_255"]): r["accuracy"] for r in rows}


def test_masked_model_fools_white_box_attacks_and_not_transfer():
    torch.manual_seed(0)
    x, y = _data()
    rows = _by(masking_checks.run_checks(Threshold(masked=True), x, y, [4.0], source=Threshold(), log=lambda s: None))
    assert rows[("clean", "none", 0)] == 1.0
    assert rows[("steps and step size", "APGD-CE 100", 4.0)] == 1.0  # no gradient: the attack stalls
    assert rows[("transfer", "APGD-CE 100 on the source", 4.0)] == 0.0  # the surrogate's examples work
    assert rows[("logits", "zero_gradient", 0)] == 1.0


def test_smooth_model_is_broken_white_box_and_by_large_eps():
    torch.manual_seed(0)
    x, y = _data()
    net = Threshold()
    rows = _by(masking_checks.run_checks(net, x, y, [4.0], source=net, log=lambda s: None))
    for label in masking_checks.white_box_attacks(4 / 255):
        assert rows[("steps and step size", label, 4.0)] == 0.0, label
    # transfer from the model itself is the white-box attack (the same builder and seed)
    assert rows[("transfer", "APGD-CE 100 on the source", 4.0)] == rows[("steps and step size", "APGD-CE 100", 4.0)]
    assert all(rows[("large eps", "PGD-20", e)] == 0.0 for e in masking_checks.LARGE_EPS_255)
    stats = masking_checks.logit_stats(net, x, y)
    assert stats["zero_gradient"] == 0.0 and abs(stats["max_abs_logit"] - 50 * 0.01) < 0.05 and stats["margin"] > 0
    assert "| transfer | APGD-CE 100 on the source | 4 |" in masking_checks.table(
        masking_checks.run_checks(net, x, y, [4.0], source=net, log=lambda s: None)
    )
