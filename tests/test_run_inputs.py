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
