"""The repository as files: no absolute path of the machine that wrote a file is committed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: the start of an absolute path of a particular machine (home folders, work and mount points, Windows users);
#: written in parts so that this file does not match itself.
MACHINE_PATH = re.compile(
    r"(?:^|[^\w.~/])/(?:" + "|".join(("wo" + "rk", "ho" + "me", "ro" + "ot", "Us" + "ers", "mnt", "scratch")) + r")/"
    r"|[A-Za-z]:\\" + "Us" + r"ers\\"
)


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in out.split("\0") if name]


def test_machine_path_pattern():
    for text in ("--pretrained /wo" + "rk/shared/w.pt", '"/ho' + 'me/me/data"', "C:\\Us" + "ers\\me\\x"):
        assert MACHINE_PATH.search(text), text
    for text in ("../shared/w.pt", "bundles/chest_xray/runs/x", "https://example.org/home/x", "a/work/b"):
        assert not MACHINE_PATH.search(text), text


def test_no_absolute_machine_paths():
    """Text files of the repository name their paths relative to it (data, weights, outputs), never absolutely."""
    found = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (images)
        for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(REPO)}:{i}: {line.strip()[:120]}")
    assert not found, "absolute paths in the repository:\n" + "\n".join(found[:40])
