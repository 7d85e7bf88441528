"""evaluate.json as a user runs it: the cost and progress log, Square by default (or
the exact override that adds it), --compare_with reading the saved results of both runs, and the default
plan's strong ensemble with its headline robust accuracy."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest
import torch
from helpers.bundle_runs import BUNDLES, bundle_cmd, copy_run, run_ok
from monai.bundle import ConfigParser

from monai_assim.attacks import ATTACK_BUDGETS
from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.robustness_results import write_results

EVAL = ["--backbone", "mobilenet_v2", "--check_eps", "$None", "--attack_budget", "none"]


@pytest.fixture(scope="module")
def trained_run(chest_xray_cli_run, tmp_path_factory):
    """A tiny trained chest_xray run (32 px, 1 epoch; the session's, trained once), copied for this module."""
    return copy_run(chest_xray_cli_run[0], tmp_path_factory.mktemp("evaluate") / "run")


def test_square_attack_eps_default_follows_the_grid():
    """A Square among --attacks runs at the largest eps of the grid by default (attack_eps), which follows
    --eps; an --attacks without Square leaves that grid unused instead of failing."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "chest_ct" / "evaluate.json"))
    assert parser.get_parsed_content("attack_eps") == {"Square": [8 / 255]}
    parser["eps"] = [1 / 255, 4 / 255]
    parser.parse()
    assert parser.get_parsed_content("attack_eps") == {"Square": [4 / 255]}
    handler = AdversarialRobustnessHandler(attacks=["FGSM"], attack_eps={"Square": [4 / 255]})
    assert handler.attack_eps == {}


def test_square_at_an_eps_without_white_box_says_so(tmp_path):
    """Square run only at an eps no white-box attack ran at: the report says the comparison is unavailable."""
    from helpers.tiny_nets import synthetic_data, trained_tiny_net
    from ignite.engine import Engine

    x, y = synthetic_data(8, seed=1)
    handler = AdversarialRobustnessHandler(
        trained_tiny_net(),
        attacks={"FGSM": {}, "Square": {"n_queries": 2}},
        eps=(2 / 255, 8 / 255),
        attack_eps={"FGSM": [2 / 255], "Square": [8 / 255]},
        check_eps=None,
        progress=False,
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([(x, y)])
    assert any("Square (black-box) ran at eps 8/255 but no white-box attack did" in line for line in handler.report)


@pytest.mark.slow
def test_bundle_logs_cost_progress_and_square_comparison(trained_run):
    out = trained_run
    attacks = "{'FGSM': {}, 'PGD': {'steps': 2}, 'Square': {'n_queries': 5}}"
    log = run_ok(bundle_cmd("bundles/chest_xray/evaluate.json", "--output_dir", str(out), *EVAL, "--attacks", attacks,
                            "--eps", "[0.01, 0.03]"))  # fmt: skip
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    # Square by the default attack_eps: only at the largest eps
    assert [(r["attack"], float(r["eps"])) for r in rows if r["role"] == "attack"] == [
        ("FGSM", 0.01), ("FGSM", 0.03), ("PGD", 0.01), ("PGD", 0.03), ("Square", 0.03)
    ]  # fmt: skip
    cost = log.index("cost of the robustness evaluation: 5 (attack, eps) runs")
    first_attack = log.index("attack FGSM eps 2.55/255 (1/5), batch 1/1")
    assert cost < first_attack
    assert "Square at eps 7.65/255 (n_queries=5): per image and eps no gradient, up to 9 forward passes" in log
    assert "attack PGD eps 7.65/255 (4/5), batch 1/1" in log and "attack Square eps 7.65/255 (5/5), batch 1/1" in log
    assert re.search(r"the first batch \(\d+ images\) took [\d.]+ s; 1 batch will take about", log)
    report = json.loads((out / "eval" / "robustness.json").read_text())["report"]
    assert any(line.startswith("eps 7.65/255: FGSM") and "| Square (black-box)" in line for line in report)


@pytest.mark.slow
def test_bundle_without_square_says_how_to_add_it(trained_run, tmp_path):
    """--attacks without Square: the log says why there is no black-box comparison and the override that
    adds it; that override, given as logged, runs Square at the largest eps."""
    out = copy_run(trained_run, tmp_path / "run")
    args = ["bundles/chest_xray/evaluate.json", "--output_dir", str(out), *EVAL, "--eps", "[0.03]"]
    log = run_ok(bundle_cmd(*args, "--attacks", "['FGSM']"))
    hint = next(line for line in log.splitlines() if "Square (black-box) not run" in line)
    assert "the attacks (FGSM) include no black-box attack" in hint
    # the override as the log gives it, handed to the CLI as the shell passes it on
    override = re.search(r'evaluate\.json --attacks "([^"]+)"', hint).group(1)
    assert override == "{'FGSM': {}, 'Square': {'n_queries': 100}}"
    # run as logged, with 2 queries instead of 100 to keep the test short
    run_ok(bundle_cmd(*args, "--attacks", override.replace("100", "2")))
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    assert [(r["attack"], float(r["eps"])) for r in rows if r["role"] == "attack"] == [("FGSM", 0.03), ("Square", 0.03)]


@pytest.mark.slow
def test_bundle_compare_with_reads_saved_results_only(trained_run, tmp_path):
    """--compare_with on a run with saved results: no attack runs, the other run needs only its
    robustness.json (no checkpoint, no data), the run's own robustness.png is left as it was, and the
    comparison goes to compare_<other>.png/.csv/.md."""
    own = copy_run(trained_run, tmp_path / "assimilated_run")
    base = dict(n=4, n_clean_correct=2, n_success=0, success_rate=0.0, seconds=1.0, variant="v", seed=0, epoch=1)
    saved = [dict(base, attack="clean", eps=0.0, eps_255=0.0, role="clean", n_correct=2, accuracy=0.5),
             dict(base, attack="FGSM", eps=0.03, eps_255=7.65, role="attack", n_correct=1, accuracy=0.25)]  # fmt: skip
    write_results(saved, own / "eval", "robustness", variant="v", seed=0, epoch=1, report=[])
    other = tmp_path / "vanilla_run" / "eval"
    write_results([dict(r, accuracy=0.5) for r in saved], other, "robustness", variant="v", seed=0, epoch=1, report=[])
    own_png = own / "eval" / "robustness.png"
    own_png.write_bytes(b"the run's own figure")
    mtime = os.stat(own_png).st_mtime_ns
    os.utime(own / "eval" / "robustness.json", ns=(mtime - 10**9, mtime - 10**9))  # the figure is newer

    log = run_ok(bundle_cmd("bundles/chest_xray/evaluate.json", "--output_dir", str(own), *EVAL,
                            "--compare_with", str(other.parent)))  # fmt: skip
    assert "no attack is run again" in log
    assert "cost of the robustness evaluation" not in log and "attack FGSM eps" not in log
    assert own_png.read_bytes() == b"the run's own figure" and os.stat(own_png).st_mtime_ns == mtime
    for ext in ("png", "csv", "md"):
        assert (own / "eval" / f"compare_vanilla_run.{ext}").is_file(), ext
    table = {r["attack"]: r for r in csv.DictReader(open(own / "eval" / "compare_vanilla_run.csv"))}
    assert float(table["FGSM"]["difference"]) == pytest.approx(-0.25)
    assert "| FGSM | attack | 7.65 | 0.2500 | 0.5000 | -0.2500 | 4 |" in log  # the table is logged too


def test_study_keeps_square_on_its_whole_grid(tmp_path, monkeypatch):
    """The study gives evaluate.json an explicit attack_eps (empty unless set), so the bundle's default (Square
    at the largest eps only) does not change a study's attacks."""
    import monai_assim.study as study

    specs = []

    def stop(spec):
        specs.append(spec)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(study, "run_job", stop)
    with pytest.raises(KeyboardInterrupt):
        study.run_study("chest_xray", output_dir=tmp_path, arms=["vanilla"])
    assert specs[0]["eval_override"]["attack_eps"] == {}
    assert specs[0]["eval_override"]["attack_budget"] == "standard"  # the strong headline by default
    assert specs[0]["eval_override"]["attacks"] == {"FGSM": {}, "BIM": {}, "MIFGSM": {}, "PGD": {}}
    with pytest.raises(KeyboardInterrupt):
        study.run_study("chest_xray", output_dir=tmp_path, arms=["vanilla"], attack_eps={"Square": [8 / 255]})
    assert specs[1]["eval_override"]["attack_eps"] == {"Square": [8 / 255]}


