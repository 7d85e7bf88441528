"""
The study's issue-32 machinery without training: the clean-selected checkpoint of an adversarial arm as its
own row (same training, evaluated once, resumable, paired with the robust-selected row), per-arm epochs,
the pairs of the paired tables, training time, T/C saturation and the single-class flag in the tables.
Bundle runs are replaced by a fake that writes the files a run writes.
"""

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers.study_jobs import planned_jobs

from monai_assim.networks import ColorModule, TextureModule
from monai_assim.stats import PER_IMAGE_COLUMNS
from monai_assim.study import StudyOptions, main, paired_comparisons, plan_study, run_job, run_study
from monai_assim.study.plan import CLEAN_SELECTION
from monai_assim.study.report import training_time

AT_ARMS = ["vanilla", "vanilla_pgdat", "assimilated_pgdat"]


# ------------------------------------------------------------------------------------------ planning
def test_clean_selection_adds_an_evaluation_only_row_per_adversarial_arm(tmp_path):
    arms = ["vanilla", "vanilla_pgdat", "assimilated", "assimilated_n_fgsm"]
    plan = plan_study(StudyOptions(output_dir=tmp_path, arms=arms, seeds=[0, 1], clean_selection=True))
    assert plan.rows == [
        "vanilla",
        "vanilla_pgdat",
        "vanilla_pgdat_cleansel",
        "assimilated",
        "assimilated_n_fgsm",
        "assimilated_n_fgsm_cleansel",
    ]
    # no second training: one job per (seed, arm); the adversarial ones carry the extra evaluation
    assert [(s["seed"], s["arm"]) for s in plan.specs] == [(s, a) for s in (0, 1) for a in arms]
    for spec in plan.specs:
        if spec["arm"] in ("vanilla", "assimilated"):
            assert "evaluations" not in spec
            continue
        (extra,) = spec["evaluations"]
        run_dir = Path(spec["run_dir"])
        assert extra["row"] == spec["arm"] + CLEAN_SELECTION and extra["checkpoint"] == "best_clean"
        assert Path(extra["eval_dir"]) == run_dir / "eval_best_clean" == plan.eval_dir(spec["seed"], extra["row"])
        # the same evaluation as the arm's own row, of the other checkpoint, into its own folder
        override = dict(extra["eval_override"])
        assert override.pop("checkpoint") == "best_clean" and override.pop("eval_dir") == extra["eval_dir"]
        assert override == spec["eval_override"] and "checkpoint" not in spec["eval_override"]
    assert plan.eval_dir(1, "vanilla_pgdat") == tmp_path.resolve() / "runs/seed1/vanilla_pgdat/eval"
    assert plan.arm_of("assimilated_n_fgsm_cleansel") == "assimilated_n_fgsm"
    # off by default
    plain = plan_study(StudyOptions(output_dir=tmp_path, arms=arms))
    assert plain.rows == arms and not any("evaluations" in s for s in plain.specs)
    with pytest.raises(ValueError, match="clean_selection"):
        plan_study(StudyOptions(output_dir=tmp_path, arms=["vanilla", "assimilated"], clean_selection=True))


def test_arm_epochs_replace_epochs_for_the_named_arms(tmp_path):
    arms = ["vanilla_pgdat", "vanilla_n_fgsm", "assimilated_n_fgsm"]
    plan = plan_study(StudyOptions(output_dir=tmp_path, arms=arms, epochs=6, arm_epochs={"vanilla_n_fgsm": 11}))
    assert {s["arm"]: s["train_override"]["epochs"] for s in plan.specs} == {
        "vanilla_pgdat": 6,
        "vanilla_n_fgsm": 11,
        "assimilated_n_fgsm": 6,
    }
    # without --epochs, only the named arms get one
    plan = plan_study(StudyOptions(output_dir=tmp_path, arms=arms, arm_epochs={"assimilated_n_fgsm": 3}))
    assert {s["arm"]: s["train_override"].get("epochs") for s in plan.specs}["assimilated_n_fgsm"] == 3
    assert "epochs" not in plan.specs[0]["train_override"]
    with pytest.raises(ValueError, match="does not run"):
        plan_study(StudyOptions(output_dir=tmp_path, arms=arms, arm_epochs={"vanilla": 3}))
    for bad in (0, 2.5, "3", True):
        with pytest.raises(ValueError, match="positive integer"):
            plan_study(StudyOptions(output_dir=tmp_path, arms=arms, arm_epochs={"vanilla_n_fgsm": bad}))


