"""AdversarialRobustnessHandler under torch.distributed (gloo, 2 CPU processes): counts are all-reduced."""

from __future__ import annotations

import json
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.tiny_nets import TinyNet, synthetic_data, trained_tiny_net
from ignite.engine import Engine

from monai_assim.handlers import AdversarialRobustnessHandler

BATCH = 8
EPS = (2 / 255, 8 / 255)
ATTACKS = {"FGSM": {}, "BIM": {"steps": 3}}  # deterministic: no random start, so ranks and seeds do not matter


def _metrics(net: torch.nn.Module, batches: list, output_dir=None) -> dict:
    handler = AdversarialRobustnessHandler(
        net, attacks=ATTACKS, eps=EPS, check_eps=None, progress=False, output_dir=output_dir
    )
    engine = Engine(lambda engine, batch: None)
    handler.attach(engine)
    engine.run(batches)
    return dict(engine.state.metrics), handler.rows


def _worker(rank: int, world: int, port: int, state_path: str, data_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    # a process group created with torch.distributed, as torchrun + MONAI bundles do; ignite finds it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        net = TinyNet()
        net.load_state_dict(torch.load(state_path, weights_only=True))
        net.eval()
        x, y = torch.load(data_path, weights_only=True)
        batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)][rank::world]
        metrics, rows = _metrics(net, batches)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump({"metrics": metrics, "n": rows[0]["n"]}, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_counts_all_reduced_over_two_processes(tmp_path):
    net = trained_tiny_net()
    x, y = synthetic_data(48, seed=5)
    state_path, data_path, out_path = tmp_path / "net.pt", tmp_path / "data.pt", tmp_path / "rank0.json"
    torch.save(net.state_dict(), state_path)
    torch.save((x, y), data_path)

    reference, _ = _metrics(net, [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    mp.spawn(_worker, args=(2, _free_port(), str(state_path), str(data_path), str(out_path)), nprocs=2, join=True)
    got = json.loads(out_path.read_text())

    assert got["n"] == len(x)  # every sample counted once, across both ranks
    assert got["metrics"] == {k: reference[k] for k in got["metrics"]}
    assert set(got["metrics"]) == set(reference)
    # the attacks did something, so equality is not trivially 1.0 == 1.0
    assert min(v for k, v in reference.items() if k.endswith("_acc")) < reference["adv_clean_acc"]
