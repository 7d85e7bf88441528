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

from monai_assim.bundle.run_files import checkpoint_path, load_run_summary, recorded_setting
from monai_assim.bundle.run_setup import DEMO_NOTICE_FILE
from monai_assim.bundle.templates import bundles_dir
from monai_assim.data.layouts import get_layout
from monai_assim.errors import MissingInputError, UserInputError

__all__ = ["BUNDLES_DIR", "EXPORTED_CONFIGS", "bundle_file", "export_bundle", "exported_config", "labelled_images"]

#: the ``bundles`` folder (the repository's, or the package's copy in a wheel install): templates
#: (``common/``), per-modality metadata and licence.
BUNDLES_DIR = bundles_dir()
#: configs of ``bundles/common`` written into an exported bundle.
EXPORTED_CONFIGS = ("inference.json", "evaluate.json")
#: the exported bundle's version (the first release of a bundle).
EXPORT_VERSION = "0.1.0"

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
_RUN_SETTING = re.compile(r"monai_assim\.bundle\.run_setting\(\s*@(\w+)\s*,\s*@output_dir\s*,\s*['\"]\w+['\"]\s*\)")
_RUN_CLASS_NAMES = re.compile(r"monai_assim\.bundle\.run_class_names\(\s*@(\w+)\s*,\s*@output_dir\s*\)")
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


def _class_names(summary: Mapping[str, Any]) -> list[str]:
    """The class names the run recorded (its layout's for a summary that lacks them)."""
    return list(summary.get("class_names") or get_layout(summary["modality"]).class_names)


