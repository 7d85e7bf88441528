"""Domain-assimilation networks: texture module, colour module, backbones, AssimilationNet."""

from monai_assim.networks.assimilation_net import VARIANTS, AssimilationNet
from monai_assim.networks.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ChannelNormalize,
    build_backbone,
    freeze_backbone,
    imagenet_state_dict,
    imagenet_weights_file,
    load_backbone_state_dict,
    set_batchnorm_eval,
)
from monai_assim.networks.color_module import ColorModule
from monai_assim.networks.output_map import OUTPUT_MAPS, saturation, straight_through_maps, unit_clamp
from monai_assim.networks.param_groups import param_groups
from monai_assim.networks.texture_module import INITS, TextureModule

__all__ = [
    "AssimilationNet",
    "VARIANTS",
    "INITS",
    "param_groups",
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ChannelNormalize",
    "ColorModule",
    "TextureModule",
    "build_backbone",
    "freeze_backbone",
    "imagenet_state_dict",
    "imagenet_weights_file",
    "load_backbone_state_dict",
    "set_batchnorm_eval",
    "OUTPUT_MAPS",
    "saturation",
    "straight_through_maps",
    "unit_clamp",
]
