"""
What a user meets around a run (issue 27): the checks of a run's inputs in the order that names the real
problem, an unwritable output folder, an unreadable checkpoint, one writer per run folder, the settings of a
run followed by evaluate/inference/export.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_run_setup import setup

from monai_assim.data import make_synthetic_dataset
from monai_assim.errors import MissingInputError, UserInputError


@pytest.fixture
def data(tmp_path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", "chest_xray", n_per_class=4, size=16, seed=0)


# ------------------------------------------------------------------------------------------- item 5: check order
def test_data_path_error_comes_before_missing_weights(tmp_path, data, monkeypatch):
    """A typo in --dataset_dir with --pretrained imagenet offline: the data error, not 'download the weights'."""
    import monai_assim.networks

    def no_weights(name):
        raise MissingInputError(f"ImageNet weights for {name} are not cached and could not be downloaded.")

    monkeypatch.setattr(monai_assim.networks, "imagenet_weights_file", no_weights)
    typo = tmp_path / "dta"
    with pytest.raises(MissingInputError, match=rf"data set folder {typo} does not exist"):
        setup(tmp_path / "run", typo, pretrained="imagenet")
    (data / "test" / "NORMAL").rename(data / "test" / "NORMALS")  # a layout problem is a data problem too
    with pytest.raises(UserInputError, match="missing class folder"):
        setup(tmp_path / "run", data, pretrained="imagenet")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ item 3: unwritable output folder
def test_unwritable_output_dir_is_an_input_error(tmp_path, data):
    """--output_dir that cannot be created or written: a user error naming it, raised with the other input checks."""
    from monai_assim.bundle import check_writable_dir

    forbidden = Path("/proc/forbidden/run")
    with pytest.raises(UserInputError, match=rf"output folder {forbidden} cannot be created or written") as err:
        setup(forbidden, data)
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


# ------------------------------------------------------------------------------- item 2: unreadable checkpoint
def _truncate(path: Path, size: int = 5000) -> None:
    path.write_bytes(path.read_bytes()[:size])


def test_truncated_checkpoint_is_named(tmp_path, data):
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
        setup(tmp_path / "run", data, resume=True)
    assert "--output_dir" in err.value.hint
