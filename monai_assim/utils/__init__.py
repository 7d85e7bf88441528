"""Small helpers shared by several modules of monai_assim; each lives in the module named after it."""

from .dist import get_rank
from .files import atomic_torch_save, atomic_write, atomic_write_csv, atomic_write_text
from .image import LUMA_BT601
from .labels import as_class_indices
from .module import eval_mode, unwrap_module
from .output import first_item, output_tensor

__all__ = [
    "LUMA_BT601",
    "as_class_indices",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_csv",
    "atomic_write_text",
    "eval_mode",
    "first_item",
    "get_rank",
    "output_tensor",
    "unwrap_module",
]
