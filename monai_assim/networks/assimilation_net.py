"""AssimilationNet: texture module, colour module, normalisation and a pretrained backbone."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from monai_assim.networks.backbones import (
    ChannelNormalize,
    backbone_head_name,
    build_backbone,
    freeze_backbone,
    set_batchnorm_eval,
)
from monai_assim.networks.color_module import ColorModule
from monai_assim.networks.texture_module import TextureModule

__all__ = ["AssimilationNet", "VARIANTS"]

#: ``"assimilated"``: T and C in front of the backbone; ``"vanilla"``: plain transfer learning.
VARIANTS = ("assimilated", "vanilla")


class AssimilationNet(nn.Module):
    r"""
    Domain-assimilation classifier (Chen & Luo, PAKDD 2024) for grey images on [0, 1]:

    .. math::

        \mathrm{logits} = F\Big(B\big(\mathcal{N}(C(T(x)))\big)\Big)

    with ``T`` the :class:`TextureModule` (1 -> 1 channel), ``C`` the :class:`ColorModule`
    (1 -> 3 channels), :math:`\mathcal{N}` the normalisation of the backbone's weights
    (:class:`~monai_assim.networks.backbones.ChannelNormalize`), ``B`` a torchvision backbone and ``F``
    its classification head, replaced for ``num_classes``. Because the normalisation lives inside the
    network, every caller (trainers, torchattacks, TorchScript export) works in [0, 1] pixel space.

    ``variant="vanilla"`` is the control: no ``T`` and ``C`` (no parameters, nothing in the state dict);
    the grey image is replicated to three channels, so the same switch turns an assimilated run into
    plain transfer learning with the same interface. An untrained assimilated net computes the same
    logits as the vanilla one with the same backbone weights, because T and C start as the identity and
    grey replication (exactly with ``output_map="clamp"``; with the default sigmoid map up to its 0.1%
    margin at both ends of the grey scale).

    Args:
        backbone: one of ``"resnet18"``, ``"resnet50"``, ``"densenet121"``, ``"mobilenet_v2"``.
        num_classes: number of logits.
        pretrained: ``None``/``"none"``, ``"imagenet"`` or the path of a torchvision-format state dict,
            see :func:`~monai_assim.networks.backbones.build_backbone`.
        variant: ``"assimilated"`` or ``"vanilla"``.
        mean: normalisation mean, one value or three; default the ImageNet mean (torchvision's weights).
        std: normalisation std, one value or three; default the ImageNet std. The shared MobileNetV2
            converted from TFLite needs ``mean=0.5, std=0.5``.
        freeze_backbone: stop the gradients of every backbone parameter except the head.
        freeze_bn: keep the backbone's BatchNorm layers in eval mode (also after ``.train()``) and stop
            the gradients of their affine parameters.
        texture_features: hidden channels of ``T``.
        texture_layers: number of 3x3 convolutions of ``T``.
        color_features: hidden units of ``C``.
        assimilation_init: start of ``T`` and ``C``: ``"identity"`` (the default: T the identity, C grey
            replication, so the untrained net equals the vanilla one) or ``"random"`` (small random last
            layers: T a mild filter, C a non-grey colour map); see :class:`TextureModule`.
        output_map: how T and C bring their output onto [0, 1]: ``"sigmoid"`` (the default: smooth, its
            gradient never exactly 0) or ``"clamp"`` (a hard clip, whose gradient is 0 outside [0, 1]: the
            map of runs before it was a setting) or ``"clamp_st"`` (the clip, whose gradient passes
            straight through while T and C train) or ``"clamp_return"`` (the clip, whose training gradient
            pulls values pushed out back); see :mod:`monai_assim.networks.output_map`.

    Shapes:
        ``forward(x)``: ``(B, 1, H, W)`` -> ``(B, num_classes)``;
        ``forward(x, return_assimilated=True)`` -> ``((B, num_classes), (B, 3, H, W))``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        pretrained: str | os.PathLike | None = None,
        variant: str = "assimilated",
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        freeze_backbone: bool = False,
        freeze_bn: bool = False,
        texture_features: int = 8,
        texture_layers: int = 3,
        color_features: int = 16,
        assimilation_init: str = "identity",
        output_map: str = "sigmoid",
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
        self.variant = variant
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        if variant == "assimilated":
            self.texture: nn.Module | None = TextureModule(
                texture_features, texture_layers, init=assimilation_init, output_map=output_map
            )
            self.color: nn.Module | None = ColorModule(color_features, init=assimilation_init, output_map=output_map)
        else:
            self.texture = None
            self.color = None
        self.normalize = ChannelNormalize(mean, std)
        self.backbone = build_backbone(backbone, num_classes, pretrained)
        if freeze_backbone:
            self.freeze_backbone(True)
        if freeze_bn:
            set_batchnorm_eval(self.backbone)

    @property
    def head(self) -> nn.Module:
        """The classification head ``F`` (a ``nn.Linear`` inside ``backbone``)."""
        return self.backbone.get_submodule(backbone_head_name(self.backbone_name))

    def parameter_groups(self, lr: float, assimilation_lr: float | None = None) -> list[dict]:
        """Optimiser parameter groups: backbone and head at ``lr``, T and C at ``assimilation_lr``; see
        :func:`monai_assim.networks.param_groups`."""
        from monai_assim.networks.param_groups import param_groups

        return param_groups(self, lr, assimilation_lr)

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Stop (or restore) the gradients of the backbone parameters other than the head."""
        freeze_backbone(self.backbone, self.backbone_name, freeze)

    def train(self, mode: bool = True) -> AssimilationNet:
        super().train(mode)
        if self.freeze_bn:
            set_batchnorm_eval(self.backbone)
        return self

    @staticmethod
    def _check_grey(x: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are fixed by the example input of the trace
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"AssimilationNet expects a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(
                f"AssimilationNet expects a batch of shape (B, 1, H, W), got {x.ndim} dimensions {tuple(x.shape)}."
            )
        if x.shape[1] != 1:
            raise ValueError(
                f"AssimilationNet takes 1-channel grey images (B, 1, H, W) on [0, 1], got {x.shape[1]} channels "
                f"{tuple(x.shape)}; convert RGB to grey first, or use forward_rgb() for RGB input."
            )

    def _assimilate(self, x: torch.Tensor) -> torch.Tensor:
        if self.texture is None or self.color is None:
            return x.expand(-1, 3, -1, -1)
        return self.color(self.texture(x))

    def assimilate(self, x: torch.Tensor) -> torch.Tensor:
        """
        The assimilated RGB image ``C(T(x))``, ``(B, 1, H, W)`` -> ``(B, 3, H, W)`` on [0, 1]
        (vanilla variant: the grey image replicated to three channels).
        """
        self._check_grey(x)
        return self._assimilate(x).contiguous()

    def forward_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """
        Logits of an RGB batch ``(B, 3, H, W)`` on [0, 1], skipping ``T`` and ``C``: normalisation,
        backbone and head, exactly the path ``forward`` takes after ``C``.
        """
        if not torch.jit.is_tracing() and (not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3):
            shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
            raise ValueError(f"forward_rgb expects an RGB batch of shape (B, 3, H, W) on [0, 1], got {shape}.")
        return self.backbone(self.normalize(rgb))

    def forward(self, x: torch.Tensor, return_assimilated: bool = False):
        """
        Args:
            x: grey batch ``(B, 1, H, W)`` on [0, 1].
            return_assimilated: also return ``C(T(x))``; going through ``forward`` (rather than calling
                :meth:`assimilate` separately) keeps DistributedDataParallel's gradient hooks working.

        Returns:
            logits ``(B, num_classes)``, or ``(logits, rgb)`` with ``rgb`` of shape ``(B, 3, H, W)``.
        """
        self._check_grey(x)
        rgb = self._assimilate(x)
        logits = self.backbone(self.normalize(rgb))
        if return_assimilated:
            return logits, rgb
        return logits