def test_cli_parses_arm_epochs_and_clean_selection(monkeypatch, tmp_path):
    args = ["--output_dir", str(tmp_path), "--arms", "vanilla_pgdat", "vanilla_n_fgsm", "--epochs", "4"]
    specs = planned_jobs(
        monkeypatch, lambda: main([*args, "--arm_epochs", '{"vanilla_n_fgsm": 9}', "--clean_selection"]), 2
    )
    by_arm = {s["arm"]: s for s in specs}
    assert by_arm["vanilla_pgdat"]["train_override"]["epochs"] == 4
    assert by_arm["vanilla_n_fgsm"]["train_override"]["epochs"] == 9
    assert [e["row"] for s in specs for e in s["evaluations"]] == ["vanilla_pgdat_cleansel", "vanilla_n_fgsm_cleansel"]
    for bad in ('{"nonsense": 3}', "[3]", "{not json"):
        with pytest.raises(SystemExit):
            main([*args, "--arm_epochs", bad])


def test_cli_passes_the_convergence_check_to_every_evaluation(monkeypatch, tmp_path):
    """--convergence_check: default (the next budget's members), none, or its own gradient members as JSON."""
    args = ["--output_dir", str(tmp_path), "--arms", "vanilla_pgdat", "--clean_selection"]
    own = {"APGD": {"loss": "ce", "steps": 200}, "APGDMargin": {"steps": 200}}
    for value, expected in ((None, True), ("none", False), (json.dumps(own), own)):
        extra = [] if value is None else ["--convergence_check", value]
        (spec,) = planned_jobs(monkeypatch, lambda extra=extra: main([*args, *extra]), 1)
        assert spec["eval_override"]["convergence_check"] == expected
        assert spec["evaluations"][0]["eval_override"]["convergence_check"] == expected  # the clean-selected row too
    for bad in ('{"Square": {}}', '{"APGD": {"eps": 0.1}}', '{"APGD": {"stepz": 1}}', "{}", "[1]", "{not json"):
        with pytest.raises(SystemExit):
            main([*args, "--convergence_check", bad])
    with pytest.raises(SystemExit):  # members of its own with no budget to check
        main([*args, "--attack_budget", "none", "--convergence_check", json.dumps(own)])
    with pytest.raises(ValueError, match="needs an attack_budget"):  # the same through the Python options
        plan_study(StudyOptions(output_dir=tmp_path, arms=["vanilla"], attack_budget=None, convergence_check=own))


def test_cli_rejects_arm_epochs_that_are_not_positive_integers(capsys, tmp_path):
    """An argparse error at parse time, not a traceback from the planning."""
    args = ["--output_dir", str(tmp_path), "--arms", "vanilla_pgdat", "vanilla_n_fgsm"]
    for bad in ("0", "-2", "2.5", "true", '"3"', "null"):
        with pytest.raises(SystemExit):
            main([*args, "--arm_epochs", f'{{"vanilla_n_fgsm": {bad}}}'])
        assert "positive integer" in capsys.readouterr().err


def test_paired_comparisons_of_the_issue_32_arms():
    """Assimilated against vanilla under the same training, and robust against clean selection."""
    arms = ["vanilla", "vanilla_pgdat", "vanilla_n_fgsm", "assimilated", "assimilated_pgdat", "assimilated_n_fgsm"]
    rows = [r for a in arms for r in ([a, a + CLEAN_SELECTION] if a.endswith(("pgdat", "fgsm")) else [a])]
    pairs = paired_comparisons(rows)
    assert pairs == [
        ("vanilla", "vanilla_pgdat"),
        ("vanilla", "vanilla_n_fgsm"),
        ("vanilla", "assimilated"),
        ("vanilla", "assimilated_pgdat"),
        ("vanilla", "assimilated_n_fgsm"),
        ("vanilla_pgdat", "assimilated_pgdat"),
        ("vanilla_pgdat_cleansel", "assimilated_pgdat_cleansel"),
        ("vanilla_n_fgsm", "assimilated_n_fgsm"),
        ("vanilla_n_fgsm_cleansel", "assimilated_n_fgsm_cleansel"),
        ("vanilla_pgdat_cleansel", "vanilla_pgdat"),
        ("vanilla_n_fgsm_cleansel", "vanilla_n_fgsm"),
        ("assimilated_pgdat_cleansel", "assimilated_pgdat"),
        ("assimilated_n_fgsm_cleansel", "assimilated_n_fgsm"),
    ]
    # the plain study keeps its one pair; alpha1's reference is vanilla (no adversarial training)
    assert paired_comparisons(["vanilla", "assimilated", "alpha1"]) == [
        ("vanilla", "assimilated"),
        ("vanilla", "alpha1"),
    ]


def test_paired_comparisons_need_the_same_epochs(tmp_path):
    """Assimilated against vanilla counts as the same training only when --arm_epochs gives both the same
    epochs; robust against clean selection is always one training."""
    arms = ["vanilla", "vanilla_pgdat", "assimilated_pgdat"]
    options = StudyOptions(output_dir=tmp_path, arms=arms, epochs=2, clean_selection=True)
    plan = plan_study(dataclasses.replace(options, arm_epochs={"assimilated_pgdat": 3}))
    assert plan.epochs == {"vanilla": 2, "vanilla_pgdat": 2, "assimilated_pgdat": 3}
    pairs = paired_comparisons(plan.rows, plan.epochs)
    assert ("vanilla_pgdat", "assimilated_pgdat") not in pairs
    assert ("vanilla_pgdat_cleansel", "assimilated_pgdat_cleansel") not in pairs
    assert ("vanilla", "assimilated_pgdat") in pairs and ("assimilated_pgdat_cleansel", "assimilated_pgdat") in pairs
    same = plan_study(dataclasses.replace(options, arm_epochs={"assimilated_pgdat": 2}))
    assert ("vanilla_pgdat", "assimilated_pgdat") in paired_comparisons(same.rows, same.epochs)
    # the bundle's epochs (None) for both: the same
    plain = plan_study(dataclasses.replace(options, epochs=None))
    assert ("vanilla_pgdat", "assimilated_pgdat") in paired_comparisons(plain.rows, plain.epochs)


def test_training_time_from_the_run_summary():
    one = {"started": "2024-01-01T10:00:00", "finished": "2024-01-01T10:02:30"}
    assert training_time(one) == (150.0, True)
    resumed = dict(one, history=[{"started": "2024-01-01T09:00:00", "finished": "2024-01-01T09:00:40"}])
    assert training_time(resumed) == (190.0, True)
    killed = dict(one, history=[{"started": "2024-01-01T09:00:00", "status": "running"}])
    assert training_time(killed) == (150.0, False)  # a lower bound: the killed session left no end time
    assert training_time({"started": "2024-01-01T09:00:00"}) == (None, False)


# -------------------------------------------------------------------------------- T and C of a run
def test_movement_and_saturation_of_the_modules():
    from monai_assim.metrics.assimilation import MOVEMENT_KEYS
    from monai_assim.study.run import movement_and_saturation

    torch.manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(3, 1, 24, 24)  # away from the ends; the GLCM term's windows are 20 px
    modules = torch.nn.Sequential(TextureModule(output_map="clamp"), ColorModule(output_map="clamp")).eval()
    m = movement_and_saturation(modules, x)
    assert set(m) == {*MOVEMENT_KEYS, "saturation_texture", "saturation_color"}
    assert m["saturation_texture"] == m["saturation_color"] == 0.0 and m["grey_shift"] < 1e-6
    with torch.no_grad():
        modules[0].residual[-1].bias.fill_(-5.0)  # T pushes every value below 0
    m = movement_and_saturation(modules, x)
    assert m["saturation_texture"] == 1.0 and m["saturation_color"] == 0.0


def test_the_modules_are_read_with_the_sizes_the_run_recorded(tmp_path):
    from monai_assim.study.run import _load_network

    t, c = TextureModule(features=4, num_layers=2), ColorModule(features=5)
    state = {f"texture.{k}": v for k, v in t.state_dict().items()}
    state.update({f"color.{k}": v for k, v in c.state_dict().items()})
    (tmp_path / "checkpoints").mkdir()
    torch.save({"network": state, "epoch": 1}, tmp_path / "checkpoints" / "best_clean.pt")
    settings = {"texture_features": 4, "texture_layers": 2, "color_features": 5}
    (tmp_path / "run_summary.json").write_text(json.dumps({"settings": settings}))
    modules = _load_network(tmp_path, torch.device("cpu"), "best_clean")
    assert torch.equal(modules[0].residual[0].weight, t.residual[0].weight)
    assert modules[1].residual[0].out_features == 5


# -------------------------------------------------------------- jobs and tables with a fake bundle
N_IMAGES = 4
#: (arm, checkpoint) -> FGSM correct per test image; clean is always [1, 1, 1, 0]
CORRECT = {
    ("vanilla", "best"): [1, 0, 0, 0],
    ("vanilla_pgdat", "best"): [1, 1, 1, 0],
    ("vanilla_pgdat", "best_clean"): [1, 0, 0, 0],
    ("assimilated_pgdat", "best"): [1, 1, 1, 1],
    ("assimilated_pgdat", "best_clean"): [1, 1, 0, 0],
}
#: rows whose model predicts a single class (robustness.json's flag)
SINGLE = {("assimilated_pgdat", "best_clean")}


class FakeBundle:
    """Replaces ``_run_bundle``: train.json writes a finished run (summary, checkpoints), evaluate.json the
    result files of the checkpoint it is given into its ``eval_dir``."""

    def __init__(self, data_dir: Path, same_network: tuple[str, ...] = (), select_by: str = "robust"):
        """``select_by``: the adversarial runs' rule, ``robust`` (best_clean.pt beside best.pt), ``clean``
        (best_robust.pt instead) or ``old`` (robust, from a version that kept no second checkpoint)."""
        self.calls: list[tuple[str, str, str]] = []
        self.data_dir, self.same_network, self.select_by = data_dir, same_network, select_by

    def __call__(self, root, config, **o):
        out = Path(o["output_dir"])
        arm = out.name
        if config == "train.json":
            self.calls.append(("train", arm, ""))
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            torch.save({"network": {"w": torch.ones(2)}, "epoch": 3}, out / "checkpoints" / "best.pt")
            selection = {"select_by": "clean", "best_epoch": 3}
            if o.get("adversarial_training") and self.select_by == "old":
                selection = {"select_by": "robust", "best_epoch": 3}
            elif o.get("adversarial_training"):
                same = arm in self.same_network
                other = "best_clean" if self.select_by == "robust" else "best_robust"
                clean = {"network": {"w": torch.ones(2) if same else torch.zeros(2)}, "epoch": 3 if same else 1}
                torch.save(clean, out / "checkpoints" / f"{other}.pt")
                selection = {"select_by": self.select_by, "best_epoch": 3, "other_checkpoint": {"file": f"{other}.pt"}}
                selection["other_checkpoint"]["epoch"] = clean["epoch"]
            # val_acc 0.6, 0.7, 0.8 ... at epochs 1, 2, 3 ...; adversarial runs: val_robust_acc 0.1, 0.2, 0.3 ...
            epochs = [{"epoch": e, "val_acc": round(0.5 + e / 10, 2)} for e in range(1, max(3, o.get("epochs", 1)) + 1)]
            if o.get("adversarial_training"):
                for e in epochs:
                    e["val_robust_acc"] = round(e["epoch"] / 10, 2)
            summary = {
                "settings": {"variant": o["variant"], "epochs": o.get("epochs"), "image_size": 16},
                "demo_data": False,
                "dataset_dir": str(self.data_dir),
                "started": "2024-01-01T10:00:00",
                "finished": f"2024-01-01T10:0{o.get('epochs', 1)}:00",  # one minute per epoch
                "epochs_completed": o.get("epochs", 1),
                "best_epoch": 3,
                "best_validation": epochs[2],
                "epochs": epochs,
                "selection": selection,
            }
            (out / "run_summary.json").write_text(json.dumps(summary))
            return
        checkpoint = o.get("checkpoint", "best")
        eval_dir = Path(o.get("eval_dir", out / "eval"))
        self.calls.append(("evaluate", arm, checkpoint))
        assert (out / "checkpoints" / f"{checkpoint}.pt").is_file()
        eval_dir.mkdir(parents=True, exist_ok=True)
        correct = CORRECT[(arm, checkpoint)]
        rows = [
            {"attack": "clean", "eps": 0.0, "role": "clean", "n": N_IMAGES, "accuracy": 0.75},
            {"attack": "FGSM", "eps": 8 / 255, "role": "attack", "n": N_IMAGES, "accuracy": sum(correct) / N_IMAGES},
        ]
        with open(eval_dir / "robustness.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        with open(eval_dir / "robustness_per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
            w.writeheader()
            for attack, eps, role, flags in (("clean", 0.0, "clean", [1, 1, 1, 0]), ("FGSM", 8.0, "attack", correct)):
                for i, c in enumerate(flags):
                    image = str(self.data_dir / f"{i}.png")
                    w.writerow(dict(sample=i, image=image, label=0, attack=attack, eps_255=eps, role=role, correct=c))
        single = (arm, checkpoint) in SINGLE
        (eval_dir / "robustness.json").write_text(
            json.dumps({"report": [f"{arm} {checkpoint}"], "single_class": single, "attacks": o["attacks"]})
        )


def fake_movement(run_dir, n_images, checkpoint="best"):
    """_movement_of_run without images: the saturation tells the checkpoints apart."""
    from monai_assim.metrics.assimilation import MOVEMENT_KEYS

    if json.loads((Path(run_dir) / "run_summary.json").read_text())["settings"]["variant"] != "assimilated":
        return None
    return dict(dict.fromkeys(MOVEMENT_KEYS, 0.01), saturation_texture=0.25 if checkpoint == "best" else 0.5,
                saturation_color=0.0)  # fmt: skip


def _job_spec(tmp_path, arm="vanilla_pgdat", **settings):
    options = StudyOptions(output_dir=tmp_path / "study", arms=[arm], clean_selection=True, epochs=2, **settings)
    return plan_study(options).specs[0]


def _small_study(monkeypatch, tmp_path, **settings):
    """A one-seed study of vanilla_pgdat and assimilated_pgdat with clean selection, with the fake bundle."""
    import monai_assim.study.run as run

    monkeypatch.setattr(run, "_run_bundle", FakeBundle(tmp_path / "data"))
    monkeypatch.setattr(run, "_movement_of_run", fake_movement)
    options = StudyOptions(output_dir=tmp_path / "study", arms=["vanilla_pgdat", "assimilated_pgdat"], epochs=2,
                           clean_selection=True, attack_budget=None, n_examples=0, **settings)  # fmt: skip
    return options, run_study(options)


def test_run_job_evaluates_the_clean_checkpoint_of_the_same_training_and_resumes(monkeypatch, tmp_path):
    import monai_assim.study.run as run

    fake = FakeBundle(tmp_path / "data")
    monkeypatch.setattr(run, "_run_bundle", fake)
    monkeypatch.setattr(run, "_movement_of_run", fake_movement)
    spec = _job_spec(tmp_path)
    result = run_job(spec)
    assert fake.calls == [
        ("train", "vanilla_pgdat", ""),
        ("evaluate", "vanilla_pgdat", "best"),
        ("evaluate", "vanilla_pgdat", "best_clean"),
    ]
    run_dir = Path(spec["run_dir"])
    assert (run_dir / "eval_best_clean" / "robustness.json").is_file()
    assert "skipped" in result and result["evaluations"]["vanilla_pgdat_cleansel"]["skipped"] is False
    # finished: nothing runs again
    fake.calls.clear()
    result = run_job(spec)
    assert fake.calls == [] and result["skipped"] == ["train", "evaluate"]
    assert result["evaluations"]["vanilla_pgdat_cleansel"]["skipped"] is True
    # only the clean-selection row missing (a study killed after the robust-selected evaluation)
    (run_dir / "eval_best_clean" / "robustness.json").unlink()
    run_job(spec)
    assert fake.calls == [("evaluate", "vanilla_pgdat", "best_clean")]
    # the checkpoints removed (--prune) before that row was evaluated: a clear error, not a silent gap
    (run_dir / "eval_best_clean" / "robustness.json").unlink()
    (run_dir / "checkpoints" / "best_clean.pt").unlink()
    with pytest.raises(FileNotFoundError, match="best_clean.pt.*--prune"):
        run_job(spec)


def test_the_same_network_under_both_rules_is_attacked_once(monkeypatch, tmp_path):
    """best_clean.pt holding best.pt's weights: the row copies best.pt's evaluation and says so."""
    import monai_assim.study.run as run

    fake = FakeBundle(tmp_path / "data", same_network=("vanilla_pgdat",))
    monkeypatch.setattr(run, "_run_bundle", fake)
    spec = _job_spec(tmp_path)
    result = run_job(spec)
    assert [c for c in fake.calls if c[0] == "evaluate"] == [("evaluate", "vanilla_pgdat", "best")]
    assert result["evaluations"]["vanilla_pgdat_cleansel"]["copied_from"] == "eval"
    run_dir = Path(spec["run_dir"])
    for name in ("robustness.json", "robustness.csv", "robustness_per_image.csv"):
        assert (run_dir / "eval_best_clean" / name).read_bytes() == (run_dir / "eval" / name).read_bytes()
    assert json.loads((run_dir / "eval_best_clean" / "copied.json").read_text())["epoch"] == 3
    # the copied movement file names the row's checkpoint (the same weights: the same numbers)
    moved = json.loads((run_dir / "eval_best_clean" / "assimilation_movement.json").read_text())
    assert moved["checkpoint"] == "best_clean"
    assert json.loads((run_dir / "eval" / "assimilation_movement.json").read_text())["checkpoint"] == "best"


def test_a_movement_file_without_saturation_is_measured_again(monkeypatch, tmp_path):
    """A study resumed over runs of an earlier version: their movement files gain the saturation once."""
    import monai_assim.study.run as run

    measured = []

    def movement(run_dir, n_images, checkpoint="best"):
        measured.append(checkpoint)
        return {"grey_shift": 0.1, "saturation_texture": 0.2, "saturation_color": 0.3}

    monkeypatch.setattr(run, "_movement_of_run", movement)
    run_dir = tmp_path / "runs" / "assimilated"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"")
    (run_dir / "eval" / "robustness.json").write_text("{}")
    (run_dir / "eval" / "assimilation_movement.json").write_text(json.dumps({"movement": {"grey_shift": 0.1}}))
    spec = {"bundle_root": str(tmp_path), "run_dir": str(run_dir), "train_override": {}, "eval_override": {}}
    run_job(spec)
    saved = json.loads((run_dir / "eval" / "assimilation_movement.json").read_text())["movement"]
    assert measured == ["best"] and saved["saturation_texture"] == 0.2
    run_job(spec)  # now complete: kept
    assert measured == ["best"]


def test_study_tables_hold_the_selection_rows_pairs_times_and_saturation(monkeypatch, tmp_path):
    import monai_assim.study.run as run

    fake = FakeBundle(tmp_path / "data")
    monkeypatch.setattr(run, "_run_bundle", fake)
    monkeypatch.setattr(run, "_movement_of_run", fake_movement)
    out = tmp_path / "study"
    options = StudyOptions(output_dir=out, arms=AT_ARMS, seeds=[0, 1], epochs=2, clean_selection=True,
                           arm_epochs={"vanilla_pgdat": 3, "assimilated_pgdat": 3}, attack_budget=None,
                           n_examples=0)  # fmt: skip
    doc = run_study(options)
    rows = ["vanilla", "vanilla_pgdat", "vanilla_pgdat_cleansel", "assimilated_pgdat", "assimilated_pgdat_cleansel"]
    assert list(doc["rows"]) == rows and len([c for c in fake.calls if c[0] == "train"]) == 6

    # the aggregate: one column per row, clean-selected rows from their own evaluation
    with open(out / "aggregate.csv") as f:
        agg = {(r["arm"], r["attack"]): float(r["mean"]) for r in csv.DictReader(f)}
    assert agg[("vanilla_pgdat", "FGSM")] == 0.75 and agg[("vanilla_pgdat_cleansel", "FGSM")] == 0.25
    text = (out / "aggregate.md").read_text()
    assert "vanilla_pgdat_cleansel" in (out / "runs" / "seed1" / "comparison.md").read_text()

    # paired: robust against clean selection of the same training, per image
    with open(out / "paired.csv") as f:
        paired = {(r["seed"], r["reference"], r["arm"], r["attack"]): r for r in csv.DictReader(f)}
    sel = paired[("pooled", "vanilla_pgdat_cleansel", "vanilla_pgdat", "FGSM")]
    assert (sel["n"], sel["ref_wrong_arm_right"], sel["ref_right_arm_wrong"]) == ("8", "4", "0")
    same_training = paired[("0", "vanilla_pgdat", "assimilated_pgdat", "FGSM")]
    assert (same_training["ref_wrong_arm_right"], same_training["ref_right_arm_wrong"]) == ("1", "0")
    assert ("pooled", "vanilla_pgdat_cleansel", "assimilated_pgdat_cleansel", "FGSM") in paired
    assert ["vanilla_pgdat_cleansel", "vanilla_pgdat"] in doc["paired"]["pairs"]
    assert (
        "| pooled | vanilla_pgdat_cleansel | vanilla_pgdat | FGSM | 8 | 8 | 0 | 4 | +4 |"
        in (out / "paired.md").read_text()
    )

    # runs: checkpoint epochs, training time (per-arm epochs: 3 minutes), saturation of T and C
    with open(out / "runs.csv") as f:
        runs = {(r["seed"], r["arm"]): r for r in csv.DictReader(f)}
    r = runs[("1", "assimilated_pgdat")]
    assert (r["checkpoint"], r["checkpoint_epoch"], r["epochs_run"], r["train_s"]) == ("best", "3", "3", "180.0")
    assert (r["train_s_per_epoch"], r["saturation_texture"], r["single_class"]) == ("60.0", "0.25", "False")
    # robust validation: at the checkpoint's epoch (3), at the last epoch and its rise since the first
    assert (r["val_acc"], r["val_robust_acc"], r["val_robust_last"], r["val_robust_rise"]) == (
        "0.8",
        "0.3",
        "0.3",
        "0.2",
    )
    assert (runs[("0", "vanilla")]["val_robust_acc"], runs[("0", "vanilla")]["val_robust_rise"]) == ("", "")
    c = runs[("1", "assimilated_pgdat_cleansel")]
    assert (c["val_robust_acc"], c["val_robust_last"]) == ("0.1", "0.3")  # the clean-selected epoch, 1
    assert (c["checkpoint"], c["checkpoint_epoch"], c["saturation_texture"], c["single_class"]) == (
        "best_clean",
        "1",
        "0.5",
        "True",
    )
    assert runs[("0", "vanilla")]["train_s"] == "120.0" and runs[("0", "vanilla")]["saturation_texture"] == ""
    assert (
        "| assimilated_pgdat | best.pt | 3 [3, 3] | 180 [180, 180] | 60.0 [60.0, 60.0] | 0.300 [0.300, 0.300] | "
        "+0.200 [+0.200, +0.200] | 25.0% [25.0%, 25.0%]" in text
    )
    assert "| assimilated_pgdat_cleansel | best_clean.pt |" in text and "SINGLE CLASS in 2 of 2 seeds" in text
    assert doc["assimilation_movement"]["assimilated_pgdat_cleansel"]["mean"]["saturation_texture"] == 0.5
    seed_table = (out / "runs" / "seed0" / "comparison.md").read_text()
    assert (
        "| assimilated_pgdat_cleansel | best_clean.pt (1) | 3 | 180 | 60.0 | 0.100 / 0.300 (+0.200) | 50.0% | 0.0% | "
        "SINGLE CLASS; the training of assimilated_pgdat |" in seed_table
    )

    # single class: named in the tables' note and in study.json
    assert "SINGLE CLASS: seed0/assimilated_pgdat_cleansel, seed1/assimilated_pgdat_cleansel" in text
    assert doc["single_class"] == ["seed0/assimilated_pgdat_cleansel", "seed1/assimilated_pgdat_cleansel"]
    assert doc["runs"]["seed0/vanilla_pgdat_cleansel"]["checkpoint"] == "best_clean"

    # resume: nothing runs again; a lost clean-selection result is evaluated alone
    fake.calls.clear()
    again = run_study(options)
    assert fake.calls == [] and again["paired"]["pooled"] == doc["paired"]["pooled"]
    (out / "runs" / "seed1" / "vanilla_pgdat" / "eval_best_clean" / "robustness.json").unlink()
    run_study(options)
    assert fake.calls == [("evaluate", "vanilla_pgdat", "best_clean")]


