"""Variational inference on Neal's funnel with an inverse autoregressive flow (IAF).

Run from the repository root::

    python examples/neals_funnel_vi.py            # about a minute on 2 CPU cores
    python examples/neals_funnel_vi.py --smoke    # a few seconds

The target is Neal's funnel, ``v ~ N(0, 3^2)``, ``x | v ~ N(0, e^v)``, known only through its
log density. The approximation ``q`` is a flow of IAF layers, ``Invert(AffineAutoregressive)``,
whose forward (sampling) direction is one parallel pass. Each step draws samples with
``flow.rsample`` and scores them with ``flow.log_prob`` inside ``flowtorch.BijectiveMode()``: the
mode recorded every layer's input and log|det J| while sampling, so scoring the samples is served
from that cache, without running the (sequential) inverse. The loss is the reverse KL divergence
up to a constant, ``E_q[log q(z) - log p(z)]``, i.e. the negative ELBO.

The funnel's density is normalised (``log Z = 0``), so ``ELBO <= 0`` and ``-ELBO`` is exactly
``KL(q || p)``: an ELBO near zero means ``q`` is close to the funnel. The script prints the final
ELBO, estimated on fresh samples, and writes a figure of the target's density contours with
samples from the target and from ``q`` to ``examples/out/neals_funnel.png`` (``--out``).
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

# Plotting window: x horizontally, v vertically.
XLIM = (-12.0, 12.0)
VLIM = (-9.0, 9.0)


def build_flow(num_layers: int = 4, hidden_dims: Sequence[int] = (64, 64)) -> dist.Flow:
    """An IAF of ``num_layers`` affine layers on a 2-D standard normal, coordinates swapped between."""
    plans: list[Plan[bij.Bijector]] = []
    for i in range(num_layers):
        if i > 0:
            plans.append(bij.Permute.plan(permutation=[1, 0]))
        conditioner = params.DenseAutoregressive.plan(hidden_dims=tuple(hidden_dims), permutation="identity")
        plans.append(bij.Invert.plan(bij.AffineAutoregressive.plan(conditioner)))
    return dist.Flow(standard_normal(2), bij.Compose.plan(plans))


def sample_and_score(flow: dist.Flow, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` reparametrised samples of ``flow`` and their log density ``log q``.

    Inside ``BijectiveMode`` the samples remember how they were made, so ``log_prob`` reads each
    layer's log|det J| from the cache instead of inverting the flow.
    """
    with flowtorch.BijectiveMode():
        z = flow.rsample((n,))
        log_q = flow.log_prob(z)
    return z, log_q


def target_log_prob(target: torch.distributions.Distribution, z: torch.Tensor) -> torch.Tensor:
    """``target.log_prob(z)``, evaluated in float64.

    ``NealsFunnel.log_prob`` builds ``Normal(0, exp(v / 2))``; in float32 ``exp(v / 2)`` overflows for
    ``v > 177`` (giving ``-inf`` and NaN gradients) and underflows to a zero scale, which ``Normal``
    rejects, for ``v < -207``. Early in training a rare sample from the flow's tail can land there;
    float64 moves those limits out to ``|v| > 1400``.
    """
    return target.log_prob(z.double()).to(z.dtype)


def fit(
    flow: dist.Flow,
    target: torch.distributions.Distribution,
    steps: int,
    batch_size: int,
    lr: float,
    progress: bool = True,
) -> list[float]:
    """Minimises the reverse KL divergence with Adam; returns the ELBO estimate of every step."""

    def step(_: int) -> tuple[torch.Tensor, float]:
        z, log_q = sample_and_score(flow, batch_size)
        loss = (log_q - target_log_prob(target, z)).mean()
        return loss, -loss.item()

    # A sample deep in the funnel's neck can have a huge gradient; clipping keeps Adam stable.
    return train(flow.parameters(), step, steps, lr, "funnel VI", progress, metric="elbo", clip=10.0)


@torch.no_grad()
def estimate_elbo(
    flow: dist.Flow, target: torch.distributions.Distribution, n: int, batch_size: int = 10_000
) -> tuple[float, float]:
    """The ELBO ``E_q[log p - log q]`` on ``n`` fresh samples, and its Monte Carlo standard error."""
    values = []
    for size in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        z, log_q = sample_and_score(flow, size)
        values.append(target_log_prob(target, z) - log_q)
    w = torch.cat(values)
    return w.mean().item(), (w.std() / math.sqrt(len(w))).item()


@torch.no_grad()
def plot(
    flow: dist.Flow, target: torch.distributions.Distribution, num_samples: int, grid: int, path: Path
) -> Path:
    """Target contours with target samples, with flow samples, and the two marginals of ``v``."""
    from_q = flow.sample((num_samples,))
    from_p = target.sample((num_samples,))
    gx = torch.linspace(*XLIM, grid)
    gv = torch.linspace(*VLIM, grid)
    mesh = torch.stack(torch.meshgrid(gx, gv, indexing="xy"), dim=-1)  # (grid, grid, 2): (x, v)
    log_p = target.log_prob(mesh).clamp(min=-12.0)
    levels = torch.linspace(-11.0, log_p.max().item(), 12).tolist()

    fig = Figure(figsize=(14.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.0, 0.8]})
    for ax, pts, color, title in (
        (axes[0], from_p, "tab:blue", "exact samples of the funnel"),
        (axes[1], from_q, "tab:orange", "samples of the fitted IAF q"),
    ):
        ax.contour(gx.numpy(), gv.numpy(), log_p.numpy(), levels=levels, cmap="Greys", linewidths=0.8)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color=color, rasterized=True)
        ax.set_xlim(*XLIM)
        ax.set_ylim(*VLIM)
        ax.set_xlabel("x")
        ax.set_ylabel("v")
        ax.set_title(f"{title} ({num_samples}), log p contours")
    edges = torch.linspace(*VLIM, 46)
    axes[2].hist(
        from_q[:, 1].numpy(), bins=edges.numpy(), density=True, alpha=0.6, color="tab:orange", label="q"
    )
    v = torch.linspace(*VLIM, 200)
    axes[2].plot(
        v.numpy(), torch.distributions.Normal(0.0, 3.0).log_prob(v).exp().numpy(), "k-", label="p: N(0, 3²)"
    )
    axes[2].set_xlabel("v")
    axes[2].set_title("marginal of v")
    axes[2].legend()
    fig.suptitle("flowtorch: inverse autoregressive flow fitted to Neal's funnel by minimising KL(q || p)")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the example with command-line arguments ``argv``; returns the final ELBO estimate."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "neals_funnel.png")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 2000, 40, smoke)
    batch_size = pick(args.batch_size, 256, 128, smoke)
    lr = pick(args.lr, 3e-3, 3e-3, smoke)

    with num_threads(args.threads):
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        target = dist.NealsFunnel()
        flow = build_flow()
        n_params = sum(p.numel() for p in flow.parameters())
        print(f"Neal's funnel: IAF with {n_params} parameters, {batch_size} samples per step")

        fit(flow, target, steps, batch_size, lr, progress=not args.no_progress)
        elbo, stderr = estimate_elbo(flow, target, 2000 if smoke else 100_000)
        path = plot(
            flow, target, num_samples=1000 if smoke else 4000, grid=60 if smoke else 200, path=args.out
        )
        elapsed = time.perf_counter() - start

    print(f"wrote {path}")
    print(f"{steps} steps in {elapsed:.1f} s; log Z = 0 for the funnel, so KL(q || p) = -ELBO")
    print(f"final ELBO: {elbo:.4f} ± {stderr:.4f} nats")
    return elbo


if __name__ == "__main__":
    main()
