"""Train a normalizing flow on two moons with DistributedDataParallel, one process per device.

Run from the repository root::

    torchrun --nproc_per_node=2 examples/ddp_train.py            # 2 processes (CPU: gloo)
    torchrun --nproc_per_node=2 examples/ddp_train.py --smoke    # a few seconds
    python examples/ddp_train.py --smoke                         # one process, no launcher

The backend is NCCL when CUDA is available (one GPU per process, ``LOCAL_RANK``) and gloo on
CPU; ``--backend`` overrides it. Every rank starts from the same seed, draws its own batches of
fresh two-moons points, and takes the optimiser step on gradients that DDP averages over the
ranks, so the flows stay identical while each step sees ``world_size`` times more data.

Two things to know when using flowtorch with DDP:

* DDP averages gradients only for computations that go through the wrapped module's
  ``forward``. A ``Flow``'s ``forward`` samples (``flow()`` is ``flow.rsample()``), so for
  maximum likelihood the script wraps :class:`NegLogLikelihood`, whose ``forward`` is the loss.
* ``flow.to(device)`` moves the base distribution's tensors as well as the parameters.

With ``--report DIR`` each rank writes ``DIR/rank{r}.pt`` (its final ``state_dict`` and the losses)
so that a test can check that the ranks agree. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as torch_dist
from _data import make_two_moons
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import flowtorch.distributions as dist
from flowtorch.recipes import MAF


class NegLogLikelihood(nn.Module):
    """``forward(x)`` is the mean negative log-likelihood of ``x`` under ``flow``: the module DDP
    wraps, so that the gradients of the loss are averaged across ranks."""

    def __init__(self, flow: dist.Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.flow.log_prob(x).mean()


def build_flow(layers: int, hidden: int, device: torch.device) -> dist.Flow:
    """A masked autoregressive flow on a 2-D standard normal, moved to ``device``."""
    normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    flow = dist.Flow(
        torch.distributions.Independent(normal, 1), MAF(layers=layers, hidden_dims=(hidden, hidden))
    )
    return flow.to(device)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(backend: str) -> tuple[int, int, torch.device]:
    """Joins the process group (a group of one without a launcher); returns rank, size, device."""
    if "RANK" not in os.environ:  # run directly with python: a single process
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=5))
    return torch_dist.get_rank(), torch_dist.get_world_size(), device


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Trains with the command-line arguments ``argv``; returns the rank-averaged loss per step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default 1000; smoke 30)")
    parser.add_argument("--batch-size", type=int, default=256, help="points per step on each rank")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (the same initialisation on all ranks)"
    )
    parser.add_argument("--smoke", action="store_true", help="a short run with a small flow")
    parser.add_argument("--backend", default="auto", help="auto (NCCL with CUDA, else gloo), gloo or nccl")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--report", type=Path, default=None, help="folder for each rank's rank{r}.pt")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (30 if args.smoke else 1000)
    layers, hidden = (2, 16) if args.smoke else (4, 64)
    torch.set_num_threads(max(args.threads, 1))

    rank, world, device = _setup(args.backend)
    try:
        torch.manual_seed(args.seed)  # the same initial flow on every rank (DDP also broadcasts it)
        flow = build_flow(layers, hidden, device)
        model = DistributedDataParallel(
            NegLogLikelihood(flow), device_ids=[device.index] if device.type == "cuda" else None
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        data = torch.Generator().manual_seed(1000 * args.seed + rank)  # each rank its own data
        if rank == 0:
            n_params = sum(p.numel() for p in flow.parameters())
            print(f"DDP: {world} processes, backend {torch_dist.get_backend()}, device {device.type}; "
                  f"MAF with {layers} layers, {n_params} parameters")  # fmt: skip
        losses: list[float] = []
        local: list[float] = []
        start = time.perf_counter()
        for step in range(steps):
            x, _ = make_two_moons(args.batch_size, 0.05, data)
            loss = model(x.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients here
            optimizer.step()
            mean = loss.detach().clone()
            torch_dist.all_reduce(mean)
            losses.append(mean.item() / world)
            local.append(loss.item())
            if rank == 0 and (step % 100 == 0 or step == steps - 1):
                print(f"step {step:5d}  mean NLL over ranks {losses[-1]:.3f}")
        if rank == 0:
            print(f"{steps} steps in {time.perf_counter() - start:.1f} s")
        if args.report is not None:
            args.report.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu() for k, v in flow.state_dict().items()}
            torch.save({"state": state, "losses": losses, "local_losses": local, "world_size": world},
                       args.report / f"rank{rank}.pt")  # fmt: skip
        return losses
    finally:
        torch_dist.destroy_process_group()


if __name__ == "__main__":
    main()
