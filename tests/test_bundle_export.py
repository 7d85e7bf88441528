"""
``python -m monai_assim.bundle export``: a trained run written as a bundle in MONAI's model-zoo layout,
run and loaded with MONAI's own tools from elsewhere (folder and zip), demo runs labelled, refusals that
write nothing.

One tiny chest_ct run (trained, evaluated and applied once in-process, module-scoped) serves every test.
"""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from helpers.bundle_runs import PYTHON, REPO, TINY_EVAL_KW, TINY_KW, run_in_process, run_ok, tiny_dataset

from monai_assim.bundle import export_bundle, labelled_images, list_images
from monai_assim.bundle.export import bundle_file, exported_config
from monai_assim.networks import AssimilationNet

MODALITY = "chest_ct"
BACKBONE = {"backbone": "resnet18"}
#: files of MONAI's model-zoo layout that every export writes.
LAYOUT = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/logging.conf",
    "models/model.pt",
    "models/model.ts",
    "docs/README.md",
    "LICENSE",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """
    A tiny chest_ct run, trained, evaluated and applied to its data. ResNet18, since an untrained or briefly
    trained MobileNetV2 gives the same logits for every 32 px image, which would hide a wrong preprocessing.
    """
    root = tmp_path_factory.mktemp("export_run")
    data, out = tiny_dataset(root, MODALITY), root / "run"
    run_in_process(f"{MODALITY}/train.json", dataset_dir=str(data), output_dir=str(out), **{**TINY_KW, **BACKBONE})
    run_in_process(f"{MODALITY}/evaluate.json", output_dir=str(out), **{**TINY_EVAL_KW, **BACKBONE})
    run_in_process(f"{MODALITY}/inference.json", output_dir=str(out), input=str(data), **BACKBONE)
    probs = list(_predictions(out / "inference" / "predictions.csv").values())
    assert len({tuple(p) for p in probs}) > 1, "the run's network gives every image the same output"
    return {"root": root, "data": data, "out": out, "predictions": out / "inference" / "predictions.csv"}


@pytest.fixture(scope="module")
def exported(run) -> Path:
    """The run exported as the folder ``<root>/exports/ct_model``."""
    dest = export_bundle(run["out"], run["root"] / "exports" / "ct_model")
    assert dest == run["root"] / "exports" / "ct_model"
    return dest


def _predictions(path: Path) -> dict[str, list[float]]:
    """image path -> the numbers of its row in a predictions.csv (header and text columns ignored)."""
    preds = {}
    for row in csv.reader(open(path)):
        image = next((c for c in row if "/" in c), None)
        values = []
        for cell in row:
            try:
                values.append(float(cell))
            except ValueError:
                pass
        if image is not None and values:
            preds[image] = values
    assert preds, f"no predictions in {path}"
    return preds


def _assert_same_predictions(got: Path, expected: Path) -> None:
    a, b = _predictions(got), _predictions(expected)
    assert sorted(a) == sorted(b)
    for image in a:
        torch.testing.assert_close(torch.tensor(a[image]), torch.tensor(b[image]), rtol=1e-5, atol=1e-6)


def _source_network(run) -> torch.nn.Module:
    net = AssimilationNet("resnet18", num_classes=2, pretrained="none").eval()
    net.load_state_dict(torch.load(run["out"] / "checkpoints" / "best.pt", weights_only=True)["network"])
    return net


