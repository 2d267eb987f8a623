"""Fit a normalizing flow to the two-moons data set by maximum likelihood.

Run from the repository root::

    python examples/two_moons.py            # the full demo: a minute or two on 2 CPU cores
    python examples/two_moons.py --smoke    # a few seconds, to check that everything works

The flow is a masked autoregressive flow (MAF) of rational-quadratic spline layers, with the two
coordinates swapped between layers, on a standard-normal base. MAF layers evaluate the density
in one parallel pass, which is what maximum-likelihood training needs; sampling (for the figure)
takes one pass per dimension.

The script prints the negative log-likelihood (NLL) of a held-out test set, next to the NLL of
the true data density (computed by quadrature): no model can beat that number in expectation,
so the gap between the two says how good the fit is. It writes a figure of the training data,
samples from the flow and the flow's density to ``examples/out/two_moons.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure, standard_normal, train
from _data import make_two_moons, two_moons_log_prob
from matplotlib.figure import Figure

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch import Plan

# Plotting window, in data coordinates.
XLIM = (-1.5, 2.5)
YLIM = (-1.0, 1.5)


def build_flow(
    num_layers: int = 4, hidden_dims: Sequence[int] = (64, 64), count_bins: int = 8, bound: float = 4.0
) -> dist.Flow:
    """A MAF of ``num_layers`` spline layers on a 2-D standard normal, coordinates swapped between."""
    plans: list[Plan[bij.Bijector]] = []
    for i in range(num_layers):
        if i > 0:
            plans.append(bij.Permute.plan(permutation=[1, 0]))
        conditioner = params.DenseAutoregressive.plan(hidden_dims=tuple(hidden_dims), permutation="identity")
        plans.append(bij.SplineAutoregressive.plan(conditioner, count_bins=count_bins, bound=bound))
    return dist.Flow(standard_normal(2), bij.Compose.plan(plans))


@torch.no_grad()
def mean_nll(flow: dist.Flow, x: torch.Tensor, batch_size: int = 8192) -> float:
    """The mean negative log-likelihood of the points ``x`` under ``flow``, in nats."""
    total = 0.0
    for chunk in x.split(batch_size):
        total += -flow.log_prob(chunk).sum().item()
    return total / len(x)


def fit(
    flow: dist.Flow,
    x_train: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    progress: bool = True,
) -> list[float]:
    """Maximum likelihood with Adam and a cosine learning-rate decay; returns the loss per step."""

    def step(_: int) -> tuple[torch.Tensor, float]:
        idx = torch.randint(0, len(x_train), (batch_size,), generator=generator)
        loss = -flow.log_prob(x_train[idx]).mean()
        return loss, loss.item()

    return train(flow.parameters(), step, steps, lr, "two moons", progress, metric="nll")


@torch.no_grad()
def plot(flow: dist.Flow, x_data: torch.Tensor, num_samples: int, grid: int, path: Path) -> Path:
    """Three panels: data, flow samples and the flow's density; written as a PNG to ``path``."""
    samples = flow.sample((num_samples,))
    gx = torch.linspace(*XLIM, grid)
    gy = torch.linspace(*YLIM, grid)
    mesh = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (grid, grid, 2), rows = y
    density = flow.log_prob(mesh.reshape(-1, 2)).exp().reshape(grid, grid)

    fig = Figure(figsize=(13.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    shown = x_data[:num_samples]
    axes[0].scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.5, color="tab:blue", rasterized=True)
    axes[0].set_title(f"training data ({len(shown)} of {len(x_data)} points)")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:orange", rasterized=True)
    axes[1].set_title(f"flow samples ({num_samples})")
    image = axes[2].imshow(
        density.numpy(), origin="lower", extent=(*XLIM, *YLIM), aspect="auto", cmap="viridis"
    )
    axes[2].set_title("flow density")
    fig.colorbar(image, ax=axes[2], shrink=0.9)
    for ax in axes:
        ax.set_xlim(*XLIM)
        ax.set_ylim(*YLIM)
        ax.set_xlabel("$x_1$")
    axes[0].set_ylabel("$x_2$")
    fig.suptitle("flowtorch: masked autoregressive spline flow fitted to two moons")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the demo with command-line arguments ``argv``; returns the final test NLL in nats."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "two_moons.png")
    parser.add_argument("--noise", type=float, default=0.05, help="standard deviation of the data noise")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 2500, 40, smoke)
    batch_size = pick(args.batch_size, 256, 128, smoke)
    lr = pick(args.lr, 5e-3, 5e-3, smoke)
    n_train = 2000 if smoke else 20_000
    n_test = 1000 if smoke else 10_000

    with num_threads(args.threads):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(args.seed)
        x_train, _ = make_two_moons(n_train, args.noise, generator)
        x_test, _ = make_two_moons(n_test, args.noise, generator)
        torch.manual_seed(args.seed)
        flow = build_flow(num_layers=4)
        n_params = sum(p.numel() for p in flow.parameters())
        print(f"two moons: {n_train} training / {n_test} test points, noise {args.noise}")
        print(f"flow: 4 spline MAF layers, {n_params} parameters")

        fit(flow, x_train, steps, batch_size, lr, generator, progress=not args.no_progress)
        nll = mean_nll(flow, x_test)
        best = -two_moons_log_prob(x_test, args.noise).mean().item()
        path = plot(
            flow, x_train, num_samples=1000 if smoke else 5000, grid=60 if smoke else 200, path=args.out
        )
        elapsed = time.perf_counter() - start

    print(f"wrote {path}")
    print(f"{steps} steps in {elapsed:.1f} s; true data density on the same test set: {best:.3f} nats")
    print(f"final test NLL: {nll:.3f} nats")
    return nll


if __name__ == "__main__":
    main()
