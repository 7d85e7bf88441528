"""
The documentation and metadata of an exported bundle: ``configs/metadata.json`` (the source metadata of
``bundles/<modality>/`` completed with the run's settings, versions, checkpoint, data licence, evaluation
figures and threat model) and ``docs/README.md`` (data, classes, settings, checkpoint, clean and robust
accuracy, use). :mod:`monai_assim.bundle.export` writes both into the bundle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_assim.bundle.run_files import checkpoint_epoch
from monai_assim.bundle.templates import bundles_dir
from monai_assim.data.layouts import get_layout

__all__ = ["EXPORT_VERSION"]

#: the exported bundle's version (the first release of a bundle).
EXPORT_VERSION = "0.1.0"


def _class_names(summary: Mapping[str, Any]) -> list[str]:
    """The class names the run recorded (its layout's for a summary that lacks them)."""
    return list(summary.get("class_names") or get_layout(summary["modality"]).class_names)


def _source_metadata(modality: str) -> dict:
    path = bundles_dir() / modality / "metadata.json"
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
    epoch = checkpoint_epoch(path)
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
    """``configs/metadata.json``: the modality's source metadata with the run's settings, versions and results."""
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
    """``docs/README.md``: data, classes, training settings, the checkpoint, accuracy and use."""
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