def _assert_loads_trained_network(run, name: str, bundle_dir: Path) -> None:
    """``monai.bundle.load`` (offline: the files are there) gives the trained network, and model.ts its logits."""
    import monai

    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    net = monai.bundle.load(name, bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu")
    assert isinstance(net, AssimilationNet)
    ts, meta, _ = monai.bundle.load(name, bundle_dir=str(bundle_dir), load_ts_module=True, device="cpu")
    with torch.no_grad():
        expected = _source_network(run)(x)
        torch.testing.assert_close(net.eval()(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ts.eval()(x), expected, rtol=1e-4, atol=1e-5)
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]


def _no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_export_layout_metadata_readme(run, exported):
    """Model-zoo layout; metadata with the run's settings, versions, data set and licence; README with results."""
    import monai
    import numpy

    for f in LAYOUT:
        assert (exported / f).is_file(), f
    assert _no_temporary_files(exported.parent)
    summary = json.loads((run["out"] / "run_summary.json").read_text())
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "task", "description", "authors", "copyright", "required_packages_version"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    assert (meta["monai_version"], meta["numpy_version"]) == (monai.__version__, numpy.__version__)
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["training"]["settings"] == summary["settings"] and meta["training"]["seed"] == summary["seed"]
    assert meta["dataset"] == "IQ-OTH/NCCD lung cancer CT" and meta["dataset_licence"] == "CC BY 4.0"
    assert meta["demo_data"] is False
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == [32, 32] and fmt["inputs"]["image"]["num_channels"] == 1
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "normal or benign", "1": "malignant"}
    clean = [
        r for r in json.loads((run["out"] / "eval" / "robustness.json").read_text())["rows"] if r["role"] == "clean"
    ]
    assert meta["eval_metrics"]["accuracy"] == pytest.approx(clean[0]["accuracy"])
    # the run's evaluation had no ensemble: the metadata says its worst case is an upper bound
    assert meta["robustness"]["upper_bound"] is True and meta["robustness"]["attack_budget"] is None
    assert (
        "L-inf" in meta["robustness"]["threat_model"]
        and meta["robustness"]["selection"] == summary["selection"]["rule"]
    )
    # how the exported weights were chosen
    assert meta["training"]["selection"] == summary["selection"] and summary["selection"]["select_by"] == "clean"
    chosen = meta["training"]["exported_checkpoint"]
    assert chosen["checkpoint"] == "best.pt" and chosen["epoch"] == summary["best_epoch"]
    assert chosen["chosen_by"] == summary["selection"]["rule"] and "val_acc" in chosen["validation"]

    # the weights: a plain state dict, loadable with weights_only, equal to the run's best checkpoint
    state = torch.load(exported / "models" / "model.pt", weights_only=True)
    source = torch.load(run["out"] / "checkpoints" / "best.pt", weights_only=True)["network"]
    assert state.keys() == source.keys() and all(torch.equal(state[k], source[k]) for k in state)

    # self-contained configs: bundle_root ".", the run's settings as values, no path into the repo or the run
    for name in ("inference.json", "evaluate.json"):
        text = (exported / "configs" / name).read_text()
        config = json.loads(text)
        assert config["bundle_root"] == "." and config["image_size"] == 32 and config["backbone"] == "resnet18"
        assert config["modality"] == MODALITY and "MODALITY" not in text
        for forbidden in (str(REPO), "bundles/", str(run["out"]), "run_setting", '"auto"'):
            assert forbidden not in text, (name, forbidden)

    readme = (exported / "docs" / "README.md").read_text()
    assert "IQ-OTH/NCCD" in readme and "CC BY 4.0" in readme and "malignant" in readme
    assert "| backbone | resnet18 |" in readme and f"{clean[0]['accuracy']:.4f}" in readme
    assert "This network: variant `assimilated`, backbone `resnet18`, start weights `none`" in readme
    assert "| FGSM | attack |" in readme and "DEMO DATA" not in readme
    assert (
        f"are the run's `best.pt`, epoch {summary['best_epoch']}: the epoch with the highest clean validation "
        "accuracy (val_acc)." in readme
    )
    assert (exported / "docs" / "robustness.png").read_bytes() == (run["out"] / "eval" / "robustness.png").read_bytes()
    assert "Apache License" in (exported / "LICENSE").read_text()


@pytest.mark.slow
def test_exported_inference_from_another_folder(run, exported, tmp_path):
    """`monai.bundle run --config_file <dest>/configs/inference.json --bundle_root <dest> --input` = the run's predictions."""
    cmd = [PYTHON, "-m", "monai.bundle", "run", "--config_file", str(exported / "configs" / "inference.json")]
    run_ok([*cmd, "--bundle_root", str(exported), "--input", str(run["data"])], cwd=tmp_path)
    _assert_same_predictions(tmp_path / "inference" / "predictions.csv", run["predictions"])


