"""Two gloo ranks (two processes, FSDP2 over world size 2 on CPU) against one rank on the whole
batch: both ranks receive the driver's identical anchor and coefficient, and the accumulated,
rank-averaged SIREN update gradient equals the single-rank gradient on the concatenated batch
(docs/methods.md §7; the micro-batch weights of siren_verl.methods.loss)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "two_rank_child.py")


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _spawn(rank, world, port, model_dir, work):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")}
    return subprocess.Popen(
        [sys.executable, CHILD, str(rank), str(world), port, model_dir, str(work)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait(procs):
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_rank(tiny_model_dir, tmp_path):
    _wait([_spawn(0, 1, _port(), tiny_model_dir, tmp_path)])
    port = _port()
    _wait([_spawn(r, 2, port, tiny_model_dir, tmp_path) for r in (0, 1)])

    driver = torch.load(tmp_path / "driver.pt")
    single = json.loads((tmp_path / "received_w1_r0.json").read_text())
    ranks = [json.loads((tmp_path / f"received_w2_r{r}.json").read_text()) for r in (0, 1)]
    step = driver["step"]
    assert step["anchor"] is not None and step["coef"] == 1.0
    # every micro-batch of every rank received exactly the driver's values
    assert len(ranks[0]["received"]) == len(ranks[1]["received"]) == 2
    for report in [single, *ranks]:
        assert all(r == step for r in report["received"])
    # reg_loss metric: SUM over a rank's micro-batches; verl averages it over ranks
    assert (ranks[0]["reg_loss"] + ranks[1]["reg_loss"]) / 2 == pytest.approx(single["reg_loss"], rel=1e-5)

    g1 = torch.load(tmp_path / "grads_w1_r0.pt")
    g2 = [torch.load(tmp_path / f"grads_w2_r{r}.pt") for r in (0, 1)]
    assert set(g1) == set(g2[0]) == set(g2[1])
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g1.values()))
    assert norm > 1e-4
    for name in g1:
        torch.testing.assert_close(g2[0][name], g2[1][name])  # the all-gathered gradient is the same on both
        torch.testing.assert_close(g2[0][name], g1[name], atol=1e-6 * float(norm), rtol=1e-4)
