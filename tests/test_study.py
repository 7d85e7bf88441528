"""The study command end to end on a tiny synthetic set, its table against the per-run result files, and
the tables' note on the headline robust accuracy."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from monai_assim.study import COMPARISON_COLUMNS, DEFAULT_ARMS, compare_results, main, plot_examples
from monai_assim.visualize import load_robustness_rows


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    attacks = {"FGSM": {}, "PGD": {"steps": 2}, "Square": {"n_queries": 3}}
    rc = main(
        [
            "--bundle",
            "chest_xray",
            "--output_dir",
            str(out),
            "--backbone",
            "mobilenet_v2",
            "--pretrained",
            "none",
            "--image_size",
            "32",
            "--epochs",
            "1",
            "--batch_size",
            "4",
            "--train_per_class",
            "4",
            "--val_per_class",
            "2",
            "--test_per_class",
            "3",
            "--attacks",
            json.dumps(attacks),
            "--eps_255",
            "2,8",
            "--attack_eps_255",
            '{"Square": [8]}',
            "--n_examples",
            "2",
            "--prune",
            "--attack_budget",
            "none",
        ]
    )
    assert rc == 0
    return out


@pytest.mark.slow
def test_study_outputs_and_columns(study_dir):
    names = list(DEFAULT_ARMS)
    for f in ("comparison.csv", "comparison.md", "robustness.png", "examples.png", "study.json"):
        assert (study_dir / f).is_file(), f
    for png in ("robustness.png", "examples.png"):
        with Image.open(study_dir / png) as im:
            im.verify()
    with open(study_dir / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    expected = [c for c in COMPARISON_COLUMNS if "<name>" not in c]
    expected += [c.replace("<name>", n) for c in COMPARISON_COLUMNS if "<name>" in c for n in names]
    assert set(rows[0]) == set(expected)
    # the demo set is flagged in every run, and checkpoints were pruned
    doc = json.loads((study_dir / "study.json").read_text())
    assert set(doc["runs"]) == set(names)
    for n in names:
        assert doc["runs"][n]["demo_data"] is True
        assert (study_dir / "runs" / n / "DEMO_DATA.txt").is_file()
        assert not (study_dir / "runs" / n / "checkpoints").exists()
    assert doc["runs"]["alpha1"]["settings"]["alpha"] == 1.0
    assert doc["runs"]["assimilated"]["settings"]["alpha"] < 1.0
    assert doc["runs"]["vanilla"]["settings"]["variant"] == "vanilla"
    # every attack x eps, the clean row and the large-eps check
    attacks = {(r["attack"], float(r["eps_255"]), r["role"]) for r in rows}
    assert attacks == {("clean", 0.0, "clean"), ("PGD", 64.0, "check"), ("Square", 8.0, "attack")} | {
        (a, e, "attack") for a in ("FGSM", "PGD") for e in (2.0, 8.0)
    }


@pytest.mark.slow
def test_study_table_equals_result_files(study_dir):
    with open(study_dir / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    for name in DEFAULT_ARMS:
        per_run = load_robustness_rows(str(study_dir / "runs" / name / "eval" / "robustness.csv"))
        assert len(per_run) == len(table)
        for a, b in zip(table, per_run):
            assert (a["attack"], float(a["eps"])) == (b["attack"], float(b["eps"]))
            assert int(a["n"]) == int(b["n"]) == 6
            assert float(a[f"{name}_accuracy"]) == pytest.approx(float(b["accuracy"]), abs=1e-12)
    for row in table:
        delta = float(row["assimilated_accuracy"]) - float(row["vanilla_accuracy"])
        assert float(row["delta_accuracy"]) == pytest.approx(delta, abs=1e-12)
    md, runs = (study_dir / "comparison.md").read_text().split("\nRuns: ")
    assert md.count("\n| ") == len(table) + 1  # header + one line per row
    assert runs.count("\n| ") == len(DEFAULT_ARMS) + 1  # the "Runs" section: header + one line per arm


def test_compare_results_checks_runs():
    a = [
        {"attack": "clean", "eps": 0.0, "role": "clean", "n": 4, "accuracy": 1.0, "success_rate": 0.0},
        {"attack": "PGD", "eps": 2 / 255, "role": "attack", "n": 4, "accuracy": 0.5, "success_rate": 0.5},
    ]
    b = [dict(r, accuracy=r["accuracy"] / 2) for r in a]
    rows = compare_results({"vanilla": a, "assimilated": b})
    assert [r["delta_accuracy"] for r in rows] == [-0.5, -0.25]
    with pytest.raises(ValueError, match="no result for attack PGD"):
        compare_results({"vanilla": a, "assimilated": a[:1]})
    with pytest.raises(ValueError, match="n=3"):
        compare_results({"vanilla": a, "assimilated": [dict(r, n=3) for r in a]})


def test_plot_examples(tmp_path):
    from monai_assim.networks import AssimilationNet

    net = AssimilationNet(backbone="mobilenet_v2", num_classes=2, pretrained=None).eval()
    path = plot_examples(torch.rand(3, 1, 32, 32), {"assimilated": net}, tmp_path / "ex.png", ["a", "b", "c"])
    with Image.open(path) as im:
        assert im.size[0] > 0 and im.size[1] > 0
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    # the noise images are drawn: much of the figure is mid-grey (a blank figure has only background, frames and text)
    grey = pixels.mean(axis=2)
    assert ((grey > 30) & (grey < 225)).mean() > 0.2
    assert (pixels.min(axis=2) < 240).mean() > 0.2
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        plot_examples(torch.rand(3, 3, 32, 32), {"assimilated": net}, tmp_path / "bad.png")


def test_study_tables_name_the_headline(tmp_path):
    from monai_assim.study import _headline_note, write_aggregate, write_comparison

    headline = {"budget": "quick", "upper_bound": True, "description": "per image, the worst case over X"}
    note = _headline_note(headline)
    assert note == (
        "Worst case (quick attack budget): per image, the worst case over X. These are UPPER BOUNDS (the quick budget)."
        " No convergence check."
    )
    checked = _headline_note({**headline, "convergence_check": {"APGD": {"loss": "ce", "steps": 200}}})
    assert checked.endswith(" Convergence check on what it left: APGD-CE 200 steps.")
    row = {"arm": "vanilla", "attack": "worst", "eps_255": 2.0, "role": "worst", "n_seeds": 1, "n_images": 4,
           "mean": 0.5, "std": None, "min": 0.5, "max": 0.5}  # fmt: skip
    _, md = write_aggregate([row], {}, tmp_path, "title", note)
    assert note in md.read_text()
    _, md = write_comparison(
        [{"attack": "worst", "eps_255": 2.0, "n": 4, "vanilla_accuracy": 0.5}], tmp_path, "t", note
    )
    assert note in md.read_text() and _headline_note({}) == ""