def test_exported_config_errors_are_clear(tmp_path, monkeypatch):
    """Without --input or outside the bundle folder without --bundle_root: errors that say what to pass."""
    with pytest.raises(ValueError, match="pass --input"):
        list_images(None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        bundle_file(".", "models", "model.pt")
    with pytest.raises(ValueError, match="--dataset_dir"):
        labelled_images(None, MODALITY)


def test_load_returns_the_trained_network(run, exported):
    """`monai.bundle.load(<name>, bundle_dir=<parent>)`: the network with the trained weights (and model.ts)."""
    _assert_loads_trained_network(run, exported.name, exported.parent)


@pytest.mark.slow
def test_verify_net_in_out(exported):
    """`python -m monai.bundle verify_net_in_out` passes on the exported bundle (network_data_format)."""
    c = exported / "configs"
    cmd = [PYTHON, "-m", "monai.bundle", "verify_net_in_out", "network_def"]
    out = run_ok([*cmd, "--config_file", str(c / "inference.json"), "--meta_file", str(c / "metadata.json")])
    assert "verified with no error" in out


@pytest.mark.slow
def test_zip_unpacked_elsewhere(run, tmp_path, capsys, monkeypatch):
    """`export --zip --name`: an archive that unpacks to <name>/; predictions and load work from there.
    In-process (``main`` of ``python -m monai_assim.bundle``, and the exported inference.json as the
    ``ConfigWorkflow`` that ``monai.bundle run`` drives); the commands themselves run in test_wheel_install.py and
    test_exported_inference_from_another_folder."""
    from monai.bundle import ConfigWorkflow

    from monai_assim.bundle.__main__ import main

    assert main(["export", str(run["out"]), str(tmp_path / "ct"), "--zip", "--name", "ct_zip"]) == 0
    out = capsys.readouterr().out
    archive = tmp_path / "ct.zip"
    assert f"-> {archive}" in out and not (tmp_path / "ct").exists() and _no_temporary_files(tmp_path)
    unpacked = tmp_path / "elsewhere"
    zipfile.ZipFile(archive).extractall(unpacked)
    for f in LAYOUT:
        assert (unpacked / "ct_zip" / f).is_file(), f
    # run from the bundle's own folder: bundle_root "." as in the model zoo
    bundle = unpacked / "ct_zip"
    monkeypatch.chdir(bundle)
    workflow = ConfigWorkflow(
        config_file="configs/inference.json", logging_file=False, workflow_type="infer", input=str(run["data"])
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    _assert_same_predictions(bundle / "inference" / "predictions.csv", run["predictions"])
    _assert_loads_trained_network(run, "ct_zip", unpacked)


@pytest.mark.slow
def test_exported_evaluate_on_a_labelled_folder(run, exported, tmp_path):
    """The exported evaluate.json evaluates every image of a data set folder (--dataset_dir), outputs in ./eval."""
    cmd = [PYTHON, "-m", "monai.bundle", "run", "--config_file", str(exported / "configs" / "evaluate.json")]
    args = [
        "--bundle_root",
        str(exported),
        "--dataset_dir",
        str(run["data"]),
        "--attacks",
        "['FGSM']",
        "--eps",
        "[0.03]",
        "--attack_budget",
        "none",  # the exported config's wiring is under test, not the strong ensemble (94 s of the suite)
    ]
    run_ok([*cmd, *args, "--check_eps", "$None"], cwd=tmp_path)
    # model.pt holds no epoch: the config holds the exported checkpoint's, and the results record it
    epoch = json.loads((exported / "configs" / "evaluate.json").read_text())["robustness"]["epoch"]
    assert (
        epoch
        == json.loads((exported / "configs" / "metadata.json").read_text())["training"]["exported_checkpoint"]["epoch"]
    )
    assert json.loads((tmp_path / "eval" / "robustness.json").read_text())["epoch"] == epoch
    rows = json.loads((tmp_path / "eval" / "robustness.json").read_text())["rows"]
    n_images = len(list(run["data"].rglob("*.jpg")))
    assert [int(r["n"]) for r in rows if r["role"] == "clean"] == [n_images]


def test_demo_run_says_so(run, tmp_path):
    """An export of a demo-data run says so in metadata.json (demo_data, data_source) and in the README."""
    demo = tmp_path / "demo_run"
    shutil.copytree(run["out"], demo, ignore=shutil.ignore_patterns("tensorboard", "inference"))
    summary = json.loads((demo / "run_summary.json").read_text())
    (demo / "run_summary.json").write_text(json.dumps({**summary, "demo_data": True}))
    dest = export_bundle(demo, tmp_path / "demo_model")
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    assert meta["demo_data"] is True and "SYNTHETIC DEMO DATA" in meta["data_source"]
    assert "DEMO DATA" in meta["changelog"][meta["version"]]
    readme = (dest / "docs" / "README.md").read_text()
    assert "> **DEMO DATA.** This network was trained on a synthetic demo set" in readme.split("\n## Data")[0]
    assert "(NOT used: synthetic demo data)" in readme


def test_single_class_run_says_so(run, tmp_path):
    """A run whose evaluation found a single predicted class says so in metadata.json and the README."""
    for flag in (True, False):
        copy = tmp_path / f"run_{flag}"
        shutil.copytree(run["out"], copy, ignore=shutil.ignore_patterns("tensorboard", "inference"))
        doc = json.loads((copy / "eval" / "robustness.json").read_text())
        (copy / "eval" / "robustness.json").write_text(json.dumps({**doc, "single_class": flag}))
        dest = export_bundle(copy, tmp_path / f"model_{flag}")
        meta = json.loads((dest / "configs" / "metadata.json").read_text())
        assert meta["robustness"]["single_class"] is flag
        assert ("> **SINGLE CLASS.**" in (dest / "docs" / "README.md").read_text()) is flag


def test_refusals_write_nothing(run, tmp_path, monkeypatch):
    """No checkpoint, a non-empty destination, a failure half-way: a clear error and nothing written."""
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(run["out"], no_ckpt, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    with pytest.raises(FileNotFoundError, match=r"cannot export .*best\.pt not found"):
        export_bundle(no_ckpt, tmp_path / "out" / "model")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="cannot export"):
        export_bundle(tmp_path / "missing_run", tmp_path / "model")

    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_bundle(run["out"], full)
    assert [p.name for p in full.iterdir()] == ["notes.txt"]
    (tmp_path / "taken.zip").write_text("old")
    with pytest.raises(FileExistsError, match="taken.zip"):
        export_bundle(run["out"], tmp_path / "taken", zip=True)
    assert (tmp_path / "taken.zip").read_text() == "old"

    # a failure after the bundle was half built (TorchScript export) leaves no destination and no temporary files
    import monai.bundle

    def fail(**kwargs):
        raise RuntimeError("boom while exporting TorchScript")

    monkeypatch.setattr(monai.bundle, "ckpt_export", fail)
    (tmp_path / "half").mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        export_bundle(run["out"], tmp_path / "half" / "model")
    assert list((tmp_path / "half").iterdir()) == []

    # an empty destination folder is fine (it is replaced by the bundle)
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    dest = export_bundle(run["out"], tmp_path / "empty")
    assert (dest / "models" / "model.ts").is_file()


def test_exported_configs_follow_the_templates(run):
    """The current templates with the run's values put in (other keys untouched), for any run settings."""
    summary = json.loads((run["out"] / "run_summary.json").read_text())
    other = {"backbone": "densenet121", "variant": "vanilla", "image_size": 48, "mean": 0.25, "std": 0.5}
    summary["settings"].update(other)
    for name in ("inference.json", "evaluate.json"):
        template = json.loads((REPO / "bundles" / "common" / name).read_text().replace("MODALITY", MODALITY))
        config = exported_config(name, summary)
        for key in ("batch_size", "postprocessing", "evaluator", "run", "imports"):
            assert config[key] == template[key], key
        assert len(config["handlers"]) == len(template["handlers"])
        assert config["ckpt_path"] == "$monai_assim.bundle.bundle_file(@bundle_root, 'models', 'model.pt')"
        assert {k: config[k] for k in other} == other and config["bundle_root"] == "."
        assert config["network_def"]["mean"] == "@mean" and "48" not in json.dumps(template)


def test_cli_usage_errors(tmp_path, capsys):
    """`python -m monai_assim.bundle export` on a folder without a run: exit 2, the message, nothing written."""
    from monai_assim.bundle.__main__ import main

    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "dest")]) == 2
    assert "error: cannot export" in capsys.readouterr().err and not (tmp_path / "dest").exists()


