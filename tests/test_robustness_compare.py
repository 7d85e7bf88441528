"""Comparing two runs' saved robustness results: read from the JSON without attacking,
written to files of their own, identical curves kept visible."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time

import pytest
from PIL import Image

from monai_assim.robustness_results import write_results
from monai_assim.visualize import (
    COMPARE_COLUMNS,
    compare_robustness,
    needs_evaluation,
    plot_robustness,
    results_run_name,
    robustness_lines,
    robustness_results_path,
    write_robustness_figures,
)


def rows(acc: dict[str, list[float]], clean: float = 0.9, n: int = 20) -> list[dict]:
    """Result rows as the handler writes them: clean, each attack at 2, 4, 8/255, and the large-eps check."""
    base = dict(n=n, n_clean_correct=round(clean * n), n_success=0, success_rate=0.0, seconds=0.1, variant="v")
    out = [dict(base, attack="clean", eps=0.0, eps_255=0.0, role="clean", n_correct=0, accuracy=clean)]
    for attack, values in acc.items():
        for k, a in zip((2, 4, 8), values):
            out.append(dict(base, attack=attack, eps=k / 255, eps_255=k, role="attack", n_correct=0, accuracy=a))
    out.append(dict(base, attack="PGD", eps=64 / 255, eps_255=64, role="check", n_correct=0, accuracy=0.0))
    return out


SAME = {"FGSM": [0.5, 0.3, 0.1], "PGD": [0.2, 0.0, 0.0], "BIM": [0.2, 0.0, 0.0]}


def make_run(root, name: str, acc=SAME, clean: float = 0.9):
    """A run folder with only its saved eval results (no checkpoint, no data): <root>/<name>/eval/."""
    eval_dir = root / name / "eval"
    write_results(rows(acc, clean), eval_dir, "robustness", variant="v", seed=0, epoch=1, report=[])
    return root / name


def test_identical_curves_stay_distinguishable():
    lines = robustness_lines([("a", rows(SAME)), ("b", rows(SAME))])
    assert len(lines) == 2 * 3
    xs = [tuple(line["x"]) for line in lines]
    assert len(set(xs)) == len(xs)  # no two lines at the same x, although PGD and BIM of both runs are equal
    for attack in SAME:
        a, b = (next(line for line in lines if line["attack"] == attack and line["set"] == s) for s in (0, 1))
        assert a["y"] == b["y"] and a["eps"] == b["eps"] == [0.0, 2.0, 4.0, 8.0]
        assert a["x"] != b["x"] and (a["marker"], a["linestyle"], a["filled"]) != (
            b["marker"],
            b["linestyle"],
            b["filled"],
        )
    shifts = sorted(line["shift"] for line in lines)
    assert shifts[-1] - shifts[0] <= 0.5 * 2.0 + 1e-9  # within half the smallest eps gap (0 -> 2)
    assert abs(sum(shifts)) < 1e-9  # centred on the true eps
    assert all(line["x"] == line["eps"] for line in robustness_lines([("a", rows(SAME))], offset=0))


@pytest.mark.parametrize("form", ["run", "eval", "json"])
def test_compare_reads_saved_results_and_writes_its_own_files(tmp_path, form):
    own = make_run(tmp_path, "assimilated_resnet18")
    other = make_run(tmp_path / "elsewhere", "vanilla_resnet18", {"FGSM": [0.4, 0.2, 0.0], "PGD": [0.1, 0.0, 0.0]}, 0.8)
    given = {"run": other, "eval": other / "eval", "json": other / "eval" / "robustness.json"}[form]
    assert robustness_results_path(given) == other / "eval" / "robustness.json"
    assert results_run_name(given) == "vanilla_resnet18"
    paths = compare_robustness(own, given)
    eval_dir = own / "eval"
    assert paths == {k: str(eval_dir / f"compare_vanilla_resnet18.{k}") for k in ("csv", "md", "png")}
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG"
    table = list(csv.DictReader(open(paths["csv"])))
    assert tuple(table[0]) == COMPARE_COLUMNS
    by_key = {(r["attack"], r["role"], float(r["eps_255"])): r for r in table}
    assert float(by_key[("clean", "clean", 0.0)]["difference"]) == pytest.approx(0.1)
    assert float(by_key[("FGSM", "attack", 4.0)]["accuracy_other"]) == 0.2
    assert by_key[("BIM", "attack", 2.0)]["accuracy_other"] == ""  # only this run has BIM
    assert ("PGD", "check", 64.0) in by_key  # the check the plot leaves out is in the table
    md = open(paths["md"]).read()
    assert (
        "| assimilated_resnet18 | vanilla_resnet18 | difference |" in md
        and "| FGSM | attack | 2 | 0.5000 | 0.4000 | +0.1000 |" in md
    )


def test_compare_leaves_the_runs_own_figure_alone(tmp_path, caplog):
    own = make_run(tmp_path, "run_a")
    other = make_run(tmp_path, "run_b")
    own_png = own / "eval" / "robustness.png"
    write_robustness_figures(own / "eval")  # evaluate.json without compare_with: the run's own figure
    before = (own_png.read_bytes(), os.stat(own_png).st_mtime_ns)
    time.sleep(0.01)
    with caplog.at_level(logging.INFO):
        written = write_robustness_figures(own / "eval", compare_with=other)
    assert (own_png.read_bytes(), os.stat(own_png).st_mtime_ns) == before
    assert str(own_png) not in written and (own / "eval" / "compare_run_b.png").is_file()
    assert any(m.startswith("| FGSM | attack | 2 |") for m in caplog.messages)  # the table is logged
    # results newer than the figure (a fresh evaluation before the comparison): the figure is redrawn
    shutil.copy(own / "eval" / "robustness.json", own / "eval" / "robustness.json.tmp")
    os.replace(own / "eval" / "robustness.json.tmp", own / "eval" / "robustness.json")
    assert str(own_png) in write_robustness_figures(own / "eval", compare_with=other)


def test_needs_evaluation_reads_saved_results(tmp_path, caplog):
    other = make_run(tmp_path, "other")
    fresh = tmp_path / "fresh" / "eval"
    assert needs_evaluation(fresh) and needs_evaluation(fresh, compare_with=other)  # nothing saved yet
    own = make_run(tmp_path, "own")
    with caplog.at_level(logging.INFO):
        assert not needs_evaluation(own / "eval", compare_with=other / "eval" / "robustness.json")
    assert any("no attack is run again" in m for m in caplog.messages)
    assert needs_evaluation(own / "eval")  # without a comparison: evaluate as always
    with pytest.raises(FileNotFoundError, match="does not exist"):
        needs_evaluation(own / "eval", compare_with=tmp_path / "typo")  # before any attack
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved robustness results"):
        needs_evaluation(own / "eval", compare_with=tmp_path / "empty")


def test_paper_figure_keeps_its_labels(tmp_path):
    """plot_robustness(vanilla=...) still draws the paper's figure, now with the shift and two markers."""
    path = plot_robustness(rows(SAME), tmp_path / "paper.png", vanilla=rows(SAME))
    with Image.open(path) as im:
        assert im.format == "PNG"
    labels = [line["label"] for line in robustness_lines([("assimilated", rows(SAME)), ("vanilla", rows(SAME))])]
    assert "PGD (assimilated)" in labels and "PGD (vanilla)" in labels
