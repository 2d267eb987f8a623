"""How the bound on affine log-scales changes training: flowtorch 0.8's tutorial and Neal's funnel.

Run from the repository root::

    python benchmarks/log_scale_bound.py                      # about 40 minutes on 2 shared cores
    python benchmarks/log_scale_bound.py --bounds soft hard   # the bound now and before, 15 minutes
    python benchmarks/log_scale_bound.py --seeds 0 --quick    # a minute: shortened runs, rough
    python benchmarks/log_scale_bound.py --timing             # the cost per training step, 2 minutes

Every affine map in flowtorch bounds its log-scale with :func:`flowtorch.ops.soft_clamp`. This
script trains the same models with that bound and with the alternatives it replaced or was chosen
over, swapped in for ``Affine``'s (``--bounds``, default all four):

* ``soft`` (flowtorch): :math:`x / (1 + x / b)`, ``b`` the bound on ``x``'s side; gradient
  :math:`1 / (1 + x / b)^2`, never zero;
* ``hard``: ``F.hardtanh`` to ``[-5, 3]``, the previous bound: no gradient past it;
* ``tanh``: :math:`b \\tanh(x / b)`, the smooth bound of the coupling layers before: a gradient
  that vanishes exponentially past it;
* ``straight-through``: flowtorch 0.8's clamp, the value clipped and the gradient passed as if it
  were not.

and prints, per seed, (1) the held-out NLL of flowtorch 0.8's getting-started tutorial run as 0.8
published it (default ``AffineAutoregressive``, Adam 5e-3, 3001 steps of 1000 samples from
N(5, 0.5^2) in 2-D; optimum 1.4516, 0.8 itself ends at 1.42 to 1.46) with the std of each
coordinate of the fitted flow's samples (0.5 is right); (2) the final ELBO of
``examples/neals_funnel_vi.py`` (2000 steps; 0 is exact, ``nan`` means it diverged: the example
stops when the ELBO is no longer finite).

``--timing`` instead times training steps with each bound, interleaved in one process (see
``_timing.py``; one thread, process time), as ratios to ``hard``: a MAF step (``log_prob`` of
512 data points, backward, Adam) and an IAF step (``rsample_and_log_prob`` of 512, backward, Adam),
5 layers of MADE hidden (64, 64), at D = 16 and 64, the sizes of ``compare.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
from flowtorch import recipes
from flowtorch.bijectors.affine import Affine
from flowtorch.ops import soft_clamp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import Candidate, format_table, looped, measure

ROOT = Path(__file__).resolve().parent.parent
Bound = Callable[[torch.Tensor, float, float], torch.Tensor]


def _tanh(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    b = torch.where(x >= 0, x.new_tensor(high), x.new_tensor(-low))
    return b * torch.tanh(x / b)


def _straight_through(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return x + (x.clamp(low, high) - x).detach()


BOUNDS: dict[str, Bound] = {
    "soft": soft_clamp,
    "hard": lambda x, low, high: F.hardtanh(x, low, high),
    "tanh": _tanh,
    "straight-through": _straight_through,
}


def use(bound: Bound) -> None:
    """Makes every ``Affine`` (and so ``AffineAutoregressive``) bound its log-scale with ``bound``."""

    def log_scale(self: Affine, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return bound(params[1], self.log_scale_min_clip, self.log_scale_max_clip)

    Affine._log_scale = log_scale  # type: ignore[method-assign]


def tutorial(seed: int, steps: int) -> tuple[float, list[float]]:
    """flowtorch 0.8's "Your First Flow", its code unchanged but for the step count; returns the
    held-out NLL (100,000 samples) and the per-coordinate std of 20,000 samples of the flow."""
    torch.manual_seed(seed)
    base_dist = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    target_dist = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(2) + 5, torch.ones(2) * 0.5), 1
    )
    flow = dist.Flow(base_dist, bij.AffineAutoregressive())
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(steps):
        opt.zero_grad()
        y = target_dist.sample((1000,))
        loss = -flow.log_prob(y).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(target_dist.sample((100_000,))).mean().item()
        std = flow.sample((20_000,)).std(0).tolist()
    return nll, std


def funnel(seed: int, quick: bool) -> float:
    """The final ELBO of ``examples/neals_funnel_vi.py`` with its defaults (``--smoke`` if quick)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import neals_funnel_vi  # (examples/ is put on the path above)

    out = ROOT / "examples" / "out" / f"neals_funnel_seed{seed}.png"
    argv = ["--seed", str(seed), "--no-progress", "--out", str(out)] + (["--smoke"] if quick else [])
    try:
        return float(neals_funnel_vi.main(argv))
    except FloatingPointError as error:  # the example stops when the ELBO stops being finite
        print(f"diverged: {error}")
        return math.nan


def _step(kind: str, d: int, bound: Bound) -> Callable[[], None]:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(d), torch.ones(d)), 1)
    plan = recipes.MAF(5, (64, 64)) if kind == "MAF" else recipes.IAF(5, (64, 64))
    flow = dist.Flow(base, plan, validate_args=False)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    data = torch.randn(512, d)

    def run() -> None:
        use(bound)
        opt.zero_grad()
        if kind == "MAF":
            loss = -flow.log_prob(data).mean()
        else:
            z, log_q = flow.rsample_and_log_prob((512,))
            loss = (log_q + 0.5 * z.square().sum(-1)).mean()
        loss.backward()
        opt.step()

    return run


def timing(names: list[str], repeats: int) -> None:
    torch.set_num_threads(1)
    baseline = names[0]
    for kind in ("MAF", "IAF"):
        for d in (16, 64):
            steps = [(name, _step(kind, d, BOUNDS[name])) for name in names]
            for _, fn in steps:
                fn()
            results = measure(
                [Candidate(name, looped(fn)) for name, fn in steps],
                baseline=baseline,
                repeats=repeats,
                clock=time.process_time,
            )
            print()
            title = f"{kind} training step, D={d}, batch 512, 5 layers (64, 64)"
            print(format_table(title, results, baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bounds", nargs="+", choices=list(BOUNDS), default=list(BOUNDS))
    parser.add_argument("--skip-funnel", action="store_true", help="the tutorial only")
    parser.add_argument("--quick", action="store_true", help="300 tutorial steps and a smoke funnel run")
    parser.add_argument("--timing", action="store_true", help="time training steps instead of training")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (with --timing)")
    args = parser.parse_args()
    if args.timing:
        names = ["hard", *(n for n in args.bounds if n != "hard")]
        timing(names, args.repeats)
        return
    torch.set_num_threads(1)
    steps = 300 if args.quick else 3001
    rows = []
    for name in args.bounds:
        use(BOUNDS[name])
        for seed in args.seeds:
            start = time.perf_counter()
            nll, std = tutorial(seed, steps)
            elbo = math.nan if args.skip_funnel else funnel(seed, args.quick)
            row = (
                f"| {name} | {seed} | {nll:.4f} | {std[0]:.3f}, {std[1]:.3f} | {elbo:.4f} | "
                f"{time.perf_counter() - start:.0f} |"
            )
            print(row, flush=True)
            rows.append(row)
    print()
    print(f"0.8 tutorial ({steps} steps) and funnel VI, by bound and seed (torch {torch.__version__}):")
    print("| bound | seed | tutorial held-out NLL | sample std | funnel ELBO | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