def test_exported_checkpoint_of_a_robust_selected_run(tmp_path):
    """The metadata's ``exported_checkpoint`` names the file, its epoch, the rule and that epoch's validation."""
    from monai_assim.bundle.export import _exported_checkpoint

    rule = "the epoch with the highest robust validation accuracy (val_robust_acc, PGD-10 at 2/255 ...)"
    summary = {
        "selection": {"select_by": "robust", "rule": rule, "robust_validation": {"description": "PGD-10 at 2/255"}},
        "epochs": [{"epoch": 5, "val_acc": 0.95, "val_robust_acc": 0.55, "val_pred_classes": 2, "val_select": 0.55}],
    }
    torch.save({"network": {}, "epoch": 5}, tmp_path / "best.pt")
    torch.save({"network": {}, "epoch": 2}, tmp_path / "best_clean.pt")
    best = _exported_checkpoint(summary, "best", str(tmp_path / "best.pt"))
    assert best == {
        "checkpoint": "best.pt",
        "epoch": 5,
        "chosen_by": rule,
        "validation": {"val_acc": 0.95, "val_robust_acc": 0.55, "val_pred_classes": 2},
    }
    other = _exported_checkpoint(summary, "best_clean", str(tmp_path / "best_clean.pt"))
    assert other["epoch"] == 2 and "clean validation accuracy" in other["chosen_by"] and other["validation"] == {}


