"""
Export a trained bundle run as a stand-alone bundle in MONAI's model-zoo layout.

A training run of ``bundles/<modality>/train.json`` leaves checkpoints, split lists and a run summary
in its output folder, and only this repository's configs can use them. :func:`export_bundle` writes
the run as a bundle that MONAI's own tools load (``monai.bundle run``, ``monai.bundle.load``,
``verify_net_in_out``, ``push_to_hf_hub``)::

    <dest>/configs/metadata.json    network_data_format, version, changelog, the run's settings,
                                    monai/torch/numpy versions, data set and its licence, demo_data
    <dest>/configs/inference.json   built from bundles/common/inference.json at export time, every
    <dest>/configs/evaluate.json    run-dependent setting replaced by the run's value, "bundle_root": "."
    <dest>/configs/logging.conf
    <dest>/models/model.pt          the network's state dict (``torch.load(..., weights_only=True)``)
    <dest>/models/model.ts          TorchScript (MONAI ``ckpt_export``), the same logits as model.pt
    <dest>/docs/README.md           data, classes, settings, clean and robust accuracy (and figure)
    <dest>/LICENSE

As in MONAI's model zoo, ``bundle_root`` is ``"."``: run the exported configs from the bundle folder,
or pass ``--bundle_root <dest>`` from anywhere else. The bundle is built in a temporary folder beside
``dest`` and renamed onto it, so ``dest`` is either complete or absent.

Usage::

    python -m monai_assim.bundle export <run_dir> <dest> [--zip] [--name NAME] [--checkpoint best|last]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.export_docs import (  # _eval_metrics, _robustness_meta: importable from here as before
    _class_names,
    _eval_metrics,  # noqa: F401
    _eval_results,
    _exported_checkpoint,
    _metadata,
    _readme,
    _robustness_meta,  # noqa: F401
)
from monai_assim.bundle.run_files import checkpoint_path, load_run_summary, recorded_setting
from monai_assim.bundle.run_setup import DEMO_NOTICE_FILE
from monai_assim.bundle.templates import bundles_dir
from monai_assim.data.layouts import get_layout
from monai_assim.errors import MissingInputError, UserInputError

__all__ = [
    "BUNDLES_DIR",
    "EXPORTED_CONFIGS",
    "bundle_file",
    "export_bundle",
    "export_overrides",
    "exported_config",
    "labelled_images",
]

#: the ``bundles`` folder (the repository's, or the package's copy in a wheel install): templates
#: (``common/``), per-modality metadata and licence.
BUNDLES_DIR = bundles_dir()
#: configs of ``bundles/common`` written into an exported bundle.
EXPORTED_CONFIGS = ("inference.json", "evaluate.json")
#: the exported bundle's version (the first release of a bundle).

#: where an exported config finds its weights.
MODEL_PATH_EXPR = "$monai_assim.bundle.bundle_file(@bundle_root, 'models', 'model.pt')"
#: expressions that read a training run's folder; none may be left in an exported config.
RUN_FOLDER_CALLS = (
    "run_setting",
    "run_class_names",
    "checkpoint_path",
    "load_datalist",
    "load_run_summary",
    "default_output_dir",
)
#: config id -> its value in an exported config, for every id where the templates read a setting of the
#: network or its preprocessing from the run folder (``run_setting(@x, @output_dir, 'x')``): the top-level
#: setting, which holds the run's value there (so ``--image_size`` etc. still reach it, as in the templates).
RUN_SETTING_IDS: dict[str, Any] = {
    "spatial_size": "$monai_assim.data.spatial_size(@image_size)",
    "network_def#backbone": "@backbone",
    "network_def#num_classes": "@num_classes",
    "network_def#variant": "@variant",
    "network_def#mean": "@mean",
    "network_def#std": "@std",
    "network_def#output_map": "@assimilation_map",
    "network_def#texture_features": "@texture_features",
    "network_def#texture_layers": "@texture_layers",
    "network_def#color_features": "@color_features",
}
#: config ids every exported config sets to a fixed value: no run folder, no repository path, the bundle's weights.
FIXED_IDS: dict[str, Any] = {
    "bundle_root": ".",
    "output_dir": ".",  # outputs under --output_dir, default: the working directory
    "ckpt_path": MODEL_PATH_EXPR,
    "dataset_dir": None,  # removed where nothing refers to it (inference)
}
#: config ids of one exported config, and their values: where its images and class names come from.
CONFIG_IDS: dict[str, dict[str, Any]] = {
    "inference.json": {
        "input": None,  # list_images(None) asks for --input
        "datalist": "$@prediction_saver.select_readable(monai_assim.bundle.list_images(@input))",
        "prediction_saver#class_names": "@class_names",
    },
    "evaluate.json": {"datalist": "$monai_assim.bundle.labelled_images(@dataset_dir, @modality)"},
}
#: top-level ids each exported config sets to the run's value (besides any other ``"auto"`` of the template).
RUN_VALUE_IDS: dict[str, tuple[str, ...]] = {
    "inference.json": ("modality", "image_size", "mean", "std", "backbone", "variant", "num_classes", "class_names"),
    "evaluate.json": ("modality", "image_size", "mean", "std", "backbone", "variant", "num_classes"),
}
#: top-level ids removed from an exported config when nothing refers to them any more ("checkpoint" once
#: ``ckpt_path`` is the bundle's model.pt, "split" of the run's lists, "dataset_dir" of inference).
UNUSED_IDS = ("checkpoint", "split", "dataset_dir")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def bundle_file(bundle_root: str | os.PathLike, *parts: str) -> str:
    """
    ``<bundle_root>/<parts...>``, which must exist: an exported config's ``bundle_root`` is ``"."`` (as in
    MONAI's model zoo), so from another folder the bundle's files are only found with ``--bundle_root``.
    """
    path = Path(bundle_root, *parts)
    if not path.is_file():
        raise MissingInputError(
            f"{path} not found (bundle_root {str(bundle_root)!r} = {Path(bundle_root).resolve()}).",
            "run from the exported bundle's folder or pass --bundle_root <bundle folder>.",
        )
    return str(path)


def labelled_images(dataset_dir: str | os.PathLike | None, modality: str) -> list[dict]:
    """
    Every image of a data set in ``modality``'s folder layout, as ``[{"image", "label"}, ...]`` (an
    exported ``evaluate.json`` evaluates all of them; the training run's split lists are not exported).
    """
    from monai_assim.data import discover_images

    layout = get_layout(modality)
    if dataset_dir is None:
        raise UserInputError(
            "no --dataset_dir given.", f"pass a labelled data set folder in the layout {layout.expected_layout()}."
        )
    found = discover_images(dataset_dir, modality)
    return [
        {"image": str(path), "label": int(layout.classes[name])}
        for classes in found.values()
        for name, paths in classes.items()
        for path in paths
    ]


def _check_self_contained(config: dict, name: str) -> None:
    from monai_assim.bundle.generate import PLACEHOLDER

    text = json.dumps(config)
    for call in RUN_FOLDER_CALLS:
        if call in text:
            raise RuntimeError(
                f"bundles/common/{name} still calls {call}() after export (it reads a training run folder); "
                "add the id that uses it to the overrides of monai_assim.bundle.export (RUN_SETTING_IDS, CONFIG_IDS)."
            )
    if "bundles/" in text or str(BUNDLES_DIR.parent) in text:
        raise RuntimeError(f"exported {name} still holds a path into the repository: {text[:200]}...")
    if PLACEHOLDER in text:
        raise RuntimeError(f"exported {name} still holds the template's placeholder {PLACEHOLDER}: {text[:200]}...")

    def walk(value: Any, where: str) -> None:
        if isinstance(value, str) and value.lower() == "auto":
            raise RuntimeError(f"exported {name}: {where} is still 'auto'; the run's value must replace it.")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}#{k}" if where else k)
        if isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}#{i}")

    walk(config, "")


def _run_value(summary: Mapping[str, Any], key: str) -> Any:
    """The run's value of the top-level setting ``key``: its class names and their number, or its recorded setting."""
    if key == "modality":
        return summary["modality"]
    if key == "class_names":
        return _class_names(summary)
    if key == "num_classes":
        return len(_class_names(summary))
    if key in ("image_size", "mean", "std", "backbone", "variant"):
        return summary["settings"][key]
    return recorded_setting(summary, key, summary["settings"].get(key, "auto"))


