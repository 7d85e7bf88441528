r"""
The output map of the texture and colour modules: how ``x + r(x)`` is brought back onto [0, 1].

Both modules compute a residual ``r`` of their grey input ``x`` and map it onto [0, 1] (see
:class:`~monai_assim.networks.residual.ResidualMap`). Two maps are offered:

- ``"sigmoid"`` (the default):

  .. math::
      M(x, r) = \sigma\big(\operatorname{logit}(\tilde x) + r\big), \qquad
      \tilde x = \epsilon + (1 - 2\epsilon)\,x, \quad \epsilon = 10^{-3}

  smooth and strictly inside (0, 1); at ``r = 0`` it is :math:`\tilde x`, the identity up to a margin
  of 0.1%. Its gradient :math:`\sigma'(z) > 0` is never exactly 0 (computed as
  :math:`e^{-|z|}/(1 + e^{-|z|})^2`, which float32 keeps above 0 up to :math:`|z| \approx 100`), so a
  module whose output a large step pushed towards 0 or 1 still receives a gradient that pulls it back.
- ``"clamp"``: :math:`M(x, r) = \operatorname{clip}_{[0, 1]}(x + r)`, the map of every run before the
  output maps were recorded. Its gradient is exactly 0 for every value pushed outside [0, 1], so a
  module pushed out entirely gets no gradient at all and never comes back (it "dies" like a saturated
  ReLU: seen as collapsed runs, see docs/networks.md).
- ``"clamp_st"``: the clamp's forward values, in training and in use; while the module trains
  (``module.training`` and gradients enabled) its gradient passes straight through the clip (the
  identity, as if there were no clip), so a value pushed outside [0, 1] is still pulled back. In eval
  mode (evaluation, attacks, export) it is exactly the clamp, gradient included.
- ``"clamp_return"``: the clamp's forward values, in training and in use; while the module trains its
  gradient is the clamp's inside [0, 1], and outside it passes only the part that pulls the value back
  (at ``z < 0`` a gradient asking for a larger value, at ``z > 1`` one asking for a smaller value; the
  rest is 0 as under the clamp). Inside the range it trains exactly as the clamp; a value pushed out
  cannot be pushed further by a gradient it does not feel, but comes back as soon as the loss asks for
  it. In eval mode it is exactly the clamp, gradient included.

**Saturation** (:func:`saturation`) is the fraction of output values that a module has pushed against 0
or 1 where the map has (all but) lost its gradient: outside [0, 1] before the clamp (gradient exactly 0),
or, for the sigmoid, where its slope :math:`\sigma'(z)` has fallen below a tenth of its smallest slope
on an untrained module (:math:`|z| > \operatorname{logit}(1 - \epsilon) + \ln 10 \approx 9.2`:
outputs within about :math:`10^{-4}` of 0 or 1). Only values pushed *away from their input* count: a
value is saturated at 0 only when its input was above 1/255, at 1 only when it was below 1 - 1/255, so
the black background of a CT slice, kept black, is not counted (with it, an unharmed module read 69%
saturated). It is 0 for an untrained module under both maps.

**Straight-through** (BPDA, Athalye et al. 2018; :func:`straight_through_maps`): the forward values are
kept and the backward pass goes through the linear surrogate :math:`\tilde x + r` (``x + r`` for the
clamp), whose gradient never saturates. For the clamp this is the identity gradient of the clip; for the
sigmoid it removes the :math:`\sigma'` factor that could hide an attacker's gradient.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "OUTPUT_MAPS",
    "SIGMOID_MARGIN",
    "check_output_map",
    "map_output",
    "module_saturation",
    "saturated",
    "saturation",
    "straight_through_maps",
    "unit_clamp",
]

#: the output maps, in the order of their ids in checkpoints (``output_map_id`` buffers)
OUTPUT_MAPS = ("clamp", "sigmoid", "clamp_st", "clamp_return")
#: the maps whose forward values are the hard clip
_CLIPS = ("clamp", "clamp_st", "clamp_return")
#: :math:`\epsilon` of the sigmoid map: an untrained module maps [0, 1] onto [eps, 1 - eps]
SIGMOID_MARGIN = 1e-3
_LOGIT_EDGE = math.log((1 - SIGMOID_MARGIN) / SIGMOID_MARGIN)
#: the sigmoid map saturates where its slope is below a tenth of its smallest slope on an untrained module
_SATURATED_Z = _LOGIT_EDGE + math.log(10.0)
#: a value counts as saturated only when its input was further than this from the end it is pushed
#: against: a black background kept black (or a white one kept white) is the identity, not a lost image
_AT_END = 1.0 / 255.0


def check_output_map(output_map: str) -> str:
    """``output_map`` when it is one of :data:`OUTPUT_MAPS`, else a ``ValueError`` naming the choices."""
    if output_map not in OUTPUT_MAPS:
        raise ValueError(f"unknown output_map {output_map!r}; choose one of {', '.join(OUTPUT_MAPS)}.")
    return output_map


class _StraightThroughClamp(torch.autograd.Function):
    """Forward :math:`\\operatorname{clip}_{[0,1]}(x)` (``torch.clamp``, bit-identical); backward the identity."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.clamp(x, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class _ReturningClamp(torch.autograd.Function):
    """Forward :math:`\\operatorname{clip}_{[0,1]}(x)` (``torch.clamp``, bit-identical); backward the clamp's
    gradient inside [0, 1] and, outside, only the gradient that would move ``x`` back into [0, 1] under
    gradient descent (negative below 0, positive above 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.clamp(x, 0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        blocked = ((x < 0) & (grad > 0)) | ((x > 1) & (grad < 0))
        return grad.masked_fill(blocked, 0.0)


def unit_clamp(x: torch.Tensor, straight_through: bool = False, returning: bool = False) -> torch.Tensor:
    """
    :math:`\\operatorname{clip}_{[0, 1]}(x)`; with ``straight_through`` the same values, but the gradient
    passes as the identity (``d clip / dx := 1`` everywhere); with ``returning`` (and not
    ``straight_through``) the same values, the clamp's gradient inside [0, 1], and outside only the
    gradient that pulls a value back in (see ``"clamp_return"`` in the module docstring).
    """
    if straight_through and torch.is_grad_enabled():
        return _StraightThroughClamp.apply(x)
    if returning and torch.is_grad_enabled() and x.requires_grad:
        return _ReturningClamp.apply(x)
    return torch.clamp(x, 0.0, 1.0)


class _Sigmoid(torch.autograd.Function):
    r""":math:`\sigma(z)` whose backward :math:`e^{-|z|} / (1 + e^{-|z|})^2` stays above 0 for :math:`|z|` up to
    about 100 in float32 (``torch.sigmoid``'s ``s (1 - s)`` is exactly 0 once ``s`` rounds to 1, from
    :math:`z \approx 17`)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return torch.sigmoid(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        e = torch.exp(-z.abs())
        return grad * e / (1 + e) ** 2


def _sigmoid(z: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and z.requires_grad and not torch.jit.is_tracing() and not torch.jit.is_scripting():
        return _Sigmoid.apply(z)
    return torch.sigmoid(z)


def _squeezed(x: torch.Tensor) -> torch.Tensor:
    return SIGMOID_MARGIN + (1 - 2 * SIGMOID_MARGIN) * x


def _pre_map(x: torch.Tensor, r: torch.Tensor, output_map: str) -> torch.Tensor:
    """The value the map squashes: ``x + r`` (the clips) or ``logit(x~) + r`` (sigmoid)."""
    if output_map in _CLIPS:
        return x + r
    return torch.logit(_squeezed(x)) + r


def map_output(
    x: torch.Tensor, r: torch.Tensor, output_map: str, straight_through: bool = False, training: bool = False
) -> torch.Tensor:
    """
    :math:`M(x, r)` of ``output_map`` (see the module docstring); ``x`` broadcasts against ``r``.

    With ``straight_through`` (and gradients enabled) the values are the same, the gradient that of the
    linear surrogate ``x + r`` (the clips) or :math:`\\tilde x + r` (sigmoid). ``training`` is whether the
    module trains: ``"clamp_st"`` then passes its gradient straight through and ``"clamp_return"`` passes
    the gradient that pulls a value back; otherwise both are the clamp.
    """
    if output_map in _CLIPS:
        straight_through = straight_through or (training and output_map == "clamp_st")
        return unit_clamp(x + r, straight_through, returning=training and output_map == "clamp_return")
    out = _sigmoid(_pre_map(x, r, "sigmoid"))
    if straight_through and torch.is_grad_enabled():
        surrogate = _squeezed(x) + r
        return surrogate + (out - surrogate).detach()
    return out


def saturated(x: torch.Tensor, r: torch.Tensor, output_map: str) -> torch.Tensor:
    """
    Boolean mask of the values that ``output_map`` saturates (see the module docstring): pushed against 0
    or 1 where the map has lost its gradient, from an input at least :data:`_AT_END` away from that end.
    """
    z = _pre_map(x, r, output_map)
    low, high = (z < 0, z > 1) if output_map in _CLIPS else (z < -_SATURATED_Z, z > _SATURATED_Z)
    return (low & (x > _AT_END)) | (high & (x < 1 - _AT_END))


def _mapped_modules(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if hasattr(m, "straight_through_map")]


@contextmanager
def straight_through_maps(network: nn.Module) -> Iterator[int]:
    """
    Within the context, every module of ``network`` with a ``straight_through_map`` flag (the texture
    and colour modules) passes its output map's gradient straight through (see :func:`map_output`);
    forward values are unchanged. The flags are restored on exit. Yields the number of modules switched
    (0 for a vanilla network).
    """
    modules = _mapped_modules(network)
    flags = [m.straight_through_map for m in modules]
    try:
        for m in modules:
            m.straight_through_map = True
        yield len(modules)
    finally:
        for m, flag in zip(modules, flags):
            m.straight_through_map = flag


@torch.no_grad()
def saturation(network: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """
    The fraction of values that the texture module ``T`` and the colour module ``C`` of an
    :class:`~monai_assim.networks.AssimilationNet` saturate (:func:`saturated`): ``C`` is measured on
    ``T(images)``, the input it gets.

    Args:
        network: an AssimilationNet (DDP / compile wrappers unwrapped by the caller).
        images: ``(B, 1, H, W)`` on [0, 1].

    Returns:
        ``{"texture": f_T, "color": f_C}``; empty for a network without the modules (vanilla).
    """
    texture, color = getattr(network, "texture", None), getattr(network, "color", None)
    if texture is None or color is None:
        return {}
    return module_saturation(texture, color, images)


@torch.no_grad()
def module_saturation(texture: nn.Module, color: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """:func:`saturation` of a texture module and a colour module given on their own (e.g. the ``T`` and ``C``
    loaded from a checkpoint without the backbone): ``{"texture": f_T, "color": f_C}``, C measured on T(images)."""
    t = texture(images)
    fraction = lambda mask: float(mask.float().mean())  # noqa: E731
    return {"texture": fraction(texture.saturated(images)), "color": fraction(color.saturated(t))}
