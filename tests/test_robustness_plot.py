"""plot_robustness on result files written by the real handler: valid PNGs, both figure kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny_nets import synthetic_data, trained_tiny_net
from ignite.engine import Engine
from PIL import Image

from monai_assim.handlers import AdversarialRobustnessHandler
from monai_assim.visualize import load_robustness_rows, plot_robustness


@pytest.fixture(scope="module")
def result_dirs(tmp_path_factory):
    """Two real handler runs on the trained net, written under the two variant names."""
    x, y = synthetic_data(16, seed=3)
    dirs = {}
    for variant, net in (("vanilla", trained_tiny_net()), ("assimilated", trained_tiny_net())):
        out = tmp_path_factory.mktemp(variant)
        engine = Engine(lambda e, b: None)
        AdversarialRobustnessHandler(
            net,
            attacks={"FGSM": {}, "PGD": {"steps": 3}},
            eps=(2 / 255, 4 / 255, 8 / 255),
            output_dir=out,
            variant=variant,
            check_eps=None,
            progress=False,
        ).attach(engine)
        engine.run([(x, y)])
        dirs[variant] = out
    return dirs


def test_rows_parse_back_from_csv_and_json(result_dirs):
    d = result_dirs["vanilla"]
    csv_rows, json_rows = load_robustness_rows(d / "robustness.csv"), load_robustness_rows(d / "robustness.json")
    assert len(csv_rows) == len(json_rows) == 1 + 2 * 3
    for a, b in zip(csv_rows, json_rows):
        assert a["attack"] == b["attack"] and a["eps"] == b["eps"] and a["accuracy"] == b["accuracy"]
    with pytest.raises(ValueError, match=".csv or .json"):
        load_robustness_rows(d / "robustness.txt")
    with pytest.raises(ValueError, match="lacks"):
        load_robustness_rows([{"attack": "PGD"}])


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_single_and_paper_figure_are_valid_pngs(result_dirs, tmp_path, suffix):
    van = result_dirs["vanilla"] / f"robustness.{suffix}"
    assim = result_dirs["assimilated"] / f"robustness.{suffix}"
    single = plot_robustness(van, tmp_path / "single.png")
    paper = plot_robustness(assim, tmp_path / "fig" / "paper.png", vanilla=van)
    for path in (single, paper):
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
            pixels = torch.from_numpy(np.array(im.convert("L")))
            assert pixels.float().std() > 5  # something was drawn
    # the paper figure has two curves per attack: more ink than the single one
    with Image.open(single) as a, Image.open(paper) as b:
        ink = [(torch.from_numpy(np.array(i.convert("L"))) < 200).sum() for i in (a, b)]
    assert ink[1] > ink[0]


def test_loaded_rows_accepted(tmp_path, result_dirs):
    rows = load_robustness_rows(result_dirs["vanilla"] / "robustness.json")
    path = plot_robustness(rows, tmp_path / "rows.png", title="rows")
    with Image.open(path) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="no attack rows"):
        plot_robustness([r for r in rows if r["attack"] == "clean"], tmp_path / "empty.png")


def test_plot_worst_case_by_arm(tmp_path):
    """One line per arm from its clean and worst-case aggregate rows; no worst-case rows is an error."""
    import matplotlib.image as mpimg
    import pytest

    from monai_assim.visualize import plot_worst_case_by_arm

    def row(arm, attack, eps, role, mean):
        return {"arm": arm, "attack": attack, "eps_255": eps, "role": role, "mean": mean, "min": mean, "max": mean}

    rows = [row(a, "clean", 0.0, "clean", 0.9) for a in ("vanilla", "assimilated")]
    rows += [row("vanilla", "worst", e, "worst", 0.0) for e in (1.0, 2.0)]
    rows += [row("assimilated", "worst", e, "worst", m) for e, m in ((1.0, 0.5), (2.0, 0.2))]
    rows += [row("vanilla", "PGD", 1.0, "attack", 0.3)]
    path = plot_worst_case_by_arm(rows, tmp_path / "worst.png")
    image = mpimg.imread(path)[..., :3]
    coloured = (image.max(axis=-1) - image.min(axis=-1)) > 0.3  # the two tab10 lines, not grey axes or text
    assert coloured.mean() > 0.002
    with pytest.raises(ValueError, match="worst_case"):
        plot_worst_case_by_arm([r for r in rows if r["attack"] != "worst"], tmp_path / "none.png")
