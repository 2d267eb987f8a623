"""Conditional density estimation: a flow for p(y | c) on a problem whose true density is known.

Run from the repository root::

    python examples/conditional_density.py            # about a minute on 2 CPU cores
    python examples/conditional_density.py --smoke    # a few seconds

The data are pairs ``(y, c)`` with a scalar context ``c ~ U(-1, 1)`` and a point ``y`` in the
plane whose distribution changes with ``c`` (``_data.make_rotating_mixture``): at ``c = -1`` one
Gaussian stretched along the horizontal axis; as ``c`` grows it turns, narrows and splits in two;
at ``c = 1`` two round blobs on the vertical axis. Its log density ``log p(y | c)`` is exact (an
equal mixture of two Gaussians), so the fit can be measured against the truth.

The model is a conditional neural spline flow, ``flowtorch.recipes.NSF(..., context_shape=(1,))``:
autoregressive rational-quadratic spline layers whose conditioners read ``c`` next to ``y``. A
conditional flow takes the context in every call, ``flow.log_prob(y, context=c)`` and
``flow.sample((n,), context=c)``, or once for all with ``flow.condition(c)``, a view that shares
the parameters. Training maximises the mean ``log q(y | c)`` over the training pairs.

On held-out pairs the script prints the mean log-likelihood of the flow and of the true density;
their difference, the *gap* ``E[log p(y | c) - log q(y | c)]``, estimates the expected KL
divergence ``E_c KL(p(. | c) || q(. | c))``: it is zero only for a perfect fit and positive in
expectation otherwise. ``main`` returns the gap in nats. The figure, written to
``examples/out/conditional_density.png`` (``--out``), shows samples of the truth and of the flow,
with the density contours of each, for five values of ``c``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure, standard_normal, train
from _data import make_rotating_mixture, rotating_mixture_log_prob, sample_rotating_mixture
from matplotlib.figure import Figure

import flowtorch.distributions as dist
from flowtorch.recipes import NSF

# Plotting window, and the contexts shown in the figure.
LIM = (-3.2, 3.2)
CONTEXTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
# Contour lines of the true density (solid: matplotlib would dash single-colour negative levels).
TRUTH_STYLE = {"colors": "0.25", "linewidths": 1.2, "linestyles": "solid"}


def build_flow(layers: int = 4, hidden_dims: Sequence[int] = (64, 64), bins: int = 8) -> dist.Flow:
    """A conditional NSF on a 2-D standard normal: ``layers`` autoregressive spline layers on
    ``[-4, 4]`` whose conditioners also read the scalar context."""
    plan = NSF(layers=layers, bins=bins, bound=4.0, hidden_dims=hidden_dims, context_shape=(1,))
    return dist.Flow(standard_normal(2), plan)


@torch.no_grad()
def mean_log_prob(flow: dist.Flow, y: torch.Tensor, c: torch.Tensor, batch_size: int = 8192) -> float:
    """The mean of ``log q(y | c)`` over the pairs, in nats."""
    total = 0.0
    for y_chunk, c_chunk in zip(y.split(batch_size), c.split(batch_size)):
        total += flow.log_prob(y_chunk, context=c_chunk).sum().item()
    return total / len(y)


def fit(
    flow: dist.Flow,
    y_train: torch.Tensor,
    c_train: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    progress: bool = True,
) -> list[float]:
    """Maximum conditional likelihood with Adam and a cosine learning-rate decay; returns the loss
    (the mean of ``-log q(y | c)`` over the batch) per step."""

    def step(_: int) -> tuple[torch.Tensor, float]:
        idx = torch.randint(0, len(y_train), (batch_size,), generator=generator)
        loss = -flow.log_prob(y_train[idx], context=c_train[idx]).mean()
        return loss, loss.item()

    return train(flow.parameters(), step, steps, lr, "conditional NSF", progress, metric="nll")


@torch.no_grad()
def plot(flow: dist.Flow, num_samples: int, grid: int, generator: torch.Generator, path: Path) -> Path:
    """Top row: samples of the true ``p(y | c)`` with its contours; bottom row: samples of the flow
    with its contours (dashed) over the truth's, one column per context in ``CONTEXTS``."""
    g = torch.linspace(*LIM, grid)
    mesh = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1).reshape(-1, 2)
    fig = Figure(figsize=(3.2 * len(CONTEXTS), 6.6), layout="constrained")
    axes = fig.subplots(2, len(CONTEXTS), sharex=True, sharey=True)
    for col, c in enumerate(CONTEXTS):
        context = torch.tensor([c])
        log_p = rotating_mixture_log_prob(mesh, context).reshape(grid, grid)
        log_q = flow.log_prob(mesh, context=context).reshape(grid, grid)
        # Contours at the density levels that hold about 39%, 86% and 99% of a Gaussian's mass.
        top = log_p.max().item()
        levels = [top - 0.5 * k * k for k in (3, 2, 1)]
        truth = sample_rotating_mixture(torch.full((num_samples, 1), c), generator)
        model = flow.condition(context).sample((num_samples,))
        for row, (points, colour) in enumerate([(truth, "tab:blue"), (model, "tab:orange")]):
            ax = axes[row, col]
            ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.35, color=colour, rasterized=True)
            ax.contour(g.numpy(), g.numpy(), log_p.numpy(), levels=levels, **TRUTH_STYLE)
            if row == 1:
                ax.contour(
                    g.numpy(),
                    g.numpy(),
                    log_q.numpy(),
                    levels=levels,
                    colors="tab:red",
                    linewidths=1.2,
                    linestyles="dashed",
                )
            ax.set_xlim(*LIM)
            ax.set_ylim(*LIM)
            ax.set_aspect("equal")
        axes[0, col].set_title(f"c = {c:+.1f}")
        axes[1, col].set_xlabel("$y_1$")
    axes[0, 0].set_ylabel("true p(y | c)\n$y_2$")
    axes[1, 0].set_ylabel("flow q(y | c)\n$y_2$")
    fig.suptitle("flowtorch: conditional NSF; samples, flow contours (red, dashed) and true contours (grey)")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the example with command-line arguments ``argv``; returns the held-out gap
    ``mean(log p(y | c) - log q(y | c))`` in nats (zero for a perfect fit)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "conditional_density.png")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 3000, 80, smoke)
    batch_size = pick(args.batch_size, 512, 256, smoke)
    lr = pick(args.lr, 3e-3, 3e-3, smoke)
    n_train = 4000 if smoke else 50_000
    n_test = 2000 if smoke else 20_000

    with num_threads(args.threads):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(args.seed)
        y_train, c_train = make_rotating_mixture(n_train, generator)
        y_test, c_test = make_rotating_mixture(n_test, generator)
        torch.manual_seed(args.seed)
        flow = build_flow()
        n_params = sum(p.numel() for p in flow.parameters())
        print(f"rotating mixture: {n_train} training / {n_test} test pairs (y in R^2, c ~ U(-1, 1))")
        print(f"flow: conditional NSF, 4 autoregressive spline layers, {n_params} parameters")

        fit(flow, y_train, c_train, steps, batch_size, lr, generator, progress=not args.no_progress)
        model_ll = mean_log_prob(flow, y_test, c_test)
        true_ll = rotating_mixture_log_prob(y_test, c_test).mean().item()
        gap = true_ll - model_ll
        path = plot(
            flow,
            num_samples=500 if smoke else 2000,
            grid=60 if smoke else 150,
            generator=generator,
            path=args.out,
        )
        elapsed = time.perf_counter() - start

    print(f"wrote {path}")
    print(f"{steps} steps in {elapsed:.1f} s")
    print(f"held-out mean log-likelihood: flow {model_ll:.4f} nats, true density {true_ll:.4f} nats")
    print(f"final gap (true - flow, mean over held-out pairs): {gap:.4f} nats")
    return gap


if __name__ == "__main__":
    main()