def test_exported_metadata_names_the_headline(tmp_path):
    """eval_metrics: clean and worst-case accuracy per eps as flat numbers; robustness: members and budget."""
    from monai_assim.bundle.export import _eval_metrics, _robustness_meta

    headline = {"budget": "standard", "upper_bound": False, "description": "per image, the worst case over ...",
                "grid_attacks": {"PGD": {}}, "ensemble": {"APGD": {"loss": "ce", "steps": 100, "n_restarts": 2}}}  # fmt: skip
    rows = [{"role": "attack", "attack": "PGD", "eps_255": 2.0, "accuracy": 0.6},
            {"role": "worst", "attack": "worst", "eps_255": 2.0, "accuracy": 0.4},
            {"role": "worst", "attack": "worst", "eps_255": 0.5, "accuracy": 0.7}]  # fmt: skip
    results = {"clean_accuracy": 0.9, "rows": rows, "headline": headline}
    assert _eval_metrics(results) == {
        "accuracy": 0.9,
        "worst_case_accuracy_eps2": 0.4,
        "worst_case_accuracy_eps0.5": 0.7,
    }
    meta = _robustness_meta({"selection": {"rule": "the robust rule"}}, results)
    assert meta["attack_budget"] == "standard" and meta["upper_bound"] is False
    assert meta["attacks"]["ensemble"]["APGD"]["steps"] == 100 and meta["selection"] == "the robust rule"


def test_exported_metadata_types_logits_and_names_the_attacks(tmp_path):
    """
    The exported output is typed as the logits the network returns, eval_metrics holds the
    worst case per eps as flat numbers, and "robustness" names threat model, attacks and selection rule, also
    for an evaluation without the strong ensemble.
    """
    from monai_assim.bundle.export import _metadata

    summary = {
        "modality": MODALITY,
        "settings": {"variant": "assimilated", "backbone": "resnet18", "image_size": 32},
        "selection": {"rule": "the clean rule"},
    }
    rows = [{"role": "attack", "attack": "FGSM", "eps_255": 2.0, "accuracy": 0.6},
            {"role": "attack", "attack": "PGD", "eps_255": 2.0, "accuracy": 0.5},
            {"role": "worst", "attack": "worst", "eps_255": 2.0, "accuracy": 0.4}]  # fmt: skip
    results = {"clean_accuracy": 0.9, "n": 10, "rows": rows, "headline": {}}
    meta = _metadata(summary, tmp_path, "m", results, {})
    assert meta["network_data_format"]["outputs"]["pred"]["type"] == "logits"
    assert meta["eval_metrics"] == {"accuracy": 0.9, "worst_case_accuracy_eps2": 0.4}
    robustness = meta["robustness"]
    assert "L-inf" in robustness["threat_model"] and robustness["selection"] == "the clean rule"
    assert robustness["attacks"] == {"grid": ["FGSM", "PGD"], "ensemble": None} and robustness["upper_bound"] is True


def test_export_takes_the_network_from_the_run(tmp_path):
    """The exported configs hold the run's variant, backbone, class count and T/C sizes as values."""
    summary = {
        "modality": "chest_xray",
        "class_names": ["normal", "pneumonia"],
        "settings": {"variant": "assimilated", "backbone": "mobilenet_v2", "image_size": 32, "mean": None,
                     "std": None, "texture_features": 4, "texture_layers": 2, "color_features": 8},
    }  # fmt: skip
    for name in ("inference.json", "evaluate.json"):
        config = exported_config(name, summary)
        got = {k: config[k] for k in ("variant", "backbone", "num_classes", "texture_features", "texture_layers")}
        assert got == {"variant": "assimilated", "backbone": "mobilenet_v2", "num_classes": 2,
                       "texture_features": 4, "texture_layers": 2}  # fmt: skip
        assert config["network_def"]["texture_features"] == "@texture_features"
    # a summary written before the T/C sizes were recorded: the sizes those runs used
    del summary["settings"]["texture_features"]
    assert exported_config("inference.json", summary)["texture_features"] == 8


#: a run summary as a training run writes it, for the tests that build configs without a run.
_SUMMARY = {
    "modality": "chest_xray",
    "class_names": ["normal", "pneumonia"],
    "settings": {"variant": "assimilated", "backbone": "mobilenet_v2", "image_size": 32, "mean": None,
                 "std": None, "texture_features": 4, "texture_layers": 2, "color_features": 8},
}  # fmt: skip


def _ids_calling(value, calls: tuple[str, ...], where: str = "") -> set[str]:
    """The ids (``a#b#0``) of every string in ``value`` that calls one of ``calls``."""
    if isinstance(value, str):
        return {where} if any(f"{c}(" in value for c in calls) else set()
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return set().union(set(), *(_ids_calling(v, calls, f"{where}#{k}" if where else str(k)) for k, v in items))


@pytest.mark.parametrize("name", ["inference.json", "evaluate.json"])
def test_export_overrides_every_id_that_reads_the_run(name):
    """
    The export sets (through MONAI's ConfigParser, by config id) every id where the template reads the run
    folder; the exported config calls none of run_setting / run_class_names / ..., and holds the values set.
    """
    from monai.bundle import ConfigParser

    from monai_assim.bundle.export import RUN_FOLDER_CALLS, UNUSED_IDS, export_overrides

    template = json.loads((REPO / "bundles" / "common" / name).read_text())
    overrides = export_overrides(name, _SUMMARY, template)
    reading = _ids_calling(template, ("run_setting", "run_class_names"))
    assert reading and reading <= set(overrides), reading - set(overrides)
    config = exported_config(name, _SUMMARY)
    assert _ids_calling(config, RUN_FOLDER_CALLS) == set()
    exported = ConfigParser(config)
    for i, value in overrides.items():
        if i not in UNUSED_IDS or i in config:
            assert exported[i] == value, i
    assert exported["network_def#mean"] == "@mean" and config["backbone"] == "mobilenet_v2"


def _template_copy(tmp_path, monkeypatch, name: str, edit) -> None:
    """bundles/common copied to ``tmp_path`` with ``edit`` applied to the config ``name``, and export reading it."""
    from monai_assim.bundle import export

    common = tmp_path / "bundles" / "common"
    shutil.copytree(REPO / "bundles" / "common", common)
    config = json.loads((common / name).read_text())
    edit(config)
    (common / name).write_text(json.dumps(config, indent=4))
    monkeypatch.setattr(export, "BUNDLES_DIR", tmp_path / "bundles")


def _rename_mean(config):
    config["network_def"]["mean_value"] = config["network_def"].pop("mean")


def _new_run_setting(config):
    config["network_def"]["dropout"] = "$monai_assim.bundle.run_setting(@dropout, @output_dir, 'dropout')"


def _rename_class_names(config):
    config["prediction_saver"]["names"] = config["prediction_saver"].pop("class_names")


def _rename_assimilation_map(config):
    config["output_map"] = config.pop("assimilation_map")
    config["network_def"]["output_map"] = "$monai_assim.bundle.run_setting(@output_map, @output_dir, 'output_map')"


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("inference.json", _rename_mean, r"no id 'network_def#mean'.*renamed"),
        ("evaluate.json", _rename_mean, r"no id 'network_def#mean'.*renamed"),
        ("inference.json", _rename_class_names, r"no id 'prediction_saver#class_names'"),
        ("inference.json", _new_run_setting, r"still calls run_setting\(\)"),
        ("evaluate.json", _rename_assimilation_map, r"output_map is still 'auto'"),
    ],
)
def test_export_refuses_a_template_it_does_not_know(tmp_path, monkeypatch, name, edit, message):
    """A template id the export sets renamed, or a new id that reads the run folder: a clear error, no config."""
    _template_copy(tmp_path, monkeypatch, name, edit)
    with pytest.raises(RuntimeError, match=message):
        exported_config(name, _SUMMARY)
    # the setting renamed in the training run as well (the run records it): the export's reference is left dangling
    summary = {**_SUMMARY, "settings": {**_SUMMARY["settings"], "output_map": "clamp"}}
    if edit is _rename_assimilation_map:
        with pytest.raises(RuntimeError, match=r"refers to 'assimilation_map', which it lacks"):
            exported_config(name, summary)
