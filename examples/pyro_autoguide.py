"""A flowtorch flow as a Pyro autoguide: ``AutoFlow`` against Pyro's ``AutoIAFNormal`` on Neal's funnel.

Run from the repository root (needs ``pyro-ppl``)::

    python examples/pyro_autoguide.py            # about a minute on 2 CPU cores
    python examples/pyro_autoguide.py --smoke    # a few seconds

The model is Neal's funnel written as a Pyro model, ``v ~ N(0, 3^2)``, ``x | v ~ N(0, e^v)``.
Both guides are fitted by SVI with the same budget: ``Trace_ELBO`` with 8 vectorised particles,
Adam with the same learning rate and number of steps, the same seed, and the same architecture
(two inverse autoregressive layers, each with a MADE of two hidden layers of 32 units, which is
``AutoFlow``'s default for two latent dimensions). ``AutoFlow`` samples the latent vector and
its log-density in one pass through the flow.

The funnel's density is normalised (``log Z = 0``), so ``ELBO <= 0`` and ``-ELBO = KL(q || p)``.
The script prints each guide's final ELBO, estimated on fresh draws, and writes a figure with the
training curves and samples of both guides over the funnel's contours to
``examples/out/pyro_autoguide.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as pdist
import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure
from matplotlib.figure import Figure
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal
from tqdm import tqdm

from flowtorch.distributions import NealsFunnel
from flowtorch.interop.autoguide import AutoFlow
from flowtorch.recipes import IAF

XLIM = (-12.0, 12.0)
VLIM = (-9.0, 9.0)
HIDDEN = (32, 32)


def model() -> None:
    """Neal's funnel as a Pyro model: the latent sites are ``v`` and ``x``."""
    v = pyro.sample("v", pdist.Normal(0.0, 3.0))
    pyro.sample("x", pdist.Normal(0.0, torch.exp(v / 2)))


def make_guides() -> dict[str, Any]:
    """Both guides with the same architecture: 2 IAF layers, MADE hidden layers (32, 32)."""
    return {
        "AutoFlow (flowtorch)": AutoFlow(model, IAF(layers=2, hidden_dims=HIDDEN)),
        "AutoIAFNormal (Pyro)": AutoIAFNormal(model, hidden_dim=list(HIDDEN), num_transforms=2),
    }


def fit(guide: Any, steps: int, lr: float, seed: int, name: str, progress: bool) -> list[float]:
    """SVI with 8 vectorised particles; returns the ELBO estimate of every step."""
    pyro.set_rng_seed(seed)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "clip_norm": 10.0}), elbo)
    values = []
    for _ in tqdm(range(steps), desc=name, disable=not progress, unit="step"):
        loss = svi.step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"{name}: the ELBO became {-loss}; try a smaller --lr")
        values.append(-loss)
    return values


def final_elbo(guide: Any, n: int, seed: int) -> tuple[float, float]:
    """The ELBO on ``n`` fresh draws and its Monte Carlo standard error."""
    pyro.set_rng_seed(10_000 + seed)
    with torch.no_grad(), pyro.plate("draws", n, dim=-1):
        guide_trace = pyro.poutine.trace(guide).get_trace()
        model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace()
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    log_w = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample")
    log_w = log_w - sum(s["log_prob"] for s in guide_trace.nodes.values() if s["type"] == "sample")
    return log_w.mean().item(), (log_w.std() / math.sqrt(n)).item()


@torch.no_grad()
def plot(
    guides: dict[str, Any], curves: dict[str, list[float]], num_samples: int, grid: int, path: Path
) -> Path:
    """Training curves, then each guide's samples of (x, v) over the funnel's log-density contours."""
    gx = torch.linspace(*XLIM, grid)
    gv = torch.linspace(*VLIM, grid)
    mesh = torch.stack(torch.meshgrid(gx, gv, indexing="xy"), dim=-1)
    log_p = NealsFunnel().log_prob(mesh).clamp(min=-12.0)
    levels = torch.linspace(-11.0, log_p.max().item(), 12).tolist()

    fig = Figure(figsize=(15.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for (name, values), color in zip(curves.items(), ("tab:orange", "tab:green")):
        window = max(len(values) // 40, 1)
        smooth = (
            torch.tensor(values).unfold(0, window, 1).median(-1).values if len(values) >= window else values
        )
        axes[0].plot(list(range(window - 1, window - 1 + len(smooth))), list(smooth), color=color, label=name)
    axes[0].axhline(0.0, color="k", linewidth=0.8, linestyle="--", label="log Z = 0")
    axes[0].set_ylim(-3.0, 0.5)
    axes[0].set_xlabel("SVI step")
    axes[0].set_ylabel("ELBO (moving median)")
    axes[0].legend()
    axes[0].set_title("training: same budget, same architecture")
    for ax, (name, guide), color in zip(axes[1:], guides.items(), ("tab:orange", "tab:green")):
        with pyro.plate("draws", num_samples, dim=-1):
            draws = guide()
        ax.contour(gx.numpy(), gv.numpy(), log_p.numpy(), levels=levels, cmap="Greys", linewidths=0.8)
        ax.scatter(draws["x"].numpy(), draws["v"].numpy(), s=2, alpha=0.4, color=color, rasterized=True)
        ax.set_xlim(*XLIM)
        ax.set_ylim(*VLIM)
        ax.set_xlabel("x")
        ax.set_ylabel("v")
        ax.set_title(f"{name}: {num_samples} samples")
    fig.suptitle("Neal's funnel in Pyro: flowtorch's AutoFlow and Pyro's AutoIAFNormal")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the example with command-line arguments ``argv``; returns AutoFlow's final ELBO."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "pyro_autoguide.png")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 1500, 60, smoke)
    lr = pick(args.lr, 5e-3, 1e-2, smoke)
    n_eval = 2000 if smoke else 50_000

    with num_threads(args.threads):
        start = time.perf_counter()
        pyro.clear_param_store()
        torch.manual_seed(args.seed)
        guides = make_guides()
        curves: dict[str, list[float]] = {}
        results: dict[str, tuple[float, float]] = {}
        for name, guide in guides.items():
            curves[name] = fit(guide, steps, lr, args.seed, name, progress=not args.no_progress)
            results[name] = final_elbo(guide, n_eval, args.seed)
        path = plot(guides, curves, 1000 if smoke else 4000, 60 if smoke else 200, args.out)
        total = time.perf_counter() - start

    print(f"wrote {path}")
    print(f"{steps} SVI steps per guide, 8 particles, lr {lr}; {total:.1f} s in all")
    for name, (elbo, stderr) in results.items():
        print(f"{name:22s} ELBO {elbo:8.4f} ± {stderr:.4f} nats")
    print("(time per step: python benchmarks/autoguide.py)")
    ours = results["AutoFlow (flowtorch)"][0]
    print(f"final ELBO (AutoFlow): {ours:.4f} nats; log Z = 0, so KL(q || p) = -ELBO")
    return ours


if __name__ == "__main__":
    main()
