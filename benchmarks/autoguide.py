"""flowtorch's Pyro autoguide, ``AutoFlow``, against Pyro's ``AutoIAFNormal``: time per SVI step
and the final ELBO, on eight schools, a logistic regression and Neal's funnel.

Run from the repository root (needs ``pyro-ppl`` and ``scikit-learn``)::

    python benchmarks/autoguide.py                 # time per step, about 3 minutes on 2 shared cores
    python benchmarks/autoguide.py --quick         # a rough timing in under a minute
    python benchmarks/autoguide.py --elbo          # final ELBOs, 3 seeds x 1000 steps, about 10 minutes

Both guides get the same architecture: one autoregressive layer whose MADE has one hidden layer of
``3D + 1`` units (``AutoIAFNormal``'s default; ``--layers 2`` gives two layers of two hidden
layers each), the same optimiser (Adam), ELBO (``Trace_ELBO``, 8 vectorised particles) and data.

Timing: one SVI step (guide, model, backward, optimiser step) of each guide, interleaved in one
process, one torch thread, process time (see ``_timing.py``); reported as the ratio
``AutoFlow / AutoIAFNormal`` per round (median and IQR).

``--elbo``: each guide is trained from the same seeds for the same number of steps at the same
learning rate, then its ELBO is estimated on 4000 draws from a seed neither run trained with
(vectorised, no gradients).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as pd
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal

from flowtorch.interop.autoguide import AutoFlow
from flowtorch.recipes import IAF

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import CLOCKS, Candidate, format_table, measure

EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools() -> None:
    """Non-centred eight schools: 10 latent dims, ``tau`` HalfCauchy."""
    mu = pyro.sample("mu", pd.Normal(0.0, 5.0))
    tau = pyro.sample("tau", pd.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta_tilde", pd.Normal(0.0, 1.0))
        pyro.sample("y", pd.Normal(mu + tau * theta, EIGHT_SIGMA), obs=EIGHT_Y)


def breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's breast cancer data (569 x 30), standardised, and its 0/1 labels."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    return (x - x.mean(0)) / x.std(0), torch.tensor(data.target, dtype=torch.float32)


def logistic_regression(x: torch.Tensor, t: torch.Tensor) -> None:
    """Bayesian logistic regression: 30 N(0, 1) weights and a N(0, 5^2) bias."""
    w = pyro.sample("w", pd.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", pd.Normal(0.0, 5.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("t", pd.Bernoulli(logits=(x * w).sum(-1) + b), obs=t)


def funnel() -> None:
    """Neal's funnel, ``v ~ N(0, 3^2)``, ``x | v ~ N(0, e^v)``: log Z = 0, so ELBO = -KL(q || p)."""
    v = pyro.sample("v", pd.Normal(0.0, 3.0))
    pyro.sample("x", pd.Normal(0.0, torch.exp(v / 2)))


MODELS: dict[str, tuple[Callable[..., None], Callable[[], tuple[Any, ...]], int]] = {
    # name: (model, its arguments, latent dimension)
    "eight_schools": (eight_schools, tuple, 10),
    "logistic_regression": (logistic_regression, breast_cancer, 31),
    "funnel": (funnel, tuple, 2),
}


def guides(model: Callable[..., None], d: int, layers: int) -> dict[str, Any]:
    """Both guides with the same architecture: ``layers`` layers of ``layers`` hidden layers of 3D + 1."""
    hidden = [3 * d + 1] * layers
    return {
        "AutoIAFNormal": AutoIAFNormal(model, hidden_dim=hidden, num_transforms=layers),
        "AutoFlow": AutoFlow(model, IAF(layers=layers, hidden_dims=tuple(hidden))),
    }


def svi_for(model: Callable[..., None], guide: Any, lr: float) -> SVI:
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    return SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)


def timing(names: list[str], layers: int, repeats: int) -> None:
    for name in names:
        model, make_args, d = MODELS[name]
        args = make_args()
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        candidates = []
        for guide_name, guide in guides(model, d, layers).items():
            svi = svi_for(model, guide, 1e-3)  # both guides live in one param store, by their names

            def run(n: int, svi: SVI = svi, args: tuple[Any, ...] = args) -> None:
                for _ in range(n):
                    svi.step(*args)

            candidates.append(Candidate(guide_name, run))
        results = measure(
            candidates, baseline="AutoIAFNormal", repeats=repeats, target_s=0.2, clock=CLOCKS["process"]
        )
        title = f"{name} (D = {d}, {layers} layer(s) of hidden {[3 * d + 1] * layers}): one SVI step"
        print(format_table(title, results, "AutoIAFNormal", unit="per step"), flush=True)


def final_elbos(names: list[str], layers: int, seeds: list[int], steps: int, lr: float) -> None:
    print(
        f"final ELBO after {steps} steps at lr {lr} (8 particles); on 4000 held-out draws (higher is better)"
    )
    for name in names:
        model, make_args, d = MODELS[name]
        args = make_args()
        scores: dict[str, list[float]] = {"AutoFlow": [], "AutoIAFNormal": []}
        for seed in seeds:
            for guide_name in scores:
                pyro.clear_param_store()
                pyro.set_rng_seed(seed)
                guide = guides(model, d, layers)[guide_name]
                svi = svi_for(model, guide, lr)
                start = time.perf_counter()
                for _ in range(steps):
                    svi.step(*args)
                pyro.set_rng_seed(10_000 + seed)
                elbo = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
                with torch.no_grad():
                    value = -elbo.loss(model, guide, *args)
                scores[guide_name].append(value)
                print(
                    f"  {name:20s} seed {seed}  {guide_name:13s}  ELBO {value:9.3f}  "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        for guide_name, values in scores.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{name:20s} {guide_name:13s} mean ELBO {statistics.mean(values):9.3f} (sd {spread:.3f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--layers", type=int, default=1, help="layers (and hidden layers each)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--quick", action="store_true", help="5 timing rounds, or 1 seed x 200 steps")
    parser.add_argument("--elbo", action="store_true", help="final ELBOs instead of timings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.elbo:
        seeds, steps = ([args.seeds[0]], 200) if args.quick else (args.seeds, args.steps)
        final_elbos(args.models, args.layers, seeds, steps, args.lr)
    else:
        timing(args.models, args.layers, 5 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
