"""Variational inference on the 2-D energy densities of Rezende & Mohamed (2015).

Run from the repository root::

    python examples/energy_vi.py                     # planar and residual flows on U1: 5 to 10 minutes
    python examples/energy_vi.py --energy U3 --flow planar
    python examples/energy_vi.py --smoke             # a few seconds

The target is ``p(z) ∝ exp(-U(z))`` with one of the paper's four energies (``--energy``; U2 to U4
are confined to the square ``[-4, 4]^2`` they are drawn on, where they would otherwise have
infinite mass). It is fitted by

* a stack of planar flows, ``y = x + u tanh(w^T x + b)`` (``--flow planar``), as in the paper;
* a residual flow, ``y = x + g(x)`` with a spectrally normalised network ``g`` and the exact
  log-determinant, which is cheap in two dimensions (``--flow residual``);

or both (``--flow both``, the default). Each step draws samples with ``flow.rsample`` and scores
them with ``flow.log_prob`` inside ``flowtorch.BijectiveMode()``: neither flow has a closed-form
inverse, and the mode scores the flow's own samples from what the sampling pass recorded. The
loss is the reverse KL divergence up to a constant, ``E_q[log q(z) + beta_t U(z)]``, with the
paper's annealing of ``beta_t`` from 0.01 to 1 over the first half of the steps.

The script prints ``KL(q || p) = log Z - ELBO`` for each flow, with ``log Z`` of the target by
quadrature, and writes a figure of the target density next to each fitted density to
``examples/out/energy_vi.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure, standard_normal, train
from matplotlib.figure import Figure

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch import Plan
from flowtorch.bijectors.planar import Planar
from flowtorch.bijectors.residual import ResidualFlow
from flowtorch.distributions.energy import EnergyDensity

LIM = 4.0  # the figure shows [-LIM, LIM]^2, as in the paper
FLOWS = ("planar", "residual")


def build_flow(kind: str, planar_layers: int = 32, residual_blocks: int = 10) -> dist.Flow[bij.Compose]:
    """``planar_layers`` planar layers, or ``residual_blocks`` residual blocks, on a 2-D normal."""
    if kind == "planar":
        # free parameters drawn with standard deviation 0.5 rather than the library's near-zero
        # default: w^T x then spreads over tanh's range and every layer learns from the start
        plans: list[Plan[bij.Bijector]] = [
            Planar.plan(params.Tensor.plan(init_scale=0.5)) for _ in range(planar_layers)
        ]
    elif kind == "residual":
        plans = [
            ResidualFlow.plan(hidden_dims=(64, 64), coefficient=0.97, estimator="exact")
            for _ in range(residual_blocks)
        ]
    else:
        raise ValueError(f"unknown flow {kind!r}; use one of {FLOWS}")
    return dist.Flow(standard_normal(2), bij.Compose.plan(plans))


def sample_and_score(flow: dist.Flow, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` reparametrised samples and their log density, scored from the sampling pass's cache."""
    with flowtorch.BijectiveMode():
        z = flow.rsample((n,))
        log_q = flow.log_prob(z)
    return z, log_q