def test_a_copy_killed_halfway_leaves_no_finished_row(monkeypatch, tmp_path):
    """robustness.json marks a row finished: a copy killed in the middle of it leaves none, not a truncated one."""
    import shutil

    import monai_assim.study.run as run

    monkeypatch.setattr(run, "_run_bundle", FakeBundle(tmp_path / "data", same_network=("vanilla_pgdat",)))
    spec = _job_spec(tmp_path)
    real = shutil.copyfileobj

    class Killed(Exception):
        pass

    def dies_in_robustness_json(fsrc, fdst, *args):
        if Path(fsrc.name).name == "robustness.json":
            fdst.write(fsrc.read(10))
            fdst.flush()
            raise Killed
        return real(fsrc, fdst, *args)

    monkeypatch.setattr(shutil, "_USE_CP_SENDFILE", False)  # every copy goes through copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", dies_in_robustness_json)
    with pytest.raises(Killed):
        run_job(spec)
    target = Path(spec["run_dir"]) / "eval_best_clean"
    assert not (target / "robustness.json").exists()
    assert not [p.name for p in target.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(shutil, "copyfileobj", real)
    assert run_job(spec)["evaluations"]["vanilla_pgdat_cleansel"]["copied_from"] == "eval"
    source = Path(spec["run_dir"]) / "eval" / "robustness.json"
    assert (target / "robustness.json").read_bytes() == source.read_bytes()
    assert json.loads((target / "copied.json").read_text())["from"] == "eval"


@pytest.mark.parametrize("same", [False, True], ids=["evaluated", "copied"])
def test_a_new_evaluation_of_the_arm_redoes_its_clean_selection_row(monkeypatch, tmp_path, same):
    """The user deleted eval/robustness.json to evaluate the arm again (other attacks): the clean-selection
    row, evaluated or copied with the old attacks, is redone too, not kept silently."""
    import monai_assim.study.run as run

    fake = FakeBundle(tmp_path / "data", same_network=("vanilla_pgdat",) if same else ())
    monkeypatch.setattr(run, "_run_bundle", fake)
    run_job(_job_spec(tmp_path))
    spec = _job_spec(tmp_path, attacks={"PGD": {}})
    run_dir = Path(spec["run_dir"])
    (run_dir / "eval" / "robustness.json").unlink()
    fake.calls.clear()
    run_job(spec)
    assert fake.calls == [("evaluate", "vanilla_pgdat", "best")] + (
        [] if same else [("evaluate", "vanilla_pgdat", "best_clean")]
    )
    assert json.loads((run_dir / "eval_best_clean" / "robustness.json").read_text())["attacks"] == {"PGD": {}}
    assert (run_dir / "eval_best_clean" / "copied.json").is_file() == same


def test_a_clean_selection_row_evaluated_with_other_attacks_is_refused(monkeypatch, tmp_path):
    """The report pairs <arm>_cleansel with <arm> only when both were attacked with the same plan."""
    options, _ = _small_study(monkeypatch, tmp_path)
    path = tmp_path / "study" / "runs" / "vanilla_pgdat" / "eval_best_clean" / "robustness.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps(dict(saved, attacks={"FGSM": {}})))
    with pytest.raises(ValueError, match="(?s)vanilla_pgdat_cleansel.*attacks.*eval_best_clean"):
        run_study(options)


def test_study_json_gives_each_row_the_epoch_of_its_checkpoint(monkeypatch, tmp_path):
    """best_epoch and best_val_acc of a clean-selection row are best_clean.pt's, not best.pt's."""
    _, doc = _small_study(monkeypatch, tmp_path)
    robust, clean = doc["runs"]["vanilla_pgdat"], doc["runs"]["vanilla_pgdat_cleansel"]
    assert (robust["checkpoint"], robust["best_epoch"], robust["best_val_acc"]) == ("best", 3, 0.8)
    assert (clean["checkpoint"], clean["best_epoch"], clean["best_val_acc"]) == ("best_clean", 1, 0.6)


def test_the_paired_tables_skip_arms_trained_for_other_epochs(monkeypatch, tmp_path):
    _, doc = _small_study(monkeypatch, tmp_path, arm_epochs={"assimilated_pgdat": 3})
    assert doc["paired"]["pairs"] == [
        ["vanilla_pgdat_cleansel", "vanilla_pgdat"],
        ["assimilated_pgdat_cleansel", "assimilated_pgdat"],
    ]
    with open(tmp_path / "study" / "paired.csv") as f:
        assert {(r["reference"], r["arm"]) for r in csv.DictReader(f)} == {tuple(p) for p in doc["paired"]["pairs"]}


@pytest.mark.parametrize(
    ("select_by", "cause"),
    [("clean", "(?s)select_by clean.*best_robust.pt"), ("old", "(?s)best_clean.pt.*earlier version")],
)
def test_a_run_without_a_clean_selected_checkpoint_is_explained(monkeypatch, tmp_path, select_by, cause):
    """The error says why best_clean.pt is missing, from the run summary's selection; a run trained with
    select_by clean gets no robust-vs-clean row even where a best_clean.pt lies around."""
    import monai_assim.study.run as run

    monkeypatch.setattr(run, "_run_bundle", FakeBundle(tmp_path / "data", select_by=select_by))
    spec = _job_spec(tmp_path)
    with pytest.raises(ValueError, match=cause):
        run_job(spec)
    run_dir = Path(spec["run_dir"])
    if select_by == "clean":
        torch.save({"network": {"w": torch.zeros(2)}, "epoch": 1}, run_dir / "checkpoints" / "best_clean.pt")
        with pytest.raises(ValueError, match=cause):
            run_job(spec)
    assert not (run_dir / "eval_best_clean" / "robustness.json").exists()


def test_an_interrupted_training_resumes(monkeypatch, tmp_path):
    """A run folder with last.pt but no finished summary (a killed study) is trained on with resume, not from
    the start; a folder without last.pt starts a new training."""
    import monai_assim.study.run as run_module

    calls = []

    def fake_run_bundle(root, config, **o):
        calls.append((config, o.get("resume", False)))
        if config == "evaluate.json":
            raise _Stop

    class _Stop(Exception):
        pass

    monkeypatch.setattr(run_module, "_run_bundle", fake_run_bundle)
    plan = plan_study(StudyOptions(output_dir=tmp_path, arms=["vanilla_pgdat"]))
    (spec,) = plan.specs
    with pytest.raises(_Stop):
        run_job(spec)
    (Path(spec["run_dir"]) / "checkpoints").mkdir(parents=True)
    (Path(spec["run_dir"]) / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(_Stop):
        run_job(spec)
    assert calls == [("train.json", False), ("evaluate.json", False), ("train.json", True), ("evaluate.json", False)]


def test_robust_trend_is_the_last_epoch_against_three_before():
    from monai_assim.study.report import _robust_trend

    epochs = [
        {"epoch": e, "val_acc": 0.9, "val_robust_acc": v} for e, v in enumerate([0.0, 0.2, 0.4, 0.5, 0.5, 0.55], 1)
    ]
    assert _robust_trend({"epochs": epochs}) == (0.55, 0.15)  # epoch 6 against epoch 3
    assert _robust_trend({"epochs": epochs[:2]}) == (0.2, 0.2)  # shorter than the window: against the first
    assert _robust_trend({"epochs": epochs[:1]}) == (0.0, None)
    assert _robust_trend({"epochs": [{"epoch": 1, "val_acc": 0.9}]}) == (None, None)  # clean validation only
    # a repeated epoch counts with its later record; a NaN record is left out
    repeated = [*epochs[:4], {"epoch": 4, "val_robust_acc": 0.3}, {"epoch": 5, "val_robust_acc": float("nan")}]
    assert _robust_trend({"epochs": repeated}) == (0.3, 0.3)  # epoch 4 (0.3, not 0.5) against epoch 1
