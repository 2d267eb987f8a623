"""Getting started: fit a one-layer autoregressive flow to a correlated 2-D Gaussian.

Run from the repository root::

    python examples/bivariate_normal.py            # a few seconds
    python examples/bivariate_normal.py --smoke

This is flowtorch 0.8's getting-started tutorial written for the current API. A flow is a base
distribution (here a 2-D standard normal) pushed through a bijector; the bijector is given as a
*plan*, ``bij.AffineAutoregressive.plan(params.DenseAutoregressive.plan(hidden_dims=(32,)))``, which
``dist.Flow`` builds once it knows the event shape. One affine autoregressive layer,
``y_1 = mu_1 + sigma_1 z_1``, ``y_2 = mu_2(y_1) + sigma_2(y_1) z_2``, can represent any 2-D
Gaussian, so maximum likelihood on samples of the target should recover its mean and covariance.

The script prints the mean and covariance of the flow's samples next to the target's, the final
negative log-likelihood of held-out samples next to the target density's own (the best possible), and
writes a figure to ``examples/out/bivariate_normal.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure, standard_normal, train
from matplotlib.figure import Figure

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params

TARGET_LOC = (5.0, -2.0)
TARGET_STD = (1.0, 0.5)
TARGET_CORR = 0.8
# Contour lines of the target density (solid: matplotlib would dash single-colour negative levels).
TARGET_STYLE = {"colors": "0.25", "linewidths": 2.0, "linestyles": "solid"}


def make_target() -> torch.distributions.MultivariateNormal:
    """The correlated Gaussian to fit: means 5 and -2, standard deviations 1 and 0.5, correlation 0.8."""
    s1, s2 = TARGET_STD
    cov = torch.tensor([[s1 * s1, TARGET_CORR * s1 * s2], [TARGET_CORR * s1 * s2, s2 * s2]])
    return torch.distributions.MultivariateNormal(torch.tensor(TARGET_LOC), covariance_matrix=cov)


def build_flow() -> dist.Flow:
    """One affine autoregressive layer with a single hidden layer of 32 units, on a standard normal."""
    plan = bij.AffineAutoregressive.plan(params.DenseAutoregressive.plan(hidden_dims=(32,)))
    return dist.Flow(standard_normal(2), plan)


def fit(
    flow: dist.Flow,
    target: torch.distributions.Distribution,
    steps: int,
    batch_size: int,
    lr: float,
    progress: bool = True,
) -> list[float]:
    """Maximum likelihood on fresh target samples each step (minimises KL(p || q)) with Adam and a
    cosine learning-rate decay; returns the losses."""

    def step(_: int) -> tuple[torch.Tensor, float]:
        loss = -flow.log_prob(target.sample((batch_size,))).mean()
        return loss, loss.item()

    return train(flow.parameters(), step, steps, lr, "bivariate normal", progress, metric="nll")


def _fmt(t: torch.Tensor) -> str:
    """A vector or 2x2 matrix on one line, e.g. ``[5.00, -2.00]`` or ``[[1.00, 0.40], [0.40, 0.25]]``."""
    if t.dim() == 1:
        return "[" + ", ".join(f"{v:.3f}" for v in t.tolist()) + "]"
    return "[" + ", ".join(_fmt(row) for row in t) + "]"


@torch.no_grad()
def plot(
    flow: dist.Flow, target: torch.distributions.Distribution, num_samples: int, grid: int, path: Path
) -> Path:
    """Target samples and contours; next to them flow samples, with the flow's contours over the target's."""
    from_p = target.sample((num_samples,))
    from_q = flow.sample((num_samples,))
    (x0, y0), (sx, sy) = TARGET_LOC, TARGET_STD
    gx = torch.linspace(x0 - 4 * sx, x0 + 4 * sx, grid)
    gy = torch.linspace(y0 - 4 * sy, y0 + 4 * sy, grid)
    mesh = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)
    log_p = target.log_prob(mesh)
    log_q = flow.log_prob(mesh.reshape(-1, 2)).reshape(grid, grid)
    # Contours at the densities of the 1, 2 and 3 sigma ellipses of the target.
    top = log_p.max().item()
    levels = [top - 0.5 * k * k for k in (3, 2, 1)]

    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    axes[0].scatter(from_p[:, 0], from_p[:, 1], s=3, alpha=0.4, color="tab:blue", rasterized=True)
    axes[0].contour(gx.numpy(), gy.numpy(), log_p.numpy(), levels=levels, **TARGET_STYLE)
    axes[0].set_title(f"target samples ({num_samples}) and 1-2-3 sigma contours")
    axes[1].scatter(from_q[:, 0], from_q[:, 1], s=3, alpha=0.4, color="tab:orange", rasterized=True)
    axes[1].contour(gx.numpy(), gy.numpy(), log_p.numpy(), levels=levels, **TARGET_STYLE)
    axes[1].contour(
        gx.numpy(),
        gy.numpy(),
        log_q.numpy(),
        levels=levels,
        colors="tab:red",
        linewidths=1.4,
        linestyles="dashed",
    )
    axes[1].set_title("flow samples; flow (red, dashed) vs target (grey) contours")
    for ax in axes:
        ax.set_xlabel("$y_1$")
    axes[0].set_ylabel("$y_2$")
    fig.suptitle("flowtorch: one AffineAutoregressive layer fitted to a correlated Gaussian")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the tutorial with command-line arguments ``argv``; returns the final held-out NLL in nats."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "bivariate_normal.png")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 1000, 60, smoke)
    batch_size = pick(args.batch_size, 512, 256, smoke)
    # The target's mean is 5 standard deviations from the base's: a large learning rate gets there
    # in a few hundred steps, and the cosine decay then settles the fit.
    lr = pick(args.lr, 5e-2, 5e-2, smoke)
    num_check = 2000 if smoke else 100_000

    with num_threads(args.threads):
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        target = make_target()
        flow = build_flow()
        print(flow)

        fit(flow, target, steps, batch_size, lr, progress=not args.no_progress)
        with torch.no_grad():
            y_test = target.sample((num_check,))
            nll = -flow.log_prob(y_test).mean().item()
            best = -target.log_prob(y_test).mean().item()
            samples = flow.sample((num_check,))
        path = plot(
            flow, target, num_samples=1000 if smoke else 3000, grid=60 if smoke else 150, path=args.out
        )
        elapsed = time.perf_counter() - start

    print(f"mean of {num_check} flow samples: {_fmt(samples.mean(0))}   target: {_fmt(target.mean)}")
    print(f"covariance of the samples:  {_fmt(torch.cov(samples.T))}")
    print(f"target covariance:          {_fmt(target.covariance_matrix)}")
    print(f"wrote {path}")
    print(
        f"{steps} steps in {elapsed:.1f} s; the target density itself on the same test set: {best:.3f} nats"
    )
    print(f"final test NLL: {nll:.3f} nats")
    return nll


if __name__ == "__main__":
    main()
