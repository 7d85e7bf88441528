"""Small helpers shared by several modules of monai_assim; each lives in the module named after it."""

from .dist import all_gather_object, all_reduce, get_rank, get_world_size
from .files import atomic_torch_save, atomic_write, atomic_write_csv, atomic_write_text
from .image import LUMA_BT601, rgb_to_grey
from .labels import as_class_indices
from .module import eval_mode, unwrap_module
from .output import first_item, output_tensor

__all__ = [
    "LUMA_BT601",
    "all_gather_object",
    "all_reduce",
    "as_class_indices",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_csv",
    "atomic_write_text",
    "eval_mode",
    "first_item",
    "get_rank",
    "get_world_size",
    "output_tensor",
    "rgb_to_grey",
    "unwrap_module",
]
