"""
Folder layouts and class groupings of the four public data sets used by Chen & Luo (PAKDD 2024).

Every data set is reduced to a binary task, label 0 for the negative group and 1 for the positive
(diseased / malignant) group:

============================  ====================================  ===============================
modality                      folders                               label 0 / label 1
============================  ====================================  ===============================
``chest_xray`` (Kermany)      ``{train,test,val}/{NORMAL,PNEUMONIA}``  NORMAL / PNEUMONIA
``brain_mri`` (Nickparvar)    ``{Training,Testing}/{glioma,``        notumor / glioma, meningioma,
                              ``meningioma,notumor,pituitary}``      pituitary
``chest_ct`` (IQ-OTH/NCCD)    ``{Bengin,Malignant,Normal} cases``    Normal + Bengin / Malignant
``breast_ultrasound`` (BUSI)  ``{benign,malignant,normal}``          normal + benign / malignant
============================  ====================================  ===============================

The table :data:`LAYOUTS` is the single place where these facts live; discovery, validation,
balancing and splitting (:mod:`monai_assim.data.splits`) and the synthetic demo sets
(:mod:`monai_assim.data.synthetic`) read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from monai_assim.errors import UserInputError

__all__ = ["IMAGE_SUFFIXES", "DatasetLayout", "LAYOUTS", "MODALITIES", "get_layout"]

#: file name endings read as images (compared case-insensitively); 2D DICOM and NIfTI are accepted
#: wherever PNG/JPEG are, although none of the four public sets ships them.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz")


@dataclass(frozen=True)
class DatasetLayout:
    """
    Where the images of one public data set lie and how its classes map to the binary labels.

    Args:
        modality: short name used throughout the package and the bundles, e.g. ``"chest_xray"``.
        title: the data set's name, for messages and documentation.
        pools: source pool -> folders (relative to the data set root, ``""`` for the root itself)
            whose class folders are pooled. The pool ``"train"`` always exists; a pool ``"test"``
            exists where the data set has its own test split, which is then used as the test split.
        optional_folders: folders of ``pools`` that may be absent (Kermany's tiny ``val/``).
        classes: class folder name -> binary label.
        class_names: names of label 0 and label 1.
        folder_aliases: class folder name -> other accepted spellings.
        suffix: the file type the public data set uses (the synthetic demo sets write it).
        mask_marker: a file whose name (without suffix) contains this marker is a segmentation
            mask, not an image, and is ignored (BUSI's ``*_mask*.png``); ``None`` for no masks.
        lesions: class folder name -> what its images show: ``None`` (no lesion), ``"smooth"`` (a
            benign, near-elliptic nodule or mass) or ``"irregular"`` (a tumour, malignant mass or
            pneumonia: lobulated / spiculated); the synthetic demo sets draw it.
        paper_count: images per class after balancing in the paper's table (Chen & Luo, PAKDD 2024),
            counted over ``paper_count_pools``; ``None`` if unknown.
        paper_count_pools: the source pools the paper's count covers.
    """

    modality: str
    title: str
    pools: Mapping[str, tuple[str, ...]]
    classes: Mapping[str, int]
    class_names: tuple[str, str]
    suffix: str
    optional_folders: tuple[str, ...] = ()
    folder_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mask_marker: str | None = None
    lesions: Mapping[str, str | None] = field(default_factory=dict)
    paper_count: int | None = None
    paper_count_pools: tuple[str, ...] = ("train",)

    @property
    def has_test_split(self) -> bool:
        """Whether the data set comes with its own test split."""
        return "test" in self.pools

    def expected_layout(self) -> str:
        """One-line description of the expected folder layout, for error messages."""
        class_part = "{" + ",".join(self.classes) + "}"
        parts = []
        for folders in self.pools.values():
            for folder in folders:
                prefix = f"{folder}/" if folder else ""
                optional = " (optional)" if folder in self.optional_folders else ""
                parts.append(f"{prefix}{class_part}/*{self.suffix}{optional}")
        return f"{self.title}: " + " and ".join(parts)


def _freeze(layout: DatasetLayout) -> DatasetLayout:
    object.__setattr__(layout, "pools", MappingProxyType(dict(layout.pools)))
    object.__setattr__(layout, "classes", MappingProxyType(dict(layout.classes)))
    object.__setattr__(layout, "folder_aliases", MappingProxyType(dict(layout.folder_aliases)))
    object.__setattr__(layout, "lesions", MappingProxyType(dict(layout.lesions)))
    if set(layout.lesions) != set(layout.classes):
        raise ValueError(f"{layout.modality}: lesions must name every class folder {list(layout.classes)}.")
    return layout


#: modality -> layout of its public data set.
LAYOUTS: Mapping[str, DatasetLayout] = MappingProxyType(
    {
        layout.modality: _freeze(layout)
        for layout in (
            DatasetLayout(
                modality="chest_xray",
                title="Kermany chest X-ray (pneumonia)",
                pools={"train": ("train", "val"), "test": ("test",)},
                optional_folders=("val",),
                classes={"NORMAL": 0, "PNEUMONIA": 1},
                class_names=("normal", "pneumonia"),
                suffix=".jpeg",
                lesions={"NORMAL": None, "PNEUMONIA": "irregular"},
                paper_count=1583,
                paper_count_pools=("train", "test"),
            ),
            DatasetLayout(
                modality="brain_mri",
                title="Brain Tumor MRI Dataset (Nickparvar)",
                pools={"train": ("Training",), "test": ("Testing",)},
                classes={"glioma": 1, "meningioma": 1, "notumor": 0, "pituitary": 1},
                class_names=("no tumour", "tumour"),
                suffix=".jpg",
                lesions={"glioma": "irregular", "meningioma": "irregular", "notumor": None, "pituitary": "irregular"},
                paper_count=1595,
            ),
            DatasetLayout(
                modality="chest_ct",
                title="IQ-OTH/NCCD lung cancer CT",
                pools={"train": ("",)},
                classes={"Bengin cases": 0, "Malignant cases": 1, "Normal cases": 0},
                class_names=("normal or benign", "malignant"),
                folder_aliases={"Bengin cases": ("Benign cases",)},
                suffix=".jpg",
                lesions={"Bengin cases": "smooth", "Malignant cases": "irregular", "Normal cases": None},
                paper_count=536,
            ),
            DatasetLayout(
                modality="breast_ultrasound",
                title="Breast Ultrasound Images (BUSI)",
                pools={"train": ("",)},
                classes={"benign": 0, "malignant": 1, "normal": 0},
                class_names=("normal or benign", "malignant"),
                suffix=".png",
                mask_marker="_mask",
                lesions={"benign": "smooth", "malignant": "irregular", "normal": None},
                paper_count=210,
            ),
        )
    }
)

#: the modalities with a known layout.
MODALITIES = tuple(LAYOUTS)


def get_layout(modality: str) -> DatasetLayout:
    """The :class:`DatasetLayout` of ``modality``; ``ValueError`` naming the known ones otherwise."""
    if not isinstance(modality, str):
        raise TypeError(f"modality must be a str, got {type(modality).__name__}.")
    if modality not in LAYOUTS:
        raise UserInputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}.")
    return LAYOUTS[modality]