def fit(
    flow: dist.Flow,
    target: EnergyDensity,
    steps: int,
    batch_size: int,
    lr: float,
    name: str,
    progress: bool = True,
) -> list[float]:
    """Minimises the annealed reverse KL with Adam; returns the (un-annealed) ELBO of every step."""
    warmup = max(steps // 2, 1)

    def beta(i: int) -> float:
        return min(1.0, 0.01 + i / warmup)

    def step(i: int) -> tuple[torch.Tensor, float]:
        z, log_q = sample_and_score(flow, batch_size)
        energy = target.energy(z)
        loss = (log_q + beta(i) * energy).mean()
        return loss, -(log_q + energy).mean().item()

    return train(
        flow.parameters(),
        step,
        steps,
        lr,
        f"{name} VI",
        progress,
        metric="elbo",
        clip=100.0,
        after=lambda i: {"beta": f"{beta(i):.2f}"},
    )


@torch.no_grad()
def estimate_elbo(
    flow: dist.Flow, target: EnergyDensity, n: int, batch_size: int = 10_000
) -> tuple[float, float]:
    """``E_q[log p~ - log q]`` (``p~ = exp(-U)``, unnormalised) and its standard error."""
    values = []
    for size in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        z, log_q = sample_and_score(flow, size)
        values.append(target.log_prob(z) - log_q)
    w = torch.cat(values)
    return w.mean().item(), (w.std() / math.sqrt(len(w))).item()


@torch.no_grad()
def plot(
    target: EnergyDensity, flows: dict[str, dist.Flow], kls: dict[str, float], grid: int, path: Path
) -> Path:
    """The target density, then each flow's density, on ``[-4, 4]^2``."""
    g = torch.linspace(-LIM, LIM, grid)
    mesh = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1)  # (grid, grid, 2), rows = z2
    log_z = target.log_normalizer()
    panels = [("target  exp(-U) / Z", (target.log_prob(mesh) - log_z).exp())]
    for name, flow in flows.items():
        # the flow's density on a grid needs its inverse: planar layers solve a scalar equation,
        # residual blocks iterate to their fixed point
        density = flow.log_prob(mesh.reshape(-1, 2)).exp().reshape(grid, grid)
        panels.append((f"{name} flow  (KL {kls[name]:.3f} nats)", density))
    fig = Figure(figsize=(4.4 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, density) in zip(axes, panels):
        ax.imshow(density.numpy(), origin="lower", extent=(-LIM, LIM, -LIM, LIM), cmap="viridis")
        ax.set_title(title)
        ax.set_xlabel("$z_1$")
        ax.set_xticks([-4, -2, 0, 2, 4])
        ax.set_yticks([-4, -2, 0, 2, 4])
    axes[0].set_ylabel("$z_2$")
    fig.suptitle(f"flowtorch: variational inference on {target.name} (Rezende & Mohamed 2015), reverse KL")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the example with command-line arguments ``argv``; returns the largest final KL(q || p)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "energy_vi.png")
    parser.add_argument("--flow", choices=[*FLOWS, "both"], default="both", help="which flow to fit")
    parser.add_argument("--energy", choices=["U1", "U2", "U3", "U4"], default="U1", help="the target energy")
    parser.add_argument("--planar-layers", type=int, default=None, help="planar layers in the stack (32)")
    parser.add_argument("--residual-blocks", type=int, default=None, help="residual blocks in the flow (10)")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 3000, 20, smoke)
    planar_layers = pick(args.planar_layers, 32, 8, smoke)
    residual_blocks = pick(args.residual_blocks, 10, 2, smoke)
    batch_size = pick(args.batch_size, 256, 64, smoke)
    lr = pick(args.lr, 3e-3, 3e-3, smoke)
    kinds = FLOWS if args.flow == "both" else (args.flow,)

    with num_threads(args.threads):
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        target = EnergyDensity(args.energy, box=None if args.energy == "U1" else LIM)
        log_z = target.log_normalizer()
        print(f"target {target!r}: log Z = {log_z:.4f} (quadrature)")
        flows: dict[str, dist.Flow] = {}
        kls: dict[str, float] = {}
        for kind in kinds:
            torch.manual_seed(args.seed)
            flow = build_flow(kind, planar_layers, residual_blocks)
            n_params = sum(p.numel() for p in flow.parameters())
            print(f"{kind} flow: {len(flow.bijector.bijectors)} layers, {n_params} parameters")
            t0 = time.perf_counter()
            fit(flow, target, steps, batch_size, lr, kind, progress=not args.no_progress)
            elbo, stderr = estimate_elbo(flow, target, 1000 if smoke else 50_000)
            kls[kind] = log_z - elbo
            flows[kind] = flow
            print(
                f"{kind} flow: {steps} steps in {time.perf_counter() - t0:.1f} s; "
                f"ELBO {elbo:.4f} ± {stderr:.4f}, KL(q || p) = {kls[kind]:.4f} nats"
            )
        path = plot(target, flows, kls, grid=50 if smoke else 160, path=args.out)
        elapsed = time.perf_counter() - start

    print(f"wrote {path} ({elapsed:.1f} s in all)")
    print("final KL(q || p): " + ", ".join(f"{k} {v:.4f} nats" for k, v in kls.items()))
    return max(kls.values())


if __name__ == "__main__":
    main()
