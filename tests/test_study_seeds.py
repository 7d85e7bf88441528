"""Multi-seed study machinery: aggregation over seeds, paired per-image flips, --seeds/--jobs/resume end to end."""

import csv
import dataclasses
import json

import pytest
from helpers.study_jobs import planned_jobs
from scipy.stats import binomtest

from monai_assim.stats import (
    PER_IMAGE_COLUMNS,
    aggregate_over_seeds,
    mcnemar_exact,
    paired_flips,
    read_per_image,
)
from monai_assim.study import ARMS, DEFAULT_ARMS, main


def _rows(clean, pgd, n=4):
    return [
        {"attack": "clean", "eps": 0.0, "role": "clean", "n": n, "accuracy": clean},
        {"attack": "PGD", "eps": 2 / 255, "role": "attack", "n": n, "accuracy": pgd},
    ]


def test_aggregate_over_seeds_by_hand():
    results = {
        0: {"vanilla": _rows(1.0, 0.25), "assimilated": _rows(0.75, 0.5)},
        1: {"vanilla": _rows(0.5, 0.0), "assimilated": _rows(0.75, 0.25)},
        2: {"vanilla": _rows(0.75, 0.5), "assimilated": _rows(1.0, 0.0)},
    }
    rows = {(r["arm"], r["attack"], r["eps_255"]): r for r in aggregate_over_seeds(results)}
    v = rows[("vanilla", "clean", 0.0)]
    assert (v["n_seeds"], v["mean"], v["min"], v["max"]) == (3, 0.75, 0.5, 1.0)
    assert v["std"] == pytest.approx(0.25)  # sample std of 1.0, 0.5, 0.75
    a = rows[("assimilated", "PGD", 2.0)]
    assert a["mean"] == pytest.approx(0.25) and a["std"] == pytest.approx(0.25) and (a["min"], a["max"]) == (0.0, 0.5)
    assert aggregate_over_seeds({0: {"vanilla": _rows(1.0, 0.25)}})[0]["std"] is None


def _write_per_image(path, correct):
    """correct: {(attack, eps_255): [bool per image]}"""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
        w.writeheader()
        for (attack, eps), flags in correct.items():
            for i, c in enumerate(flags):
                w.writerow(
                    {
                        "sample": i,
                        "image": f"/data/img{i}.png",
                        "label": i % 2,
                        "attack": attack,
                        "eps_255": eps,
                        "role": "clean" if attack == "clean" else "attack",
                        "correct": int(c),
                    }
                )


def test_paired_flips_by_hand(tmp_path):
    T, F = True, False
    van = {("clean", 0): [T, T, T, T, F, T], ("PGD", 2): [T, T, F, F, F, T]}
    asm = {("clean", 0): [T, T, T, T, T, T], ("PGD", 2): [F, T, T, T, F, F]}
    per_image = {}
    for seed in (0, 1):
        for arm, data in (("vanilla", van), ("assimilated", asm)):
            path = tmp_path / f"{seed}_{arm}.csv"
            _write_per_image(path, data)
            per_image.setdefault(seed, {})[arm] = read_per_image(path)
    rows = {(r["seed"], r["attack"]): r for r in paired_flips(per_image)}
    r = rows[(0, "PGD")]
    # image 0 and 5: right -> wrong; images 2, 3: wrong -> right; 1 both right; 4 both wrong
    assert (r["n"], r["both_right"], r["ref_right_arm_wrong"], r["ref_wrong_arm_right"], r["both_wrong"]) == (
        6,
        1,
        2,
        2,
        1,
    )
    assert r["net_gain"] == 0 and r["p_mcnemar"] == 1.0
    c = rows[(0, "clean")]
    assert (c["ref_right_arm_wrong"], c["ref_wrong_arm_right"]) == (0, 1)
    pooled = rows[("pooled", "clean")]
    assert (pooled["n"], pooled["ref_wrong_arm_right"], pooled["net_gain"]) == (12, 2, 2)
    assert pooled["p_mcnemar"] == pytest.approx(0.5)


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (1, 5), (3, 3), (7, 2), (10, 30)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_arms_keep_the_default_runs():
    assert list(DEFAULT_ARMS) == ["vanilla", "assimilated", "alpha1"]
    assert ARMS["alpha1"] == {"variant": "assimilated", "alpha": 1.0} and ARMS["vanilla"] == {"variant": "vanilla"}
    assert ARMS["assimilated_pgdat"] == {"variant": "assimilated", "adversarial_training": "pgd"}
    assert ARMS["vanilla_trades"]["adversarial_training"] == "trades"
    with pytest.raises(SystemExit):
        main(["--arms", "nonsense"])