def test_default_plan_holds_the_strong_members():
    """evaluate.json: the paper's four as curves, the standard ensemble and its convergence check at every eps."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "chest_ct" / "evaluate.json"))
    parser["output_dir"] = "unused"
    assert parser.get_parsed_content("attacks") == {"FGSM": {}, "BIM": {}, "MIFGSM": {}, "PGD": {}}
    assert parser.get_parsed_content("attack_budget") == "standard"
    kwargs = {
        k: parser.get_parsed_content(f"robustness#{k}") for k in ("attacks", "eps", "attack_budget", "ensemble_eps")
    }
    handler = AdversarialRobustnessHandler(**kwargs, convergence_check=parser.get_parsed_content("convergence_check"))
    plan = {(role, name): [g[0] for g in groups] for role, name, _, groups in handler.plan.runs}
    eps = [k / 255 for k in range(1, 9)]
    for member, kw in ATTACK_BUDGETS["standard"].items():
        assert plan[("ensemble", member)] == eps
        assert handler.ensemble[member] == kw
    assert handler.ensemble["APGD"]["steps"] == 100 and handler.ensemble["APGDMargin"]["steps"] == 100
    assert handler.ensemble["APGD"]["n_restarts"] >= 2 and ("check_convergence", "APGD") in plan
    assert handler.worst_case and ("check", "PGD") in plan


def test_bundle_takes_a_convergence_check_of_its_own():
    """evaluate.json's convergence_check may be overridden with members of one's own (the study's option)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "chest_ct" / "evaluate.json"))
    own = {"APGD": {"loss": "ce", "steps": 200, "n_restarts": 1}}
    parser["convergence_check"] = '$dict(APGD=dict(loss="ce", steps=200, n_restarts=1))'  # as docs/bundles.md writes it
    kwargs = {
        k: parser.get_parsed_content(f"robustness#{k}") for k in ("attacks", "attack_budget", "convergence_check")
    }
    assert AdversarialRobustnessHandler(**kwargs).plan.convergence == own


@pytest.mark.slow
def test_bundle_default_evaluation_reports_the_headline(trained_run, tmp_path):
    """evaluate.json with its ensemble wiring (the quick budget, one eps and two test images to keep it short; the
    default plan is checked above): ensemble rows, worst case, convergence check; the report and the JSON name them."""
    out = copy_run(trained_run, tmp_path / "run")
    splits_path = out / "datalists" / "splits.json"  # one test image per class (the convergence check's 2 x 200
    splits = json.loads(splits_path.read_text())  # APGD steps cost about 1 s per image on a 2-core CPU)
    splits["test"] = [next(d for d in splits["test"] if d["label"] == label) for label in (0, 1)]
    splits_path.write_text(json.dumps(splits))
    best = out / "checkpoints" / "best.pt"  # a checkpoint of a later epoch than the evaluator's own epoch (1)
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    torch.save({**ckpt, "epoch": 7}, best)
    log = run_ok(bundle_cmd("bundles/chest_xray/evaluate.json", "--output_dir", str(out), "--backbone", "mobilenet_v2",
                            "--eps", "[0.03]", "--attack_budget", "quick"))  # fmt: skip
    rows = list(csv.DictReader(open(out / "eval" / "robustness.csv")))
    roles = [(r["role"], r["attack"]) for r in rows]
    for member in ("APGD", "APGDMargin", "Square"):
        assert ("ensemble", member) in roles
    assert ("worst", "worst") in roles and ("check_convergence", "APGD") in roles
    assert {int(r["n"]) for r in rows} == {2}
    assert {int(r["epoch"]) for r in rows} == {7}  # the evaluated checkpoint's epoch
    doc = json.loads((out / "eval" / "robustness.json").read_text())
    assert doc["epoch"] == 7
    assert doc["headline"]["budget"] == "quick" and doc["headline"]["upper_bound"] is True
    assert set(doc["headline"]["ensemble"]) == {"APGD", "APGDMargin", "Square"}
    assert any(line.startswith("headline robust accuracy: per image, the worst case over") for line in doc["report"])
    assert "quick ensemble (APGD-CE 10 steps, APGD-margin 10 steps, Square 100 queries)" in log
    assert "QUICK attack budget: the worst-case figures are UPPER BOUNDS" in log