def export_overrides(name: str, summary: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """
    Config id -> value, everything the export sets in the template ``name`` (its top level ``template``)
    for the run of ``summary``: :data:`FIXED_IDS`, :data:`RUN_VALUE_IDS` and any other top-level ``"auto"``
    setting (the run's values), :data:`RUN_SETTING_IDS` and :data:`CONFIG_IDS`.
    """
    user_given = ("input", "dataset_dir", "class_names")  # "auto" in the templates, but not a run setting
    auto = [k for k, v in template.items() if k not in user_given and isinstance(v, str) and v.lower() == "auto"]
    overrides = {key: _run_value(summary, key) for key in (*auto, *RUN_VALUE_IDS[name])}
    return {**overrides, **FIXED_IDS, **RUN_SETTING_IDS, **CONFIG_IDS[name]}


def exported_config(
    name: str, summary: Mapping[str, Any], note: str = "", extra: Mapping[str, Any] | None = None
) -> dict:
    """
    The exported bundle's ``name`` config (``"inference.json"`` or ``"evaluate.json"``), built from the
    current template ``bundles/common/<name>`` with MONAI's config mechanism: the template is read by a
    :class:`monai.bundle.ConfigParser` and :func:`export_overrides` set at their config ids (``parser[id] = value``):
    the run's modality, ``bundle_root`` ``"."``, the run's resolved settings (image size, normalisation,
    backbone, variant, class count and names, sizes of T and C) as literal values, the ids that read them from
    the run folder referring to those values, the weights at ``<bundle_root>/models/model.pt``, outputs under
    ``--output_dir`` (default: the working directory), the images from ``--input`` (inference) or
    ``--dataset_dir`` (evaluate, every image of a labelled data set); ``extra``: further config id -> value,
    set the same way (the export's ``robustness#epoch``).

    Raises:
        RuntimeError: when the template lacks an id the export sets (renamed or moved), or the result still
            depends on a training run folder or the repository (a template gained a run-dependent id this
            function does not know yet).
    """
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    template = BUNDLES_DIR / "common" / name
    if not template.is_file():
        raise FileNotFoundError(
            f"config template {template} not found; export needs the monai_assim repository's bundles/ folder."
        )
    parser = ConfigParser(ConfigParser.load_config_file(template))
    overrides = {**export_overrides(name, summary, parser.get()), **(extra or {})}
    missing = [i for i in overrides if i not in parser]
    if missing:
        raise RuntimeError(
            f"bundles/common/{name} has no id {', '.join(map(repr, missing))}, which export sets (renamed or "
            "moved?); update the overrides of monai_assim.bundle.export (RUN_SETTING_IDS, CONFIG_IDS, FIXED_IDS)."
        )
    parser.update(overrides)
    config = parser.get()
    for key in UNUSED_IDS:
        if key in config and key not in ReferenceResolver.find_refs_in_config(_without(config, key), id=""):
            del config[key]
    _check_self_contained(config, name)
    dangling = [i for i in ReferenceResolver.find_refs_in_config(config, id="") if i not in parser]
    if dangling:
        raise RuntimeError(f"exported {name} refers to {', '.join(map(repr, dangling))}, which it lacks (renamed?).")
    return {"_exported_": note, **config} if note else config


def _without(config: dict, key: str) -> dict:
    return {k: v for k, v in config.items() if k != key}


def _load_state_dict(ckpt: str) -> dict:
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"cannot read the checkpoint {ckpt}: {e}") from e
    state = obj.get("network", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {ckpt} holds no network state dict (expected a 'network' entry).")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def _targets(dest: Path, name: str | None, zip: bool) -> tuple[Path, str]:
    """(the path written at the end, the bundle name)."""
    if zip:
        target = dest if dest.name.lower().endswith(".zip") else dest.with_name(dest.name + ".zip")
        name = name or target.name[: -len(".zip")]
    else:
        target, name = dest, name or dest.name
    if not _NAME.match(name):
        raise ValueError(f"bundle name {name!r} must be letters, digits, '_', '-' or '.'; pass --name.")
    if target.is_file() or target.is_symlink() or (target.is_dir() and any(target.iterdir())):
        raise FileExistsError(f"export destination {target} already exists and is not empty; choose a new path.")
    return target, name


def _write_models(bundle: Path, state: dict, ckpt: str, size: int) -> None:
    """``models/model.pt`` and the traced ``models/model.ts``, checked against the exported network definition."""
    from monai.bundle import ConfigParser, ckpt_export

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {ckpt} does not fit the run's network settings: {e}") from e
    torch.save(state, bundle / "models" / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        use_trace=True,
        input_shape=[1, 1, size, size],
    )
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scripted = torch.jit.load(str(bundle / "models" / "model.ts"), map_location="cpu").eval()
        if not torch.allclose(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5):
            raise RuntimeError("the TorchScript export gives other logits than the network; export aborted.")


def _pack(bundle: Path, tmp: Path, target: Path, zip: bool) -> None:
    """Move the written bundle onto ``target``: a zip archive, or the folder (atomic rename)."""
    if zip:
        part = target.with_name(f".{target.name}.part")
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(bundle.rglob("*")):
                archive.write(path, path.relative_to(tmp).as_posix())
        os.replace(part, target)
    else:
        os.rename(bundle, target)  # onto an absent or empty folder: atomic


def export_bundle(
    run_dir: str | os.PathLike,
    dest: str | os.PathLike,
    name: str | None = None,
    zip: bool = False,
    checkpoint: str = "best",
) -> Path:
    """
    Write the training run in ``run_dir`` as a bundle in MONAI's model-zoo layout (see the module docstring).

    Args:
        run_dir: output folder of a ``train.json`` run (``run_summary.json``, ``checkpoints/``).
        dest: the bundle folder to write; it must not exist or be empty. With ``zip``, the archive
            (``dest`` itself when it ends in ``.zip``, else ``<dest>.zip``), which unpacks to ``<name>/``.
        name: the bundle's name (``monai.bundle.load(name, bundle_dir=...)``); default: ``dest``'s
            folder name (without ``.zip``).
        zip: write a zip archive instead of a folder.
        checkpoint: ``"best"`` (the epoch the run's selection rule kept), ``"last"``, ``"best_clean"`` /
            ``"best_robust"`` (the other rule's choice, where the run saved it) or a checkpoint file of the run;
            the README and metadata say which, its epoch and how it was chosen.

    Returns:
        the written folder or archive.

    Raises:
        FileNotFoundError: ``run_dir`` holds no run summary or no such checkpoint (nothing is written).
        FileExistsError: the destination exists and is not empty (nothing is written).
    """
    run_dir = Path(run_dir).expanduser().resolve()
    target, name = _targets(Path(dest).expanduser().absolute(), name, zip)
    try:
        summary = load_run_summary(run_dir)
        ckpt = checkpoint_path(run_dir, checkpoint)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"cannot export {run_dir}: {e}") from e
    if summary.get("modality") is None or "settings" not in summary:
        raise ValueError(f"{run_dir}/run_summary.json lacks 'modality' or 'settings'; is it a bundle training run?")
    if not summary.get("demo_data") and (run_dir / DEMO_NOTICE_FILE).is_file():
        summary = {**summary, "demo_data": True}
    state = _load_state_dict(ckpt)
    results = _eval_results(run_dir)
    exported = _exported_checkpoint(summary, checkpoint, ckpt)
    meta = _metadata(summary, run_dir, name, results, exported)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    note = (
        f"exported by `python -m monai_assim.bundle export` on {stamp} from the run '{run_dir.name}'; "
        "run from the bundle folder or pass --bundle_root <bundle folder>"
    )
    # models/model.pt is a bare state dict: the evaluation records the exported checkpoint's epoch as given here
    extra = {"evaluate.json": {"robustness#epoch": exported["epoch"]}}
    configs = {c: exported_config(c, summary, note, extra.get(c)) for c in EXPORTED_CONFIGS}

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        bundle = tmp / name if zip else tmp / "bundle"
        for sub in ("configs", "models", "docs"):
            (bundle / sub).mkdir(parents=True)
        for c, config in configs.items():
            (bundle / "configs" / c).write_text(json.dumps(config, indent=4) + "\n")
        (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
        shutil.copyfile(BUNDLES_DIR / "common" / "logging.conf", bundle / "configs" / "logging.conf")
        shutil.copyfile(BUNDLES_DIR / summary["modality"] / "LICENSE", bundle / "LICENSE")
        if results.get("figure") is not None:
            shutil.copyfile(results["figure"], bundle / "docs" / "robustness.png")
        (bundle / "docs" / "README.md").write_text(_readme(meta, name, results))

        _write_models(bundle, state, ckpt, int(summary["settings"]["image_size"]))

        _pack(bundle, tmp, target, zip)
    except BaseException:
        for leftover in (target.with_name(f".{target.name}.part"),):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