TINY = [
    "--bundle",
    "chest_xray",
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
    "2",
    "--attacks",
    json.dumps({"FGSM": {}}),
    "--eps_255",
    "8",
    "--check_eps_255",
    "0",
    "--attack_budget",
    "none",
    "--n_examples",
    "0",
    "--arms",
    "vanilla",
    "assimilated",
    "--movement_images",
    "2",
    "--assimilation_lr",
    "0.01",
]


@pytest.mark.slow
def test_two_seeds_two_jobs_aggregate_and_resume(tmp_path):
    out = tmp_path / "study"
    assert main([*TINY, "--output_dir", str(out), "--seeds", "0", "1", "--jobs", "2"]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert doc["seeds"] == [0, 1] and set(doc["runs"]) == {
        f"seed{s}/{a}" for s in (0, 1) for a in ("vanilla", "assimilated")
    }
    assert doc["runs"]["seed1/assimilated"]["settings"]["assimilation_lr"] == 0.01
    # the seed changes the split: the two seeds' test lists differ
    tests = [(out / "runs" / f"seed{s}" / "vanilla" / "datalists" / "test.csv").read_text() for s in (0, 1)]
    assert tests[0] != tests[1]
    # the aggregate table holds, per arm and condition, the mean over the two per-seed results
    with open(out / "aggregate.csv") as f:
        agg = list(csv.DictReader(f))
    assert {r["arm"] for r in agg} == {"vanilla", "assimilated"} and all(r["n_seeds"] == "2" for r in agg)
    for r in agg:
        accs = []
        for s in (0, 1):
            with open(out / "runs" / f"seed{s}" / r["arm"] / "eval" / "robustness.csv") as f:
                rows = list(csv.DictReader(f))
            accs += [
                float(x["accuracy"])
                for x in rows
                if x["attack"] == r["attack"] and round(float(x["eps"]) * 255, 4) == float(r["eps_255"])
            ]
        assert float(r["mean"]) == pytest.approx(sum(accs) / 2)
    assert "FGSM" in (out / "aggregate.md").read_text() and (out / "runs" / "seed1" / "comparison.md").is_file()
    assert set(doc["assimilation_movement"]) == {"assimilated"}
    assert (out / "runs" / "seed0" / "assimilated" / "study_job.log").is_file()

    # resume: every job is skipped; per-image files found on the re-run give the paired table
    for s in (0, 1):
        for arm in ("vanilla", "assimilated"):
            images = [
                d["image"]
                for d in json.loads((out / "runs" / f"seed{s}" / arm / "datalists" / "splits.json").read_text())["test"]
            ]
            with open(out / "runs" / f"seed{s}" / arm / "eval" / "robustness_per_image.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
                w.writeheader()
                for i, im in enumerate(images):
                    w.writerow(
                        {
                            "sample": i,
                            "image": im,
                            "label": 0,
                            "attack": "FGSM",
                            "eps_255": 8.0,
                            "role": "attack",
                            "correct": int(arm == "assimilated" or i == 0),
                        }
                    )
    assert main([*TINY, "--output_dir", str(out), "--seeds", "0", "1"]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert all(
        doc["timings_s"][f"seed{s}/{a}"]["skipped"] == ["train", "evaluate"]
        for s in (0, 1)
        for a in ("vanilla", "assimilated")
    )
    pooled = doc["paired"]["pooled"]
    assert (
        len(pooled) == 1
        and pooled[0]["ref_wrong_arm_right"] == 2 * (len(images) - 1)
        and pooled[0]["ref_right_arm_wrong"] == 0
    )
    assert (out / "paired.md").is_file()


def test_per_image_paths_pair_across_data_copies(tmp_path):
    """Each demo run generates its own copy of the data: paths relative to each run's data set pair up."""
    per_image = {0: {}}
    for arm, right in (("vanilla", 1), ("assimilated", 0)):
        root = tmp_path / arm / "demo_data"
        with open(tmp_path / f"{arm}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
            w.writeheader()
            for i in range(3):
                w.writerow(
                    {
                        "sample": i,
                        "image": str(root / "test" / f"{i}.png"),
                        "label": 0,
                        "attack": "PGD",
                        "eps_255": 4,
                        "role": "attack",
                        "correct": right,
                    }
                )
        per_image[0][arm] = read_per_image(tmp_path / f"{arm}.csv", root)
    (row, _pooled) = paired_flips(per_image)
    assert (row["n"], row["ref_right_arm_wrong"], row["eps_255"]) == (3, 3, 4.0)


def test_worst_case_and_structure_checks_reach_the_chosen_evaluations(monkeypatch, tmp_path):
    """--worst_case goes to every evaluation; --structure_checks only to the named arms on the named seeds."""
    args = ["--output_dir", str(tmp_path), "--seeds", "0", "1", "--arms", "vanilla", "assimilated"]
    args += ["--worst_case", "--structure_checks", "assimilated", "--structure_check_seeds", "0"]
    args += ["--structure_check_kwargs", '{"loss": "ce", "steps": 3, "n_restarts": 1}']
    specs = planned_jobs(monkeypatch, lambda: main(args), 4)
    checked = {(s["seed"], s["arm"]) for s in specs if s["eval_override"].get("structure_checks")}
    assert checked == {(0, "assimilated")}
    assert all(s["eval_override"]["worst_case"] is True for s in specs)
    kwargs = [
        s["eval_override"]["structure_check_kwargs"] for s in specs if (s["seed"], s["arm"]) == (0, "assimilated")
    ]
    assert kwargs == [{"loss": "ce", "steps": 3, "n_restarts": 1}]
    with pytest.raises(ValueError, match="unknown arms"):
        main(["--output_dir", str(tmp_path), "--structure_checks", "nonsense"])


def test_run_study_takes_options(monkeypatch, tmp_path):
    """run_study(StudyOptions(...), **changes) plans the same jobs as the keyword form."""
    import monai_assim.study as study

    specs = planned_jobs(
        monkeypatch, lambda: study.run_study("chest_xray", output_dir=tmp_path, arms=["vanilla"], epochs=1), 1
    )
    specs += planned_jobs(
        monkeypatch, lambda: study.run_study(study.StudyOptions(output_dir=tmp_path, arms=["vanilla"]), epochs=1), 1
    )
    assert len(specs) == 2 and specs[0] == specs[1] and specs[0]["train_override"]["epochs"] == 1


def test_schedule_and_probe_options_reach_the_right_arms(tmp_path):
    """lr_schedule goes to every arm; at_eps_warmup_epochs and co_probe_every with the adversarial options."""
    from monai_assim.study import StudyOptions, plan_study

    arms = ["vanilla", "assimilated", "vanilla_pgdat", "assimilated_trades"]
    options = StudyOptions(output_dir=tmp_path, arms=arms, at_steps=3, at_eps_warmup_epochs=2, co_probe_every=50)
    plan = plan_study(dataclasses.replace(options, lr_schedule="cosine"))
    train = {s["arm"]: s["train_override"] for s in plan.specs}
    assert all(train[a]["lr_schedule"] == "cosine" for a in arms)
    for arm in ("vanilla_pgdat", "assimilated_trades"):
        assert (train[arm]["at_steps"], train[arm]["at_eps_warmup_epochs"], train[arm]["co_probe_every"]) == (3, 2, 50)
    for arm in ("vanilla", "assimilated"):
        assert not {"at_steps", "at_eps_warmup_epochs", "co_probe_every"} & set(train[arm])
    # not given: left to the bundle
    default = plan_study(StudyOptions(output_dir=tmp_path, arms=arms))
    assert not any(
        {"lr_schedule", "at_eps_warmup_epochs", "co_probe_every"} & set(s["train_override"]) for s in default.specs
    )


def test_cli_parses_schedule_and_probe_options(monkeypatch, tmp_path):
    """--lr_schedule, --at_eps_warmup_epochs and --co_probe_every reach the jobs' training overrides."""
    args = ["--output_dir", str(tmp_path), "--arms", "vanilla", "vanilla_pgdat", "--lr_schedule", "Step"]
    args += ["--at_eps_warmup_epochs", "1.5", "--co_probe_every", "20"]
    specs = planned_jobs(monkeypatch, lambda: main(args), 2)
    train = {s["arm"]: s["train_override"] for s in specs}
    assert train["vanilla"]["lr_schedule"] == train["vanilla_pgdat"]["lr_schedule"] == "step"
    assert (train["vanilla_pgdat"]["at_eps_warmup_epochs"], train["vanilla_pgdat"]["co_probe_every"]) == (1.5, 20)
    assert "at_eps_warmup_epochs" not in train["vanilla"] and "co_probe_every" not in train["vanilla"]
    with pytest.raises(SystemExit):
        main(["--output_dir", str(tmp_path), "--lr_schedule", "linear"])


def test_finished_job_is_kept_and_skipped(tmp_path):
    """A (seed, arm) whose evaluation exists is neither trained nor evaluated again: a study runs in parts."""
    from monai_assim.study import run_job

    run = tmp_path / "runs" / "vanilla"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "robustness.json").write_text("{}")
    spec = {"bundle_root": str(tmp_path / "no_bundle"), "run_dir": str(run), "train_override": {}, "eval_override": {}}
    assert run_job(spec) == {"train_s": 0.0, "evaluate_s": 0.0, "skipped": ["train", "evaluate"]}
