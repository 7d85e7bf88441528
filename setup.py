"""Build hook: ship the repository's ``bundles/`` in the wheel as ``monai_assim/_bundles`` (package data).

Everything else about the build is in ``pyproject.toml``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: what a bundle folder holds that the package needs (configs, metadata, licence, docs); runs and data are left out.
_TEMPLATE_FILES = ("*.json", "*.conf", "LICENSE", "README.md")


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies the bundle templates into the built package (not for editable installs)."""

    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "bundles"
        if getattr(self, "editable_mode", False) or not source.is_dir():
            return  # an editable install reads the repository's bundles/ directly
        target = Path(self.build_lib) / "monai_assim" / "_bundles"
        for bundle in sorted(p for p in source.iterdir() if p.is_dir()):
            for pattern in _TEMPLATE_FILES:
                for f in sorted(bundle.glob(pattern)):
                    dest = target / bundle.name / f.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dest)


setup(cmdclass={"build_py": BuildPyWithBundles})
