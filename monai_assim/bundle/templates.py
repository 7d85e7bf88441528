"""
Where the bundle templates are: ``bundles/`` (shared ``common/`` configs, per-modality metadata, licence).

A wheel ships them as package data in ``monai_assim/_bundles`` (``setup.py`` copies the repository's
``bundles/`` there at build time); a source checkout or an editable install uses the repository's
``bundles/`` next to the package.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGED_BUNDLES", "bundles_dir"]

#: the folder inside the installed package that holds the templates of a wheel install.
PACKAGED_BUNDLES = "_bundles"


def bundles_dir() -> Path:
    """The ``bundles`` folder: the package's copy when installed from a wheel, else the repository's."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / PACKAGED_BUNDLES
    if (packaged / "common").is_dir():
        return packaged
    return package.parent / "bundles"
