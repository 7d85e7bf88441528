"""
What a bundle command reads from a run's folder (monai_assim/bundle/run_files.py): an unwritable output
folder and an unreadable checkpoint are user errors that name them, and the run's settings (network,
classes, output map) follow it to evaluate and inference, where an explicit setting that conflicts with the
run's is named with both values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.run_setup import setup

from monai_assim.errors import UserInputError, find_user_error


def test_unwritable_output_dir_is_an_input_error(tmp_path, tiny_chest_xray):
    """--output_dir that cannot be created or written: a user error naming it, raised with the other input checks."""
    from monai_assim.bundle import check_writable_dir

    forbidden = Path("/proc/forbidden/run")
    with pytest.raises(UserInputError, match=rf"output folder {forbidden} cannot be created or written") as err:
        setup(forbidden, tiny_chest_xray)
    assert "--output_dir" in err.value.hint
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserInputError, match="is a file, not a folder") as err:
        check_writable_dir(a_file / "run", "--predictions_dir")
    assert "--predictions_dir" in err.value.hint
    # a writable folder passes, and the check leaves nothing behind: no folder made, no probe file
    fresh = tmp_path / "new" / "run"
    assert check_writable_dir(fresh) == str(fresh) and not (tmp_path / "new").exists()
    assert check_writable_dir(tmp_path) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "data"]


def _truncate(path: Path, size: int = 5000) -> None:
    path.write_bytes(path.read_bytes()[:size])


def test_truncated_checkpoint_is_named(tmp_path, tiny_chest_xray):
    """best.pt cut to 5 kB: a user error naming the file, 'unreadable', and the way out (--checkpoint last)."""
    import torch

    from monai_assim.bundle import checkpoint_path

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    state = {"network": {"w": torch.zeros(4000)}, "epoch": 1}
    for name in ("best.pt", "last.pt"):
        torch.save(state, ckpts / name)
    _truncate(ckpts / "best.pt")
    assert checkpoint_path(tmp_path / "run", "last") == str(ckpts / "last.pt")
    with pytest.raises(
        UserInputError, match=rf"checkpoint {ckpts / 'best.pt'} is unreadable \(truncated or corrupt\?\)"
    ) as err:
        checkpoint_path(tmp_path / "run", "best")
    assert "--checkpoint last" in err.value.hint and "retrain" in err.value.hint
    assert "\n" not in err.value.message
    # a resume from a corrupt last.pt says so too, before anything is written
    _truncate(ckpts / "last.pt")
    with pytest.raises(UserInputError, match=rf"checkpoint {ckpts / 'last.pt'} is unreadable") as err:
        setup(tmp_path / "run", tiny_chest_xray, resume=True)
    assert "--output_dir" in err.value.hint


def _fake_run(run: Path, images: list[Path], **settings) -> Path:
    """A run folder as evaluate/inference read it: summary, split lists and best.pt of an untrained network."""
    import json

    import torch

    from monai_assim.networks import AssimilationNet

    (run / "datalists").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    settings = {"image_size": 32, "mean": None, "std": None, "assimilation_map": "sigmoid", **settings}
    summary = {"modality": "chest_xray", "settings": settings, "class_names": ["normal", "pneumonia"]}
    (run / "run_summary.json").write_text(json.dumps(summary))
    test = [{"image": str(p), "label": i % 2} for i, p in enumerate(images)]
    (run / "datalists" / "splits.json").write_text(json.dumps({"train": [], "validation": [], "test": test}))
    kwargs = {k: settings[k] for k in ("variant", "backbone", "texture_features", "color_features") if k in settings}
    net = AssimilationNet(num_classes=2, pretrained="none", output_map=settings["assimilation_map"], **kwargs)
    torch.save({"network": net.state_dict()}, run / "checkpoints" / "best.pt")
    return run


@pytest.mark.parametrize(
    "settings",
    [
        {"variant": "vanilla", "backbone": "mobilenet_v2"},
        {"variant": "assimilated", "backbone": "mobilenet_v2", "texture_features": 4, "color_features": 8},
    ],
)
def test_evaluate_and_inference_build_the_runs_network(tmp_path, tiny_chest_xray, settings):
    """--output_dir alone: the network of the run (variant, backbone, T/C sizes, classes), its weights load."""
    import torch
    from helpers.mixed_formats import parse

    images = sorted((tiny_chest_xray / "test").rglob("*.jpeg"))[:2]
    run = _fake_run(tmp_path / "run", images, **settings)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["network"]
    for config in ("evaluate.json", "inference.json"):
        parser = parse(config, output_dir=str(run))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(state)  # strict: "Error(s) in loading state_dict" when the network is not the run's
        assert (net.variant, net.backbone_name, net.num_classes) == (settings["variant"], "mobilenet_v2", 2)
    assert parser.get_parsed_content("prediction_saver").class_names == ["normal", "pneumonia"]
    onehot = parse("evaluate.json", output_dir=str(run)).get_parsed_content("postprocessing").transforms[-1]
    assert list(onehot.to_onehot) == [2]  # the run's class count


def test_a_run_older_than_the_output_map_evaluates_with_the_clamp(tmp_path, tiny_chest_xray):
    """A run summary without assimilation_map (written before the setting) and its checkpoint: the clamp map."""
    import json

    import torch
    from helpers.mixed_formats import parse

    images = sorted((tiny_chest_xray / "test").rglob("*.jpeg"))[:2]
    run = _fake_run(tmp_path / "run", images, variant="assimilated", backbone="mobilenet_v2", assimilation_map="clamp")
    summary = json.loads((run / "run_summary.json").read_text())
    del summary["settings"]["assimilation_map"]
    (run / "run_summary.json").write_text(json.dumps(summary))
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["network"]
    state = {k: v for k, v in state.items() if not k.endswith("output_map_id")}  # as written before the maps
    for config in ("evaluate.json", "inference.json"):
        net = parse(config, output_dir=str(run)).get_parsed_content("network_def")
        assert net.texture.output_map == net.color.output_map == "clamp"
        net.load_state_dict(state)


def test_explicit_setting_that_conflicts_with_the_run(tmp_path, tiny_chest_xray):
    """--backbone resnet18 against a mobilenet_v2 run: one line naming both values and the summary."""
    from helpers.mixed_formats import parse

    run = _fake_run(tmp_path / "run", [], variant="vanilla", backbone="mobilenet_v2")
    for config in ("evaluate.json", "inference.json"):
        with pytest.raises(Exception) as err:
            parse(config, output_dir=str(run), backbone="resnet18").get_parsed_content("network_def")
        error = find_user_error(err.value)
        assert error is not None and "\n" not in error.message, err.value
        assert error.message == (
            f"--backbone resnet18 conflicts with the run's backbone mobilenet_v2 ({run / 'run_summary.json'})."
        )
        assert "leave --backbone out" in error.hint
    # equal values are fine, and the other settings of the network too
    same = parse("evaluate.json", output_dir=str(run), variant="vanilla", backbone="mobilenet_v2", image_size=32)
    assert same.get_parsed_content("network_def").backbone_name == "mobilenet_v2"
    with pytest.raises(Exception) as err:
        parse("inference.json", output_dir=str(run), image_size=64).get_parsed_content("spatial_size")
    assert "--image_size 64 conflicts with the run's image_size 32" in find_user_error(err.value).message
