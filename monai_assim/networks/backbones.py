"""
torchvision classification backbones for domain assimilation: construction, ImageNet or file
weights, head replacement, input normalisation statistics and freezing.

Every backbone is built with torchvision's own constructor, so a torchvision state dict (the hub
files of ``torchvision.models.*_Weights`` or ``model.state_dict()`` of a torchvision model) loads
with unchanged key names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from monai_assim.errors import MissingInputError, UserInputError

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_backbone",
    "backbone_head_name",
    "imagenet_state_dict",
    "imagenet_weights_file",
    "load_backbone_state_dict",
    "freeze_backbone",
    "set_batchnorm_eval",
    "ChannelNormalize",
]

#: supported backbone names, in the order the paper uses them (MobileNetV2 added).
BACKBONES = ("resnet18", "resnet50", "densenet121", "mobilenet_v2")
#: ImageNet channel statistics that torchvision's weights expect (RGB on [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# dotted name of the final linear layer of each torchvision architecture
_HEADS = {"resnet18": "fc", "resnet50": "fc", "densenet121": "classifier", "mobilenet_v2": "classifier.1"}
_MAX_LISTED = 20  # keys listed per kind of mismatch in an error message
# torchvision's DenseNet hub files still use the old "norm.1" style names of the dense layers
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKBONES:
        raise UserInputError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.",
            f"pass --backbone {BACKBONES[0]} (or another of {', '.join(BACKBONES)}).",
        )
    return name.lower()


def backbone_head_name(name: str) -> str:
    """Dotted module name of the classification head (final ``nn.Linear``) of backbone ``name``."""
    return _HEADS[_check_name(name)]


def _get_head(model: nn.Module, name: str) -> nn.Linear:
    return model.get_submodule(backbone_head_name(name))  # type: ignore[return-value]


def _set_head(model: nn.Module, name: str, head: nn.Module) -> None:
    parent_name, _, child = backbone_head_name(name).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, head)


def _rename_legacy_keys(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if name != "densenet121":
        return dict(state_dict)
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state_dict.items()}


def imagenet_weights_file(name: str) -> Path:
    """
    The file of torchvision's default ImageNet weights of backbone ``name`` in the torch.hub cache
    (``torch.hub.get_dir()/checkpoints``), downloaded there first when absent and a network is available.

    Raises:
        MissingInputError: (a ``FileNotFoundError``) when the file is neither cached nor downloadable;
            the message names the file, the folder to put it in and the URL to get it from.
    """
    name = _check_name(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    file = cache_dir / os.path.basename(weights.url)
    if not file.is_file():
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(file), progress=False)
        except Exception as e:  # no network, proxy refusal, read-only cache, ...
            raise MissingInputError(
                f"ImageNet weights for {name} ({weights}) are not cached and could not be downloaded "
                f"({type(e).__name__}: {e}). Put the file {file.name!r} in the folder {str(cache_dir)!r} "
                f"(download it from {weights.url}).",
                "copy the file there from a machine with internet access, or train without them: --pretrained none.",
            ) from e
    return file


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """
    torchvision's default ImageNet weights of backbone ``name``, read from the file of
    :func:`imagenet_weights_file` (the torch.hub cache, downloaded there when absent and possible).

    Raises:
        MissingInputError: (a ``FileNotFoundError``) when the file is neither cached nor downloadable.
    """
    name = _check_name(name)
    state_dict = torch.load(imagenet_weights_file(name), map_location="cpu", weights_only=True)
    return _rename_legacy_keys(name, state_dict)


def load_backbone_state_dict(model: nn.Module, name: str, state_dict: Mapping[str, torch.Tensor]) -> bool:
    """
    Load a torchvision-format ``state_dict`` into ``model`` (a backbone built by :func:`build_backbone`),
    strictly except for the classification head.

    The head is loaded when the checkpoint's head has the model's shape (for example an ImageNet
    checkpoint into a 1000-class model) and otherwise keeps its fresh initialisation.

    Returns:
        whether the head was loaded from ``state_dict``.

    Raises:
        ValueError: listing the missing, unexpected and wrongly shaped keys when anything other than
            the head does not match.
    """
    name = _check_name(name)
    state_dict = _rename_legacy_keys(name, state_dict)
    head = backbone_head_name(name) + "."
    own = model.state_dict()
    # old checkpoints (e.g. torchvision's DenseNet hub files) lack BatchNorm's num_batches_tracked; PyTorch
    # fills it in itself when loading them, so it is not reported as missing
    missing = [
        k for k in own if k not in state_dict and not k.startswith(head) and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and not k.startswith(head) and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        lines = [f"the checkpoint does not match a torchvision {name} (the head {head[:-1]!r} aside):"]
        kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong_shape))
        for title, keys in kinds:
            if keys:
                more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:_MAX_LISTED]) + more)
        raise ValueError("\n".join(lines))
    head_keys = [k for k in own if k.startswith(head)]
    head_fits = all(k in state_dict and tuple(state_dict[k].shape) == tuple(own[k].shape) for k in head_keys)
    body = {k: v for k, v in state_dict.items() if not k.startswith(head)}
    if head_fits:
        body.update({k: state_dict[k] for k in head_keys})
    model.load_state_dict(body, strict=head_fits)
    return head_fits


def build_backbone(name: str, num_classes: int, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """
    A torchvision classification network with a ``num_classes`` head.

    Args:
        name: one of :data:`BACKBONES`.
        num_classes: number of output logits.
        pretrained: ``None`` or ``"none"`` (random initialisation), ``"imagenet"`` (torchvision's
            default ImageNet weights through the torch.hub cache, see :func:`imagenet_state_dict`), or
            the path of a torchvision-format state dict (read with ``torch.load(..., weights_only=True)``,
            loaded by :func:`load_backbone_state_dict`).

    Raises:
        ValueError: unknown backbone, bad ``num_classes``, checkpoint of another architecture.
        FileNotFoundError: ImageNet weights unavailable offline, or no file at ``pretrained``.
    """
    name = _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    model = getattr(torchvision.models, name)(weights=None)
    if pretrained is not None and not (isinstance(pretrained, str) and pretrained.lower() == "none"):
        if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
            state_dict = imagenet_state_dict(name)
        else:
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(
                    f"pretrained must be None, 'none', 'imagenet' or the path of a state dict file; "
                    f"no file at {str(path)!r}."
                )
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state_dict, Mapping):
                raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state_dict).__name__}).")
        # the checkpoint's own head is kept only when it already has num_classes outputs
        old_head = _get_head(model, name)
        if old_head.out_features != num_classes:
            _set_head(model, name, nn.Linear(old_head.in_features, num_classes))
        load_backbone_state_dict(model, name, state_dict)
    else:
        old_head = _get_head(model, name)
        if old_head.out_features != num_classes:
            _set_head(model, name, nn.Linear(old_head.in_features, num_classes))
    return model


def freeze_backbone(model: nn.Module, name: str, freeze: bool = True) -> None:
    """Set ``requires_grad = not freeze`` on every parameter of ``model`` except those of its head."""
    head = backbone_head_name(name) + "."
    for key, param in model.named_parameters():
        if not key.startswith(head):
            param.requires_grad_(not freeze)


def set_batchnorm_eval(model: nn.Module, freeze_affine: bool = True) -> None:
    """
    Put every BatchNorm layer of ``model`` in eval mode (running statistics used and no longer
    updated) and, with ``freeze_affine``, stop the gradients of their weight and bias. Call it after
    every ``model.train()`` (:class:`~monai_assim.networks.AssimilationNet` does so itself).
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if freeze_affine:
                for p in m.parameters():
                    p.requires_grad_(False)


def _as_stats(value: float | Sequence[float] | None, default: Sequence[float], what: str) -> tuple[float, ...]:
    if value is None:
        return tuple(float(v) for v in default)
    values = (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{what} must be one number or three (R, G, B), got {value!r}.")
    if what == "std" and min(values) <= 0:
        raise ValueError(f"std must be positive, got {value!r}.")
    return values


class ChannelNormalize(nn.Module):
    r"""
    The backbone's input normalisation :math:`y_c = (x_c - \mu_c) / \sigma_c` on an RGB batch.

    The statistics are non-persistent buffers: they follow the module to its device but are not part
    of the state dict (they belong to the weights' preprocessing, set at construction).

    Args:
        mean: one value or three (R, G, B); default the ImageNet mean of torchvision's weights.
        std: one value or three (R, G, B); default the ImageNet std of torchvision's weights.

    Shapes:
        input and output ``(B, 3, H, W)``.
    """

    def __init__(self, mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None):
        super().__init__()
        mean_ = _as_stats(mean, IMAGENET_MEAN, "mean")
        std_ = _as_stats(std, IMAGENET_STD, "std")
        self.register_buffer("mean", torch.tensor(mean_).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean.flatten().tolist())}, std={tuple(self.std.flatten().tolist())}"
