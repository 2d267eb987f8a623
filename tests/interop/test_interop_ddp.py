"""``examples/ddp_train.py`` under ``torchrun`` with two CPU processes (gloo): the ranks' flows
stay identical and the loss falls.

Slow-ish (about 10 s of CPU, nearly all of it three Python processes importing torch: the
launcher and two workers); the training itself takes under a second.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ddp_train.py"

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available in this build",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_example_with_two_processes(tmp_path: pathlib.Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(EXAMPLE),
        "--smoke",
        "--steps=30",
        "--backend=gloo",  # CPU even where CUDA is available
        f"--report={tmp_path}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DDP: 2 processes, backend gloo" in result.stdout
    reports = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in reports)
    # the ranks took identical steps: every parameter and buffer is bitwise equal
    s0, s1 = reports[0]["state"], reports[1]["state"]
    assert s0.keys() == s1.keys() and len(s0) > 0
    for key in s0:
        assert torch.equal(s0[key], s1[key]), key
    # ... on different data (their local losses differ) ...
    assert reports[0]["local_losses"] != reports[1]["local_losses"]
    # ... and the loss averaged over the ranks fell
    losses = reports[0]["losses"]
    assert losses == reports[1]["losses"] and len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses
