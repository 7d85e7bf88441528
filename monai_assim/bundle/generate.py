"""
Write the four modality bundles' configs from the shared templates in ``bundles/common``.

MONAI resolves a ``%file.json#id`` macro relative to the working directory, not to the config file
or ``bundle_root``, so a per-modality config that pulled a shared base in with a macro would only run
from one folder. Instead the shared configs live once in ``bundles/common/`` with the placeholder
``MODALITY``, and this module writes each bundle's self-contained copy (the placeholder replaced by the
modality name). ``train.json`` also gets every training setting of
:data:`monai_assim.bundle.settings.SETTINGS`: a top-level ``"auto"`` (``mean``/``std``: ``null``), which
the command line overrides, and its reference in ``run_setup.settings``. Every generated file says where it comes from; ``--check`` reports copies that differ
from their template (the test suite runs it), so the four bundles cannot drift apart.

Usage (from the repository root)::

    python -m monai_assim.bundle.generate            # rewrite bundles/<modality>/*.json
    python -m monai_assim.bundle.generate --check    # exit 1 if any generated file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_assim.bundle.settings import SETTINGS
from monai_assim.data.layouts import MODALITIES

__all__ = ["PLACEHOLDER", "TEMPLATES", "render", "generate", "with_settings"]

#: the text replaced by the modality name in the templates.
PLACEHOLDER = "MODALITY"
#: template files of ``bundles/common`` copied into every bundle.
TEMPLATES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf")


def render(template: str, name: str, modality: str) -> str:
    """The text of ``bundles/<modality>/<name>`` for the template text ``template`` of ``name``."""
    note = f"generated from bundles/common/{name} by `python -m monai_assim.bundle.generate`; edit the template"
    text = template.replace(PLACEHOLDER, modality)
    if name.endswith(".json"):
        config = json.loads(text)
        if name == "train.json":
            config = with_settings(config)
        config = {"_generated_": note, **config}
        return json.dumps(config, indent=4) + "\n"
    return f"# {note}\n{text}"


def _insert_after(config: dict, key: str, items: dict) -> dict:
    """``config`` with ``items`` right after ``key`` (at the end without it); keys already there stay as they are."""
    items = {k: v for k, v in items.items() if k not in config}
    out: dict = {}
    for k, v in config.items():
        out[k] = v
        if k == key:
            out.update(items)
    return out if key in config else {**out, **items}


def with_settings(config: dict) -> dict:
    """A training config with its settings written in from the table: the top-level values and ``run_setup.settings``."""
    top = {s.name: None if s.unset_none else "auto" for s in SETTINGS}
    config = _insert_after(config, "dataset_dir", top)
    run_setup = _insert_after(
        config["run_setup"], "dataset_dir", {"settings": {s.name: f"@{s.name}" for s in SETTINGS}}
    )
    return {**config, "run_setup": run_setup}


def generate(bundles_dir: str | Path = "bundles", check: bool = False) -> list[Path]:
    """
    Write (or, with ``check``, only compare) every bundle's copy of every template.

    Returns:
        the files that were stale (rewritten, or reported with ``check``).
    """
    bundles_dir = Path(bundles_dir)
    common = bundles_dir / "common"
    if not common.is_dir():
        raise ValueError(f"{common} not found; run from the repository root or pass --bundles_dir.")
    stale = []
    for name in TEMPLATES:
        template = (common / name).read_text()
        for modality in MODALITIES:
            target = bundles_dir / modality / name
            text = render(template, name, modality)
            if target.is_file() and target.read_text() == text:
                continue
            stale.append(target)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles_dir", default="bundles", help="the bundles folder (default: ./bundles)")
    parser.add_argument("--check", action="store_true", help="only report stale generated files")
    args = parser.parse_args(argv)
    stale = generate(args.bundles_dir, check=args.check)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
