"""
Discovery, validation, class balancing and seeded stratified splitting of the public data sets.

:func:`build_datalists` turns a data set folder in one of the layouts of
:mod:`monai_assim.data.layouts` into MONAI datalists ``{"train", "validation", "test"}``, each a
list of ``{"image": path, "label": int}``, following Chen & Luo (PAKDD 2024):

1. every class folder of every source pool is listed (``*_mask*`` files ignored where the layout
   has masks) and checked: missing folders, missing or empty classes, mask-only folders and files
   that do not decode are all collected in one pass and reported in one
   :class:`~monai_assim.errors.UserInputError` (a ``ValueError``) naming every path, before any
   training starts;
2. class folders are merged into the two groups (label 0 negative, label 1 positive);
3. within each pool the larger group is undersampled, seeded, to the size of the smaller one;
4. the data set's own test split is the test split where it has one (chest X-ray ``test/``, brain
   MRI ``Testing/``); validation (and, where there is no own test split, test) is drawn from the
   training pool, stratified by label and seeded;
5. optionally each label of each split is capped to ``max_per_class`` images (CPU-sized runs).

The file lists are written to ``output_dir`` (``splits.json`` and one CSV per split), together with
the raw per-class-folder counts and the uncapped balanced counts per label (logged too, and compared
with the paper's table), whether or not ``max_per_class`` caps the run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_assim.data.layouts import IMAGE_SUFFIXES, DatasetLayout, get_layout
from monai_assim.errors import MissingInputError, UserInputError
from monai_assim.utils import atomic_write_csv, atomic_write_text

__all__ = [
    "SPLITS",
    "DatalistPlan",
    "build_datalists",
    "check_image",
    "class_counts",
    "plan_datalists",
    "discover_images",
    "is_mask",
    "write_datalists",
]

logger = logging.getLogger(__name__)

#: the split names of a datalist, in order.
SPLITS = ("train", "validation", "test")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


def is_mask(path: str | os.PathLike, marker: str | None = "_mask") -> bool:
    """Whether ``path`` is a segmentation mask by name, i.e. its stem contains ``marker``."""
    return marker is not None and marker in _stem(Path(path))


def is_image_file(path: str | os.PathLike, root: str | os.PathLike | None = None, marker: str | None = "_mask") -> bool:
    """
    The one rule for what counts as an image, shared by training, evaluation and inference: a file with
    one of :data:`IMAGE_SUFFIXES`, not a segmentation mask by name (``marker``), and neither hidden itself
    nor inside a hidden folder below ``root`` (names starting with ``.``: ``.ipynb_checkpoints/``,
    macOS ``._*`` resource forks, ``.DS_Store``).
    """
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    if any(part.startswith(".") for part in parts):
        return False
    return path.is_file() and _suffix(path) in IMAGE_SUFFIXES and not is_mask(path, marker)


def check_image(path: str | os.PathLike) -> None:
    """
    Check that ``path`` decodes as a 2D image; :class:`~monai_assim.errors.UserInputError` (a
    ``ValueError``) naming the path otherwise.

    PNG/JPEG are decoded by PIL (JPEG in draft mode at 1/8 scale, which still reads the whole
    compressed stream, so truncated files are caught at a fraction of a full decode). 2D DICOM is
    read with ITK, NIfTI with nibabel; both must be 2D (a trailing singleton axis is allowed).
    """
    path = Path(path)
    suffix = _suffix(path)
    hint = "replace the file with a good copy, or move it out of the data set folder."
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                shape = (img.height, img.width)
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            shape = tuple(np.asanyarray(nib.load(str(path)).dataobj).shape)
        elif suffix == ".dcm":
            import itk

            shape = tuple(itk.array_view_from_image(itk.imread(str(path))).shape)
        else:
            raise ValueError(f"unsupported file type {suffix!r}")
    except Exception as e:  # any decoder failure is reported the same way
        raise UserInputError(
            f"corrupt or unreadable image: {path} ({type(e).__name__}: {e}); "
            f"expected a decodable 2D {' / '.join(IMAGE_SUFFIXES)} file.",
            hint,
        ) from e
    dims = tuple(s for s in shape if s != 1)  # PIL images are 2D by construction
    if len(dims) == 3 and dims[-1] in (3, 4):  # a colour 2D image stored channel-last
        dims = dims[:-1]
    if suffix not in (".png", ".jpg", ".jpeg") and len(dims) != 2:
        raise UserInputError(f"not a 2D image: {path} has shape {shape}; expected a single 2D slice.", hint)


def _class_folder(pool_dir: Path, name: str, layout: DatasetLayout) -> Path | None:
    for candidate in (name, *layout.folder_aliases.get(name, ())):
        if (pool_dir / candidate).is_dir():
            return pool_dir / candidate
    return None


def discover_images(
    dataset_dir: str | os.PathLike, modality: str, check_images: bool = True
) -> dict[str, dict[str, list[Path]]]:
    """
    List and validate the images of a data set in ``modality``'s layout.

    Args:
        dataset_dir: root folder of the data set.
        modality: one of :data:`monai_assim.data.layouts.MODALITIES`.
        check_images: decode every listed file (see :func:`check_image`).

    Returns:
        source pool (``"train"``, and ``"test"`` where the data set has its own test split) ->
        class folder name -> sorted absolute image paths (masks excluded).

    Raises:
        ValueError: naming the path and what was expected, for a missing data set, pool or class
            folder, a class folder without images, one holding only masks, or a corrupt image.
    """
    layout = get_layout(modality)
    root = Path(dataset_dir).expanduser()
    layout_hint = "pass --dataset_dir <the folder laid out as expected> (the bundle's README.md shows the layout)."
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        error = MissingInputError if not root.exists() else UserInputError
        raise error(f"data set folder {root} {what}; expected {layout.expected_layout()}.", layout_hint)
    root = root.resolve()
    found: dict[str, dict[str, list[Path]]] = {}
    layout_problems: list[str] = []  # every problem of the folder layout, then every undecodable file
    bad_files: list[str] = []
    n_checked = 0
    for pool, folders in layout.pools.items():
        classes: dict[str, list[Path]] = {name: [] for name in layout.classes}
        for folder in folders:
            pool_dir = root / folder if folder else root
            if not pool_dir.is_dir():
                if folder not in layout.optional_folders:
                    layout_problems.append(f"missing split folder {pool_dir}; expected {layout.expected_layout()}.")
                continue
            for name in layout.classes:
                class_dir = _class_folder(pool_dir, name, layout)
                if class_dir is None:
                    layout_problems.append(
                        f"missing class folder {pool_dir / name}; expected the class folders "
                        f"{', '.join(layout.classes)} in {pool_dir} ({layout.expected_layout()})."
                    )
                    continue
                files = sorted(p for p in class_dir.iterdir() if is_image_file(p, marker=None))
                images = [p for p in files if not is_mask(p, layout.mask_marker)]
                if not images:
                    if files:
                        layout_problems.append(
                            f"class folder {class_dir} holds only segmentation masks "
                            f"(*{layout.mask_marker}*, {len(files)} files); expected "
                            f"{layout.suffix} images beside them."
                        )
                    else:
                        layout_problems.append(
                            f"class folder {class_dir} contains no images; expected "
                            f"{' / '.join(IMAGE_SUFFIXES)} files ({layout.expected_layout()})."
                        )
                    continue
                if check_images:
                    for p in images:
                        try:
                            check_image(p)
                        except UserInputError as e:
                            bad_files.append(e.message)
                    n_checked += len(images)
                classes[name].extend(images)
        found[pool] = classes
    if layout_problems or bad_files:
        raise _data_error(root, layout, layout_problems, bad_files, n_checked, layout_hint)
    return found


def _data_error(
    root: Path, layout: DatasetLayout, layout_problems: list[str], bad_files: list[str], n_checked: int, hint: str
) -> UserInputError:
    """One error listing every layout problem and every undecodable file found in one pass."""
    bad_hint = "replace these files with good copies, or move them out of the data set folder."
    problems = layout_problems + bad_files
    if len(problems) == 1:
        return UserInputError(problems[0], hint if layout_problems else bad_hint)
    head = [f"{len(problems)} problems with the data set {root} ({layout.title}):"]
    if layout_problems:
        head.append(f"{len(layout_problems)} in the folder layout (expected {layout.expected_layout()})")
    if bad_files:
        head.append(f"{len(bad_files)} of {n_checked} images corrupt or unreadable")
    message = head[0] + " " + "; ".join(head[1:]) + ".\n" + "\n".join(f"  - {p}" for p in problems)
    hints = ([hint] if layout_problems else []) + ([bad_hint] if bad_files else [])
    return UserInputError(message, "; then ".join(h.rstrip(".") for h in hints) + ".")


def _rounded(n: int, fraction: float) -> int:
    """``round(n * fraction)``, at least 1 when ``fraction > 0``."""
    return 0 if fraction <= 0 else max(1, int(round(n * fraction)))


def build_datalists(
    dataset_dir: str | os.PathLike,
    modality: str,
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_per_class: int | Mapping[str, int | None] | None = None,
    balance: bool = True,
    check_images: bool = True,
) -> dict[str, list[dict]]:
    """
    Discover, validate, balance and split a public data set into MONAI datalists.

    The steps are those of the module docstring. Splits are drawn per label (stratified) from
    seeded permutations, so the same ``seed`` gives the same split and another seed another one.
    Test split: chest X-ray uses its own ``test/`` and brain MRI its own ``Testing/``; chest CT
    (IQ-OTH/NCCD) and breast ultrasound (BUSI) have none, so ``test_fraction`` of the balanced set
    is held out. Kermany's ``val/`` (16 images), when present, is pooled with ``train/`` and the
    validation split is carved from that pool.

    Args:
        dataset_dir: root folder of the data set in ``modality``'s layout.
        modality: ``"chest_xray"``, ``"brain_mri"``, ``"chest_ct"`` or ``"breast_ultrasound"``.
        output_dir: where ``splits.json`` and ``train.csv`` / ``validation.csv`` / ``test.csv`` are
            written; ``None`` writes nothing.
        seed: seed of the undersampling and of the splits.
        val_fraction: fraction of the (balanced) training pool held out per label for validation.
        test_fraction: fraction of the balanced set held out per label for testing, used only
            where the data set has no own test split.
        max_per_class: if given, at most this many images per label in each split; a mapping
            ``{"train": n, "validation": n, "test": n}`` caps the splits separately (a split it does
            not name, or names with ``None``, is not capped). The capped images are a seeded random
            subset of the split.
        balance: undersample the larger group of each pool to the smaller one (the paper does).
        check_images: decode every discovered image before returning (PIL draft decode, cheap).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, each a list of
        ``{"image": absolute path str, "label": 0 | 1}`` sorted by path.

    Raises:
        ValueError: bad data (see :func:`discover_images`), bad fractions, or a split that would
            end up without an image of each label.
    """
    plan = plan_datalists(
        dataset_dir, modality, seed, val_fraction, test_fraction, max_per_class, balance, check_images
    )
    if output_dir is not None:
        plan.write(output_dir)
    return plan.datalists


@dataclass
class DatalistPlan:
    """
    The outcome of :func:`plan_datalists`: the datalists and what :meth:`write` records about them,
    so that a caller can validate and split first and write the files only once everything else is known
    to be good (the bundles' :class:`~monai_assim.bundle.RunSetup` does).
    """

    #: ``{"train", "validation", "test"}`` lists of ``{"image", "label"}``.
    datalists: dict[str, list[dict]]
    #: split -> rows ``(path, label, source class folder)``.
    table: dict[str, list[tuple[Path, int, str]]]
    #: the arguments and counts recorded in ``splits.json`` (see :func:`class_counts`).
    info: dict

    def write(self, output_dir: str | os.PathLike) -> Path:
        """Write ``splits.json`` and the CSVs to ``output_dir`` (:func:`write_datalists`); its path."""
        return write_datalists(self.table, output_dir, self.info)


def plan_datalists(
    dataset_dir: str | os.PathLike,
    modality: str,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_per_class: int | Mapping[str, int | None] | None = None,
    balance: bool = True,
    check_images: bool = True,
) -> DatalistPlan:
    """
    :func:`build_datalists` without writing anything: the same arguments (less ``output_dir``) and
    checks, returning a :class:`DatalistPlan` whose :meth:`~DatalistPlan.write` writes the files.
    """
    layout = get_layout(modality)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise UserInputError(f"{name} must be in [0, 1), got {value!r}.")
    held_out = val_fraction + (0.0 if layout.has_test_split else test_fraction)
    if held_out >= 1.0:
        raise UserInputError(f"val_fraction + test_fraction must be < 1, got {held_out}.")
    caps = _split_caps(max_per_class)

    found = discover_images(dataset_dir, modality, check_images=check_images)
    rng = np.random.default_rng(seed)
    records: dict[str, dict[int, list[tuple[Path, str]]]] = {s: {0: [], 1: []} for s in SPLITS}
    balanced: dict[str, dict[int, int]] = {}
    for pool in sorted(found):  # fixed order keeps the random stream reproducible
        groups: dict[int, list[tuple[Path, str]]] = {0: [], 1: []}
        for name, paths in found[pool].items():
            groups[layout.classes[name]].extend((p, name) for p in paths)
        n_keep = min(len(g) for g in groups.values()) if balance else None
        balanced[pool] = {label: len(groups[label][:n_keep]) for label in (0, 1)}
        for label in (0, 1):
            group = groups[label]
            order = rng.permutation(len(group))  # shuffled; undersampling keeps the first n_keep
            group = [group[i] for i in order[:n_keep]]
            if pool == "test":
                records["test"][label].extend(group)
                continue
            n_test = 0 if layout.has_test_split else _rounded(len(group), test_fraction)
            n_val = _rounded(len(group), val_fraction)
            records["test"][label].extend(group[:n_test])
            records["validation"][label].extend(group[n_test : n_test + n_val])
            records["train"][label].extend(group[n_test + n_val :])

    datalists: dict[str, list[dict]] = {}
    table: dict[str, list[tuple[Path, int, str]]] = {}
    for split in SPLITS:
        rows = []
        for label in (0, 1):
            chosen = records[split][label][: caps[split]]
            if not chosen and (split != "validation" or val_fraction > 0):
                raise UserInputError(
                    f"split {split!r} of {dataset_dir} has no image of label {label} "
                    f"({layout.class_names[label]}); expected enough images per class for "
                    f"val_fraction={val_fraction}, test_fraction={test_fraction}."
                )
            rows.extend((p, label, name) for p, name in chosen)
        rows.sort(key=lambda r: str(r[0]))
        table[split] = rows
        datalists[split] = [{"image": str(p), "label": int(label)} for p, label, _ in rows]

    counts = class_counts(found, balanced, layout, balance)
    _log_counts(counts, modality, layout)
    info = {
        "modality": modality,
        "dataset_dir": str(Path(dataset_dir).expanduser().resolve()),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction) if not layout.has_test_split else None,
        "own_test_split": layout.has_test_split,
        "max_per_class": dict(caps),
        "balance": bool(balance),
        "class_names": list(layout.class_names),
        "class_groups": {name: label for name, label in layout.classes.items()},
        **counts,
    }
    for split in SPLITS:
        counts = [sum(d["label"] == k for d in datalists[split]) for k in (0, 1)]
        logger.info(f"{modality} {split}: {counts[0]} {layout.class_names[0]}, {counts[1]} {layout.class_names[1]}")
    return DatalistPlan(datalists, table, info)


def class_counts(
    found: Mapping[str, Mapping[str, Sequence[Path]]],
    balanced: Mapping[str, Mapping[int, int]],
    layout: DatasetLayout,
    balance: bool = True,
) -> dict:
    """
    The counts :func:`build_datalists` records in ``splits.json``, before any ``max_per_class`` cap.

    Returns:
        ``{"class_folder_counts": {pool: {class folder: n}}, "balanced_counts": {pool: {"0": n, "1": n},
        "total": {...}}, "paper_balanced_count": {"count", "pools", "differs"}}``: the images found per class
        folder, the images per label after balancing each pool (uncapped; every image when not
        ``balance``), and the paper's per-class count of the pools it reports (``None`` if unknown) with
        whether this copy's count differs from it.
    """
    folder_counts = {pool: {name: len(paths) for name, paths in found[pool].items()} for pool in sorted(found)}
    per_pool = {pool: {str(k): int(n) for k, n in balanced[pool].items()} for pool in sorted(balanced)}
    per_pool["total"] = {str(k): sum(per_pool[p][str(k)] for p in balanced) for k in (0, 1)}
    paper = None
    if layout.paper_count is not None:
        ours = {str(k): sum(per_pool[p][str(k)] for p in layout.paper_count_pools if p in balanced) for k in (0, 1)}
        paper = {
            "count": layout.paper_count,
            "pools": list(layout.paper_count_pools),
            "this_copy": ours,
            "differs": (not balance) or any(n != layout.paper_count for n in ours.values()),
        }
    return {"class_folder_counts": folder_counts, "balanced_counts": per_pool, "paper_balanced_count": paper}


def _log_counts(counts: Mapping, modality: str, layout: DatasetLayout) -> None:
    folders = "; ".join(
        f"{pool}: " + ", ".join(f"{name} {n}" for name, n in names.items())
        for pool, names in counts["class_folder_counts"].items()
    )
    pools = [p for p in counts["balanced_counts"] if p != "total"]
    total = counts["balanced_counts"]["total"]
    per_pool = " + ".join(f"{p} {counts['balanced_counts'][p]['0']}" for p in pools)
    logger.info(
        f"{modality} images per class folder: {folders}. Balanced, before any max_per_class cap: "
        f"{total['0']} {layout.class_names[0]} / {total['1']} {layout.class_names[1]} ({per_pool} per label)."
    )
    paper = counts["paper_balanced_count"]
    if paper is not None:
        ours = "/".join(str(paper["this_copy"][k]) for k in ("0", "1"))
        where = " + ".join(paper["pools"])
        if paper["differs"]:
            logger.warning(
                f"{modality}: this copy of {layout.title} gives {ours} images per class after balancing "
                f"({where} pool), the paper's table {paper['count']}/{paper['count']}: the copy differs from "
                "the original download (see docs/data.md, 'Class counts')."
            )
        else:
            logger.info(f"{modality}: {ours} images per class after balancing ({where} pool), as in the paper.")


def _split_caps(max_per_class: int | Mapping[str, int | None] | None) -> dict[str, int | None]:
    """``max_per_class`` as ``{split: cap or None}`` for every split, validated."""
    if isinstance(max_per_class, Mapping):
        unknown = sorted(set(max_per_class) - set(SPLITS))
        if unknown:
            raise UserInputError(f"max_per_class names unknown splits {unknown}; expected keys among {list(SPLITS)}.")
        caps = {s: max_per_class.get(s) for s in SPLITS}
    else:
        caps = {s: max_per_class for s in SPLITS}
    for split, cap in caps.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise UserInputError(f"max_per_class must be a positive int or None, got {cap!r} for split {split!r}.")
    return caps


def write_datalists(
    table: Mapping[str, Sequence[tuple[Path | str, int, str]]], output_dir: str | os.PathLike, info: Mapping
) -> Path:
    """
    Write the split file lists to ``output_dir``: ``splits.json`` (``info``, per-split counts and
    the datalists) and ``<split>.csv`` with columns ``image,label,source_class``. Files are
    replaced atomically. Returns the path of ``splits.json``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(info)
    doc["counts"] = {s: {str(k): sum(r[1] == k for r in table[s]) for k in (0, 1)} for s in table}
    for split, rows in table.items():
        doc[split] = [{"image": str(p), "label": int(k), "source_class": c} for p, k, c in rows]
        atomic_write_csv(
            out / f"{split}.csv", ("image", "label", "source_class"), [[str(p), int(k), c] for p, k, c in rows]
        )
    atomic_write_text(out / "splits.json", json.dumps(doc, indent=1) + "\n")
    return out / "splits.json"
