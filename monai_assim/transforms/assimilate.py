"""
Assimilate / Assimilated: apply trained texture and colour modules (``C(T(x))``) inside a MONAI
``Compose``, so a grey image becomes the RGB image an ImageNet backbone was tuned to see.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor
from torch import nn

from monai_assim.networks.assimilation_net import AssimilationNet
from monai_assim.networks.color_module import ColorModule
from monai_assim.networks.output_map import OUTPUT_MAPS
from monai_assim.networks.texture_module import TextureModule

__all__ = [
    "Assimilate",
    "Assimilated",
    "AssimilateD",
    "AssimilateDict",
    "load_assimilation_modules",
]

_NETWORK_KEY = "network"  # where MONAI's CheckpointSaver puts the network in a dict of saved objects


def load_assimilation_modules(
    checkpoint: str | os.PathLike,
    texture_kwargs: Mapping | None = None,
    color_kwargs: Mapping | None = None,
) -> nn.Sequential:
    """
    ``nn.Sequential(TextureModule, ColorModule)`` with the trained weights of an AssimilationNet
    checkpoint: either its state dict, or a dict holding it under ``"network"`` (as MONAI's
    ``CheckpointSaver(save_dict={"network": net, ...})`` writes it). The backbone weights are not needed
    and are ignored. ``texture_kwargs`` / ``color_kwargs`` must match the trained modules' constructor
    arguments (``TextureModule(**texture_kwargs)``, ``ColorModule(**color_kwargs)``); the output map is
    read from the checkpoint (``"clamp"`` for one written before the maps were recorded).

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        ValueError: the file holds no texture / colour weights (e.g. a vanilla network) or they do not
            fit the modules (the message lists the keys).
    """
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no AssimilationNet checkpoint at {path!r}.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping) and _NETWORK_KEY in ckpt and isinstance(ckpt[_NETWORK_KEY], Mapping):
        ckpt = ckpt[_NETWORK_KEY]
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path!r} holds a {type(ckpt).__name__}, not a state dict.")
    state = {str(k).removeprefix("module."): v for k, v in ckpt.items()}  # DataParallel/DDP prefixes
    # the output map the modules were trained with (recorded in the checkpoint; absent: the clamp of older runs)
    recorded = state.get("texture.output_map_id")
    output_map = OUTPUT_MAPS[int(recorded)] if recorded is not None else "clamp"
    texture_kwargs = {"output_map": output_map, **dict(texture_kwargs or {})}
    color_kwargs = {"output_map": output_map, **dict(color_kwargs or {})}
    modules = nn.Sequential(TextureModule(**texture_kwargs), ColorModule(**color_kwargs))
    parts = {}
    for index, prefix in enumerate(("texture.", "color.")):
        parts.update({f"{index}.{k[len(prefix) :]}": v for k, v in state.items() if k.startswith(prefix)})
    if not parts:
        raise ValueError(
            f"{path!r} holds no 'texture.*' / 'color.*' weights: not an assimilated AssimilationNet "
            "checkpoint (a vanilla network has no T and C to apply)."
        )
    expected = modules.state_dict()
    missing = sorted(k for k in set(expected) - set(parts) if not k.endswith("output_map_id"))
    unexpected = sorted(set(parts) - set(expected))
    wrong = [k for k in expected if k in parts and parts[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        names = {"0.": "texture.", "1.": "color."}
        fmt = lambda keys: ", ".join(names[k[:2]] + k[2:] for k in keys)  # noqa: E731
        raise ValueError(
            f"the texture/colour weights in {path!r} do not fit TextureModule({texture_kwargs or ''}) + "
            f"ColorModule({color_kwargs or ''}): missing [{fmt(missing)}], unexpected [{fmt(unexpected)}], "
            f"wrong shape [{fmt(wrong)}]; pass the constructor arguments the network was trained with."
        )
    modules.load_state_dict(parts)
    return modules.eval()


class Assimilate(Transform):
    """
    Apply trained domain-assimilation modules to a channel-first grey image:
    ``(1, H, W)`` on [0, 1] -> ``C(T(x))`` of shape ``(3, H, W)`` on [0, 1].

    Gradients are not tracked; the computation runs on ``device`` (default: the modules' device) and
    the result goes back to the input's device. As in MONAI's intensity transforms, the output is a
    MetaTensor (the input's metadata kept) when meta tracking is on, a tensor otherwise. Drop it into
    an existing pipeline in front of a network pretrained on RGB images.

    Args:
        network: an :class:`~monai_assim.networks.AssimilationNet` (its :meth:`assimilate`; a vanilla one
            replicates the grey channel), a pair ``(texture, color)`` of modules, or the path of an
            AssimilationNet checkpoint (see :func:`load_assimilation_modules`).
        device: where to compute; the modules are moved there.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        texture_kwargs: constructor arguments of the trained ``TextureModule`` (checkpoint paths only).
        color_kwargs: constructor arguments of the trained ``ColorModule`` (checkpoint paths only).

    Raises:
        TypeError: ``network`` is none of the above.
        ValueError: the image is not ``(1, H, W)`` or its values leave [0, 1].
    """

    # the modules compute in torch: a numpy input is converted to a tensor and the result converted back
    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        network: nn.Module | Sequence[nn.Module] | str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        texture_kwargs: Mapping | None = None,
        color_kwargs: Mapping | None = None,
    ) -> None:
        module: nn.Module
        if isinstance(network, AssimilationNet):
            module = network
        elif isinstance(network, (str, os.PathLike)):
            module = load_assimilation_modules(network, texture_kwargs, color_kwargs)
        elif isinstance(network, Sequence) and len(network) == 2 and all(isinstance(m, nn.Module) for m in network):
            module = nn.Sequential(*network)
        else:
            raise TypeError(
                "network must be an AssimilationNet, a (texture, color) pair of modules or a checkpoint path, "
                f"got {type(network).__name__}."
            )
        if device is not None:
            module = module.to(device)
        self.module = module
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        """Where the modules live, hence where the image is processed."""
        param = next(self.module.parameters(), None)
        if param is None:  # a vanilla AssimilationNet always has its backbone; this is for safety
            return torch.device("cpu")
        return param.device

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, AssimilationNet):
            return self.module.assimilate(x)
        return self.module(x)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first grey image ``(1, H, W)`` on [0, 1] (numpy array, tensor or MetaTensor).

        Returns:
            the assimilated RGB image ``(3, H, W)`` on [0, 1], on the input's device.
        """
        img = convert_to_tensor(img, track_meta=get_track_meta())
        img_t = convert_to_tensor(img, track_meta=False)
        if img_t.ndim != 3 or img_t.shape[0] != 1:
            raise ValueError(
                f"Assimilate expects a channel-first grey image (1, H, W), got shape {tuple(img_t.shape)}."
            )
        x = img_t.to(device=self.device, dtype=torch.float32)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"Assimilate expects intensities on [0, 1], got values in [{lo:g}, {hi:g}]; "
                "scale the image first (e.g. ScaleIntensity)."
            )
        with torch.no_grad():
            rgb = self._apply(x[None])[0]
        out_dtype = self.dtype if self.dtype is not None else img_t.dtype
        return convert_to_dst_type(rgb, dst=img, dtype=out_dtype, device=img_t.device)[0]


class Assimilated(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`Assimilate`: ``(1, H, W)`` grey images on [0, 1] under
    ``keys`` become ``(3, H, W)`` assimilated RGB images on [0, 1].

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        network: AssimilationNet, ``(texture, color)`` pair, or checkpoint path (see :py:class:`Assimilate`).
        device: where to compute.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        texture_kwargs: constructor arguments of the trained ``TextureModule`` (checkpoint paths only).
        color_kwargs: constructor arguments of the trained ``ColorModule`` (checkpoint paths only).
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = Assimilate.backend

    def __init__(
        self,
        keys: KeysCollection,
        network: nn.Module | Sequence[nn.Module] | str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        texture_kwargs: Mapping | None = None,
        color_kwargs: Mapping | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.assimilate = Assimilate(network, device, dtype, texture_kwargs, color_kwargs)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.assimilate(d[key])
        return d


AssimilateD = AssimilateDict = Assimilated
