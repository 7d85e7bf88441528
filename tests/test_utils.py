"""monai_assim.utils: the one home of the helpers that several modules share."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_assim.utils import (
    LUMA_BT601,
    as_class_indices,
    atomic_write_csv,
    atomic_write_text,
    get_rank,
    rgb_to_grey,
    unwrap_module,
)


def test_rank_without_process_group():
    assert get_rank() == 0


def test_unwrap_module_through_every_wrapper():
    net = nn.Linear(2, 2)
    compiled = torch.compile(net)  # compiles lazily: nothing is compiled until it is called
    assert unwrap_module(net) is net
    assert unwrap_module(nn.DataParallel(net)) is net
    assert unwrap_module(compiled) is net
    assert unwrap_module(nn.DataParallel(compiled)) is net
    # compiled=False stops at the compiled module (state dicts keep its "_orig_mod." keys for resuming)
    assert unwrap_module(nn.DataParallel(compiled), compiled=False) is compiled


def test_atomic_write_text(tmp_path):
    path = tmp_path / "sub" / "a.json"
    assert atomic_write_text(path, "first\r\n") == path
    assert path.read_bytes() == b"first\r\n"  # newlines as given
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    atomic_write_text(path, "second")
    assert path.read_text() == "second"

    with pytest.raises(TypeError):
        atomic_write_text(path, 3)  # fails inside the write: the old file stays, no temporary file is left
    assert path.read_text() == "second" and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_atomic_write_csv(tmp_path):
    """Header, sequence and mapping rows (a missing column empty); a failing row generator leaves the old file."""
    import csv

    path = tmp_path / "out.csv"
    atomic_write_csv(path, ("file", "label"), [["a, b.png", 1], {"file": "c.png"}])
    assert path.read_text() == 'file,label\n"a, b.png",1\nc.png,\n'
    assert list(csv.DictReader(open(path))) == [{"file": "a, b.png", "label": "1"}, {"file": "c.png", "label": ""}]
    atomic_write_csv(path, ("x",), [[1]], lineterminator="\r\n")
    assert path.read_bytes() == b"x\r\n1\r\n"

    def failing():
        yield [2]
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        atomic_write_csv(path, ("x",), failing())
    assert path.read_bytes() == b"x\r\n1\r\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_as_class_indices():
    expected = torch.tensor([2, 0, 1])
    for labels in (
        [2, 0, 1],
        torch.tensor([[2.0], [0.0], [1.0]]),
        torch.eye(3)[[2, 0, 1]],
        MetaTensor(torch.tensor([2, 0, 1])),
    ):
        out = as_class_indices(labels, 3, batch_size=3)
        assert type(out) is torch.Tensor and out.dtype == torch.long
        assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="B=2"):
        as_class_indices([0, 1, 1], 3, batch_size=2)
    with pytest.raises(ValueError, match="whole numbers"):
        as_class_indices(torch.tensor([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match="labels must lie"):
        as_class_indices(torch.tensor([0, 3]), 3)


def test_one_luma_constant():
    import monai_assim.data.transforms as data_transforms
    import monai_assim.glcm as glcm
    import monai_assim.losses.glcm_loss as glcm_loss
    import monai_assim.study as study

    assert LUMA_BT601 == (0.299, 0.587, 0.114)
    # the 0.1.0 aliases are gone: one name per constant and helper
    assert not hasattr(data_transforms, "LUMA_WEIGHTS") and "LUMA_BT601" not in glcm_loss.__all__
    assert not hasattr(glcm, "_check_features") and not hasattr(study, "RUNS")


def test_rgb_to_grey_is_the_bt601_luma():
    rgb = torch.rand(2, 4, 5, 6, requires_grad=True)
    grey = rgb_to_grey(rgb)
    expected = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
    assert grey.shape == (2, 1, 5, 6) and torch.allclose(grey, expected)
    assert torch.allclose(rgb_to_grey(rgb[0], dim=0), expected[0])
    grey.sum().backward()
    assert torch.allclose(rgb.grad[0, :, 0, 0], torch.tensor([0.299, 0.587, 0.114, 0.0]))
