"""
Running a pipeline over folders that hold some unreadable files (truncated JPEGs, files that are not
images despite their suffix): find them before the run, and keep one that slips through from stopping it.

:func:`split_readable` decodes every image of a datalist with :func:`monai_assim.data.check_image` and
splits it into the readable items and the ``(path, reason)`` of the others; :func:`require_readable`
fails naming all unreadable files at once (for labelled sets, where skipping would change the result).
:class:`ReadableDataset` is a ``monai.data.Dataset`` whose items never raise: an item whose transform
fails (a file that passed the check but fails in ``LoadImaged``) is replaced by the next item that
loads, marked with the failure so that the consumer (:class:`monai_assim.handlers.PredictionSaver`)
drops its output and reports the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from monai.data import Dataset

from monai_assim.data.splits import check_image
from monai_assim.errors import UserInputError

__all__ = [
    "ERROR_KEY",
    "SOURCE_KEY",
    "ReadableDataset",
    "require_readable",
    "split_readable",
    "unreadable_message",
]

logger = logging.getLogger(__name__)

#: key of the file an item of :class:`ReadableDataset` stands for (its path, as in the datalist).
SOURCE_KEY = "source"
#: key of the load failure of an item of :class:`ReadableDataset` (``""`` when it loaded).
ERROR_KEY = "load_error"


def _reason(e: BaseException) -> str:
    """The innermost cause of ``e`` (MONAI wraps a reader's error in "applying transform ..."), on one line."""
    while e.__cause__ is not None:
        e = e.__cause__
    return " ".join(f"{type(e).__name__}: {e}".split())


def split_readable(
    datalist: Sequence[dict], key: str = "image", check: Callable[[str], object] = check_image
) -> tuple[list[dict], list[tuple[str, str]]]:
    """
    Split ``datalist`` into the items whose ``key`` file passes ``check`` (default: decodes as a 2D image,
    :func:`monai_assim.data.check_image`) and the ``(path, reason)`` of the others, both in datalist order.
    Each unreadable file is logged at WARNING level with its reason.
    """
    readable, unreadable = [], []
    for item in datalist:
        path = str(item[key])
        try:
            check(path)
        except Exception as e:  # any decoder failure is reported the same way
            # check_image names the path; the reason column needs only the decoder's own message
            reason = _reason(e) if e.__cause__ is not None else " ".join(str(e).split())
            logger.warning("unreadable image skipped: %s (%s)", path, reason)
            unreadable.append((path, reason))
        else:
            readable.append(item)
    return readable, unreadable


def unreadable_message(unreadable: Sequence[tuple[str, str]], what: str) -> str:
    """A message listing every ``(path, reason)`` of ``unreadable``, after the sentence ``what``."""
    lines = "\n".join(f"  {path}: {reason}" for path, reason in unreadable)
    return f"{what}; {len(unreadable)} unreadable file(s):\n{lines}"


def require_readable(
    datalist: Sequence[dict], key: str = "image", check: Callable[[str], object] = check_image
) -> list[dict]:
    """
    ``datalist`` itself when every ``key`` file passes ``check``; otherwise a ``ValueError`` naming all
    unreadable files and their reasons (one pass, not only the first). For labelled sets (evaluation),
    where silently skipping files would change the reported accuracy.
    """
    readable, unreadable = split_readable(datalist, key, check)
    if unreadable:
        raise UserInputError(
            unreadable_message(unreadable, f"{len(unreadable)} of {len(datalist)} images cannot be read"),
            "repair or remove these files (or re-run training to record new splits).",
        )
    return list(datalist)


class ReadableDataset(Dataset):
    """
    A ``monai.data.Dataset`` that does not stop at a file its ``transform`` cannot load.

    Every item gets two more keys: :data:`SOURCE_KEY`, the ``key`` path of the datalist item, and
    :data:`ERROR_KEY`, ``""`` or the failure. When ``transform`` raises for item ``i``, the item
    returned is item ``i + 1`` (then ``i + 2``, ..., wrapping around) transformed, with item ``i``'s
    source and the failure; a consumer drops its output (with the network in eval mode, the other
    items of the batch are unaffected). The substitute makes every batch a normal, full batch; the
    choice is deterministic. ``ValueError`` naming the file when no item of the dataset loads.

    Args:
        data: the datalist, ``[{key: path, ...}, ...]``.
        transform: the loading pipeline (e.g. ``LoadImaged`` ... ``EnsureTyped``).
        key: the key of the image path.
    """

    def __init__(self, data: Sequence[dict], transform: Callable | None = None, key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.key = key

    def _load(self, index: int) -> dict:
        item = dict(super()._transform(index))
        item[SOURCE_KEY] = str(self.data[index][self.key])
        item[ERROR_KEY] = ""
        return item

    def _transform(self, index: int) -> dict:
        try:
            return self._load(index)
        except Exception as e:
            source, reason = str(self.data[index][self.key]), _reason(e)
            logger.warning("image could not be loaded, skipped: %s (%s)", source, reason)
        n = len(self.data)
        for step in range(1, n):
            try:
                item = self._load((index + step) % n)
            except Exception:
                continue
            item[SOURCE_KEY], item[ERROR_KEY] = source, reason
            return item
        raise ValueError(f"no image of the dataset could be loaded; the first failure: {source} ({reason}).")