def _resolve_run_settings(value: Any) -> Any:
    """
    ``value`` with every ``run_setting(@key, @output_dir, 'key')`` and ``run_class_names(@key, @output_dir)``
    call replaced by ``@key``.
    """
    if isinstance(value, str):
        new = _RUN_CLASS_NAMES.sub(r"@\1", _RUN_SETTING.sub(r"@\1", value))
        if re.fullmatch(r"\$@[\w#]+", new):  # "$@mean" -> "@mean"
            new = new[1:]
        return new
    if isinstance(value, list):
        return [_resolve_run_settings(v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_run_settings(v) for k, v in value.items()}
    return value


def _references(config: Any, key: str) -> bool:
    return re.search(rf"@{re.escape(key)}\b", json.dumps(config)) is not None


def _check_self_contained(config: dict, name: str) -> None:
    text = json.dumps(config)
    for call in RUN_FOLDER_CALLS:
        if call in text:
            raise RuntimeError(
                f"bundles/common/{name} still calls {call}() after export (it reads a training run folder); "
                "add the key that uses it to the overrides of monai_assim.bundle.export.exported_config."
            )
    if "bundles/" in text or str(BUNDLES_DIR.parent) in text:
        raise RuntimeError(f"exported {name} still holds a path into the repository: {text[:200]}...")

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


def exported_config(name: str, summary: Mapping[str, Any], note: str = "") -> dict:
    """
    The exported bundle's ``name`` config (``"inference.json"`` or ``"evaluate.json"``), built from the
    current template ``bundles/common/<name>``: ``MODALITY`` replaced by the run's modality, ``bundle_root``
    ``"."``, the run's resolved settings (image size, normalisation, backbone, variant, class count and
    names, sizes of T and C) as literal values, the weights at ``<bundle_root>/models/model.pt``, and the keys that pointed into the
    run folder replaced: outputs under ``--output_dir`` (default: the working directory), the images
    from ``--input`` (inference) or ``--dataset_dir`` (evaluate, every image of a labelled data set).

    Raises:
        RuntimeError: when the result still depends on a training run folder or the repository (a
            template gained a run-dependent key this function does not know yet).
    """
    from monai_assim.bundle.generate import PLACEHOLDER

    template = BUNDLES_DIR / "common" / name
    if not template.is_file():
        raise FileNotFoundError(
            f"config template {template} not found; export needs the monai_assim repository's bundles/ folder."
        )
    modality = summary["modality"]
    config = json.loads(template.read_text().replace(PLACEHOLDER, modality))
    settings = summary["settings"]
    class_names = _class_names(summary)

    overrides: dict[str, Any] = {"bundle_root": ".", "output_dir": "."}
    for key in ("image_size", "mean", "std", "backbone", "variant"):
        overrides[key] = settings[key]
    special = ("input", "dataset_dir", "class_names")
    for key, value in config.items():  # any other setting the template leaves to the run
        if key not in special and isinstance(value, str) and value.lower() == "auto":
            overrides[key] = recorded_setting(summary, key, settings.get(key, "auto"))
    if "class_names" in config:
        overrides["class_names"] = class_names
    if "num_classes" in config:
        overrides["num_classes"] = len(class_names)
    for key in ("ckpt_path", "checkpoint_path"):
        if key in config:
            overrides[key] = MODEL_PATH_EXPR
    if "input" in config:
        overrides["input"] = None  # list_images(None) asks for --input
    if "dataset_dir" in config:
        overrides["dataset_dir"] = None
    if "datalist" in config:
        if name == "evaluate.json":
            overrides["datalist"] = "$monai_assim.bundle.labelled_images(@dataset_dir, @modality)"
        else:
            overrides["datalist"] = re.sub(
                r"list_images\(@input, @output_dir\)", "list_images(@input)", config["datalist"]
            )
    config.update({k: v for k, v in overrides.items() if k in config or k in ("bundle_root",)})
    config = _resolve_run_settings(config)
    # keys left without a use ("checkpoint" once ckpt_path is the bundle's model.pt, "split" of the run's lists)
    for key in ("checkpoint", "split", "dataset_dir"):
        if key in config and not _references({k: v for k, v in config.items() if k != key}, key):
            del config[key]
    _check_self_contained(config, name)
    return {"_exported_": note, **config} if note else config


def _source_metadata(modality: str) -> dict:
    path = BUNDLES_DIR / modality / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; export needs the monai_assim repository's bundles/ folder.")
    return json.loads(path.read_text())


def _licence(data_source: str) -> str:
    match = re.search(r"\bCC[ -]?(?:BY(?:-[A-Z]{2})*|0)[ -]?\d\.\d", data_source)
    return match.group(0) if match else "see data_source"


def _eval_results(run_dir: Path) -> dict[str, Any]:
    """Clean and robust accuracy from ``<run_dir>/eval/robustness.json``; ``{}`` without an evaluation."""
    path = run_dir / "eval" / "robustness.json"
    if not path.is_file():
        return {}
    from monai_assim.robustness.results import load_robustness_rows

    rows = load_robustness_rows(str(path))
    clean = [r for r in rows if r.get("role") == "clean"]
    doc = json.loads(path.read_text())
    return {
        "headline": doc.get("headline") or {},
        "single_class": bool(doc.get("single_class")),
        "clean_accuracy": clean[0]["accuracy"] if clean else None,
        "n": clean[0].get("n") if clean else None,
        "rows": [r for r in rows if r.get("role") != "clean"],
        "figure": (run_dir / "eval" / "robustness.png") if (run_dir / "eval" / "robustness.png").is_file() else None,
    }


def _eval_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """
    Flat numeric figures a user chooses a model by: ``accuracy`` (clean) and ``worst_case_accuracy_eps<k>``
    (the per-image worst case over the evaluation's attacks at ``k``/255; the headline with an ensemble).
    """
    if results.get("clean_accuracy") is None:
        return {}
    out = {"accuracy": float(results["clean_accuracy"])}
    for r in results.get("rows", []):
        if r.get("role") == "worst":
            out[f"worst_case_accuracy_eps{float(r['eps_255']):g}"] = float(r["accuracy"])
    return out


def _robustness_meta(summary: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """The threat model, the attacks and budget behind ``eval_metrics``, and how the weights were chosen."""
    headline = dict(results.get("headline") or {})
    grid = headline.get("grid_attacks") or sorted(
        {str(r["attack"]) for r in results.get("rows", []) if r.get("role") == "attack" and r.get("attack")}
    )
    return {
        "threat_model": "L-inf perturbations of the grey input in [0, 1] pixel space, eps in units of 1/255, "
        "attacks through the whole network (texture and colour modules, normalisation, backbone)",
        "worst_case": headline.get("description")
        or "per image, the worst case over the attacks of the evaluation (no strong ensemble was run)",
        "attack_budget": headline.get("budget"),
        "upper_bound": bool(headline.get("upper_bound", not headline)),
        "single_class": bool(results.get("single_class")),
        "attacks": {"grid": grid or None, "ensemble": headline.get("ensemble")} if results else None,
        "selection": (summary.get("selection") or {}).get("rule"),
    }


def _exported_checkpoint(summary: Mapping[str, Any], checkpoint: str, path: str) -> dict[str, Any]:
    """
    Which checkpoint ``models/model.pt`` is, its epoch, how the run chose it, and the run's validation
    metrics at that epoch (from the summary's per-epoch records).
    """
    selection = summary.get("selection") or {}
    clean_rule = "the epoch with the highest clean validation accuracy (val_acc)"
    robust = selection.get("robust_validation") or {}
    rules = {
        "best": selection.get("rule", clean_rule),
        "best_clean": clean_rule,
        "best_robust": (
            f"the epoch with the highest robust validation accuracy (val_robust_acc, {robust.get('description')}), "
            "ties broken by val_acc; single-class epochs ranked last"
        ),
        "last": "the last epoch of training",
    }
    try:
        epoch = torch.load(path, map_location="cpu", weights_only=True).get("epoch")
    except Exception:  # noqa: BLE001 (the state dict was read already; the epoch is informative only)
        epoch = None
    record = next((e for e in summary.get("epochs") or [] if e.get("epoch") == epoch), None)
    validation = (
        {k: record[k] for k in ("val_acc", "val_robust_acc", "val_pred_classes") if k in record} if record else {}
    )
    return {
        "checkpoint": f"{checkpoint}.pt" if checkpoint in rules else Path(path).name,
        "epoch": epoch,
        "chosen_by": rules.get(checkpoint, "a checkpoint file named at export"),
        "validation": validation,
    }


def _metadata(
    summary: Mapping[str, Any], run_dir: Path, name: str, results: Mapping[str, Any], exported: Mapping[str, Any]
) -> dict:
    import monai
    import numpy

    import monai_assim

    modality = summary["modality"]
    meta = _source_metadata(modality)
    demo = bool(summary.get("demo_data", False))
    settings = summary["settings"]
    class_names = _class_names(summary)
    size = int(settings["image_size"])
    data_source = meta.get("data_source", "")
    meta.update(
        {
            "version": EXPORT_VERSION,
            "changelog": {
                EXPORT_VERSION: f"exported by monai_assim {monai_assim.__version__} from the training run "
                f"'{run_dir.name}' ({settings['variant']} {settings['backbone']}, "
                f"{summary.get('epochs_completed', '?')} epochs{', DEMO DATA' if demo else ''})"
            },
            "monai_version": monai.__version__,
            "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": numpy.__version__,
            "bundle_name": name,
            "demo_data": demo,
            "dataset": summary.get("dataset", get_layout(modality).title),
            "dataset_licence": _licence(data_source),
            "training": {
                "modality": modality,
                "settings": dict(settings),
                "seed": summary.get("seed"),
                "val_fraction": summary.get("val_fraction"),
                "test_fraction": summary.get("test_fraction"),
                "epochs_completed": summary.get("epochs_completed"),
                "best_metric_name": summary.get("best_metric_name"),
                "best_metric": summary.get("best_metric"),
                "best_epoch": summary.get("best_epoch"),
                "selection": summary.get("selection"),
                "exported_checkpoint": dict(exported),
                "versions": summary.get("versions", {}),
            },
            "eval_metrics": _eval_metrics(results),
            "robustness": _robustness_meta(summary, results),
        }
    )
    meta.setdefault("required_packages_version", {})["monai_assim"] = monai_assim.__version__
    if demo:
        meta["data_source"] = (
            "SYNTHETIC DEMO DATA generated by monai_assim (no real images): this network is NOT a model of "
            f"{meta['dataset']}; it only shows that the pipeline runs"
        )
        meta["dataset_licence"] = "n/a (synthetic demo data)"
        meta["description"] = "DEMO DATA: trained on a synthetic demo set, not for any use. " + meta.get(
            "description", ""
        )
    fmt = meta["network_data_format"]
    fmt["inputs"]["image"]["spatial_shape"] = [size, size]
    # the network returns logits (the configs' postprocessing applies the softmax)
    fmt["outputs"]["pred"]["type"] = "logits"
    fmt["outputs"]["pred"]["num_channels"] = len(class_names)
    fmt["outputs"]["pred"]["channel_def"] = {str(i): c for i, c in enumerate(class_names)}
    meta["image_classes"] = f"single channel grey image, intensity scaled to [0, 1], resized to {size} x {size}"
    return meta


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def _checkpoint_lines(exported: Mapping[str, Any]) -> list[str]:
    """The README's paragraph on which checkpoint the bundle holds and how it was chosen."""
    if not exported:
        return []
    validation = ", ".join(f"{k} {_fmt(v)}" for k, v in (exported.get("validation") or {}).items())
    return [
        f"**The weights** (`models/model.pt`) are the run's `{exported.get('checkpoint')}`, epoch "
        f"{_fmt(exported.get('epoch'))}: {exported.get('chosen_by')}."
        + (f" Validation at that epoch: {validation}." if validation else ""),
        "",
    ]


def _accuracy_lines(meta: Mapping[str, Any], results: Mapping[str, Any]) -> list[str]:
    """The README's accuracy section after its title: clean, worst case, single class, the table, the figure."""
    lines: list[str] = []
    if results:
        n = results.get("n")
        lines += [
            f"Clean accuracy on the run's test split: {_fmt(results.get('clean_accuracy'))} "
            f"({'n/a' if n is None else int(n)} images). Robust accuracy under attack (`configs/evaluate.json`):",
            "",
        ]
        robustness = meta.get("robustness") or {}
        lines += [
            f"The worst case (rows `worst`): {robustness.get('worst_case')}"
            + (f" ({robustness.get('attack_budget')} attack budget)." if robustness.get("attack_budget") else ".")
            + (" These figures are UPPER BOUNDS of the robust accuracy." if robustness.get("upper_bound") else ""),
            "",
        ]
        if results.get("single_class"):
            lines += [
                "> **SINGLE CLASS.** This network predicts one class for every test image: its accuracies below, "
                "clean and under attack, equal the class share. It has collapsed; they are not robustness.",
                "",
            ]
        if results["rows"]:
            lines += ["| attack | role | eps (x/255) | accuracy |", "| --- | --- | --- | --- |"]
            lines += [
                f"| {r.get('attack')} | {r.get('role')} | {_fmt(r.get('eps_255'), 2)} | {_fmt(r.get('accuracy'))} |"
                for r in results["rows"]
            ]
            lines.append("")
        if results.get("figure") is not None:
            lines += ["![robust accuracy against the attack budget](robustness.png)", ""]
    else:
        lines += ["The run was not evaluated (no `eval/robustness.json`); run `configs/evaluate.json`.", ""]
    return lines


def _use_lines(name: str) -> list[str]:
    """The README's "Use" section."""
    return [
        "## Use",
        "",
        "Needs `pip install monai_assim` (with MONAI, torchvision, ignite, torchattacks, fire). As in MONAI's model",
        'zoo, the configs have `"bundle_root": "."`: run them from this folder, or pass `--bundle_root`.',
        "",
        "```bash",
        "# predictions.csv (softmax probabilities) under ./inference/ (or --output_dir)",
        "python -m monai.bundle run --config_file configs/inference.json --input <folder or image>",
        f"python -m monai.bundle run --config_file {name}/configs/inference.json --bundle_root {name} --input <folder>",
        "# clean and adversarial accuracy on a labelled data set in the original folder layout, under ./eval/",
        "python -m monai.bundle run --config_file configs/evaluate.json --dataset_dir <data set folder>",
        "python -m monai.bundle verify_net_in_out network_def --config_file configs/inference.json "
        "--meta_file configs/metadata.json",
        "```",
        "",
        "```python",
        "import monai",
        f'net = monai.bundle.load("{name}", bundle_dir="<folder holding {name}>", workflow_type="inference")',
        "# load finds <bundle_dir>/<name>/models/model.pt and does not download; workflow_type='inference'",
        "# builds network_def from configs/inference.json (the default 'train' returns the state dict)",
        "```",
        "",
        "`models/model.ts` is the TorchScript module (`torch.jit.load`), `models/model.pt` the state dict.",
        "Research use only; not for diagnosis.",
        "",
    ]


def _readme(meta: Mapping[str, Any], name: str, results: Mapping[str, Any]) -> str:
    training = meta["training"]
    settings = training["settings"]
    demo = meta["demo_data"]
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    size = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    lines = [f"# {name}: {meta.get('task', 'classification')}", ""]
    if demo:
        lines += [
            "> **DEMO DATA.** This network was trained on a synthetic demo set generated by monai_assim, not",
            f"> on {meta['dataset']}. It only shows that the pipeline runs; its predictions mean nothing.",
            "",
        ]
    lines += [
        meta.get("description", ""),
        "",
        f"This network: variant `{settings.get('variant')}`, backbone `{settings.get('backbone')}`, "
        f"start weights `{settings.get('pretrained')}` (the description above is the bundle family's).",
        "",
        f"Exported by `python -m monai_assim.bundle export` (bundle version {meta['version']}).",
        "",
        "## Data",
        "",
        f"- Data set: {meta['dataset']}{' (NOT used: synthetic demo data)' if demo else ''}",
        f"- Source: {meta.get('data_source', 'n/a')}",
        f"- Licence of the data: {meta['dataset_licence']}. The data are not part of this bundle.",
        f"- Classes: {', '.join(f'{k} = {v}' for k, v in channels.items())} (softmax of the 2 logits `pred`)",
        f"- Input: one grey channel on [0, 1], {size[0]} x {size[1]} pixels (the configs load and resize the images)",
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {_fmt(v)} |" for k, v in settings.items()],
        f"| seed | {_fmt(training.get('seed'))} |",
        f"| epochs completed | {_fmt(training.get('epochs_completed'))} |",
        f"| best {training.get('best_metric_name') or 'metric'} | {_fmt(training.get('best_metric'))} "
        f"(epoch {_fmt(training.get('best_epoch'))}) |",
        "",
        *_checkpoint_lines(training.get("exported_checkpoint") or {}),
        "## Accuracy",
        "",
    ]
    lines += _accuracy_lines(meta, results)
    lines += _use_lines(name)
    return "\n".join(lines)


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
    meta = _metadata(summary, run_dir, name, results, _exported_checkpoint(summary, checkpoint, ckpt))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    note = (
        f"exported by `python -m monai_assim.bundle export` on {stamp} from the run '{run_dir.name}'; "
        "run from the bundle folder or pass --bundle_root <bundle folder>"
    )
    configs = {c: exported_config(c, summary, note) for c in EXPORTED_CONFIGS}

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
