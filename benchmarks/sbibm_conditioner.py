"""Why flowtorch's coupling NSF is wider than sbi's at gaussian_mixture's narrow peak (10^4
simulations): a test of the conditioner, the one part of sbi's NSF that ``model="nsf_coupling"``
does not copy.

sbi's NSF conditions each spline coupling on a residual net (nflows' ``ResidualNet``: a linear
layer on the identity half and the context, two residual blocks of two layers each, whose last
layer starts near zero, and in each block a gate ``sigmoid(W c)`` of the context on the block's
output). flowtorch's ``DenseCoupling`` is an MLP with two hidden layers; at 50 hidden units it has
a third of the residual net's parameters. This script swaps the conditioner of the coupling NSF
for such a residual net, with the context gate (``resnet-gated``) and without it
(``resnet``), and keeps everything else as ``benchmarks/sbibm_npe.py`` runs
``flowtorch-nsf-coupling``: the simulations sbibm's runner drew (``results/sbibm_sims/``), sbi's
NPE with the adapter, minibatches of 256, learning rate 1e-3, 10,000 posterior samples and
sbibm's C2ST on 2,000 of them.

The residual net here is an experiment, not part of the library. Run in the flowtorch environment
of ``nox -s "sbibm(flowtorch)"`` (``.nox/sbibm-flowtorch``; older nox releases name it
``.nox/sbibm-side-flowtorch``), after the simulations exist::

    .nox/sbibm-flowtorch/bin/python benchmarks/sbibm_conditioner.py --seeds 0 1 2

One JSON line per run goes to ``results/sbibm_conditioner.jsonl``, with ``near``: the share of
the samples within 0.3 of the observation (61% of the reference posterior's samples).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from sbibm_npe import NUM_SAMPLES, RESULTS, _sims_path, training
from torch import nn

LOG = RESULTS / "sbibm_conditioner.jsonl"
VARIANTS = ("resnet-gated", "resnet")


def residual_coupling() -> Any:
    """The conditioner class (built lazily: flowtorch is imported in the sbi environment only)."""
    from flowtorch.parameters.base import Parameters

    class ResidualCoupling(Parameters):
        """Parameters of the transformed half from the identity half and the context: a residual
        net, optionally gated by the context in each block."""

        def __init__(
            self,
            param_shapes: Sequence[torch.Size],
            input_shape: torch.Size,
            context_shape: torch.Size | None = None,
            *,
            mask: torch.Tensor,
            hidden: int = 50,
            blocks: int = 2,
            gate: bool = True,
        ) -> None:
            super().__init__(param_shapes, input_shape, context_shape)
            assert self.context_shape is not None and len(self.input_shape) == 1
            flat = mask.flatten()
            self.register_buffer("identity", flat.nonzero().squeeze(-1), persistent=False)
            n_c = self.context_shape.numel()
            self.sizes = [s.numel() for s in self.param_shapes]
            self.first = nn.Linear(int(flat.sum()) + n_c, hidden)
            self.inner = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
            self.outer = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
            self.gates = nn.ModuleList(nn.Linear(n_c, hidden) for _ in range(blocks)) if gate else None
            for layer in self.outer:  # each block starts near the identity
                nn.init.uniform_(layer.weight, -1e-3, 1e-3)
                nn.init.uniform_(layer.bias, -1e-3, 1e-3)
            self.last = nn.Linear(hidden, sum(self.sizes))

        def forward(
            self, input: torch.Tensor | None = None, context: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, ...]:
            assert input is not None and context is not None
            part = input.index_select(-1, self.identity)  # type: ignore[arg-type]
            batch = torch.broadcast_shapes(part.shape[:-1], context.shape[:-1])
            part, c = part.expand(*batch, -1), context.expand(*batch, -1)
            h = self.first(torch.cat([part, c], -1))
            for i, (inner, outer) in enumerate(zip(self.inner, self.outer)):
                t = outer(torch.relu(inner(torch.relu(h))))
                if self.gates is not None:
                    t = t * torch.sigmoid(self.gates[i](c))
                h = h + t
            out = self.last(h)
            return tuple(
                chunk.reshape(*batch, *shape)
                for chunk, shape in zip(out.split(self.sizes, -1), self.param_shapes)
            )

    return ResidualCoupling


def plan(gate: bool, layers: int = 5, bins: int = 10, bound: float = 3.0) -> Any:
    """``model="nsf_coupling"``'s plan with the residual conditioner."""
    import flowtorch.bijectors as bij
    from flowtorch.lazy import Plan

    net = residual_coupling()
    steps: list[Any] = []
    for i in range(layers):
        steps.append(
            Plan(bij.SplineCoupling, Plan(net, gate=gate), flip=i % 2 == 1, count_bins=bins, bound=bound)
        )
        steps.append(Plan(bij.LULinear, permutation="identity", identity_init=True))
    return Plan(bij.Compose, steps)


def run(task_name: str, budget: int, seed: int, variant: str, c2st_samples: int) -> dict[str, Any]:
    import sbibm
    from sbi.inference import NPE
    from sbibm.metrics import c2st

    from flowtorch.interop.sbi import posterior_nn

    theta, x = torch.load(_sims_path(task_name, budget, 1, seed))
    task = sbibm.get_task(task_name)
    torch.manual_seed(seed)
    start = time.perf_counter()
    inference = NPE(
        prior=task.get_prior_dist(), density_estimator=posterior_nn(model=plan(variant == "resnet-gated"))
    )
    train = training(budget, "flowtorch-nsf-coupling")
    estimator = inference.append_simulations(theta, x).train(**train, show_train_summary=False)
    observation = task.get_observation(1)
    samples = inference.build_posterior(estimator).sample(
        (NUM_SAMPLES,), x=observation, show_progress_bars=False
    )
    fit = time.perf_counter() - start
    reference = task.get_reference_posterior_samples(num_observation=1)
    score = float(c2st(reference[:c2st_samples], samples[:c2st_samples])[0])
    near = float(((samples - observation).norm(dim=-1) < 0.3).float().mean())
    return {
        "task": task_name,
        "budget": budget,
        "seed": seed,
        "variant": variant,
        "c2st": score,
        "c2st_samples": c2st_samples,
        "fit_s": fit,
        "epochs": int(inference._summary["epochs_trained"][-1]),
        "near": near,
        "parameters": sum(p.numel() for p in estimator.parameters()),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="gaussian_mixture")
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--c2st-samples", type=int, default=2_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in args.seeds:
        for variant in args.variants:
            record = run(args.task, args.budget, seed, variant, args.c2st_samples)
            with LOG.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
