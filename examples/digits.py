"""Density estimation on scikit-learn's 8x8 digits: a flowtorch NSF next to zuko's, same budget.

Run from the repository root::

    python examples/digits.py            # both models: 2 to 3 minutes on 2 CPU cores
    python examples/digits.py --smoke    # a few seconds, to check that everything works

The data are the 1797 8x8 images of ``sklearn.datasets.load_digits`` (bundled with scikit-learn),
64 pixels with integer values ``0..16``, split once (seeded) into training, validation and test
images. A density on integers needs a discrete model; the usual route, followed here, is to
*dequantise*: model the continuous ``v = x + u``, ``u ~ U[0, 1)^64``, whose density ``p(v)`` on
``[0, 17)^64`` gives ``log P(x) >= E_u[log p(x + u)]`` (Theis et al., 2016), so the NLL of ``v``
is an upper bound on the NLL of the discrete image, in the same units for every model.

The flows do not see ``v`` itself but ``z = T(v)``: the logit of ``alpha + (1 - 2 alpha) v / 17``
(``alpha = 0.05`` keeps it away from the logit's poles), standardised per pixel with the training
set's mean and standard deviation. Then ``log p(v) = log q(z) + log|det dT/dv|``: every NLL printed
here, training curves included, adds that Jacobian term, so it is the NLL of the dequantised pixels
themselves, in nats per image and in bits per dimension (``NLL / (64 ln 2)``). A model that spreads
its mass uniformly over the 17 levels of each pixel scores ``64 ln 17 = 181.3`` nats (4.09 bits/dim).

Both models are neural spline flows (Durkan et al., 2019) with the same budget: masked
autoregressive rational-quadratic spline layers (``flowtorch.recipes.NSF`` and ``zuko.flows.NSF``)
with the same number of layers, hidden sizes, bins, spline interval ``[-5, 5]`` (zuko's fixed
bound) and alternating order of the dims, trained with the same optimiser, learning rate, schedule,
batches and dequantisation noise for the same number of steps. Each keeps the checkpoint with the
lowest validation NLL, which is then scored on the test set. The script prints a table of
parameters, test NLL, bits/dim and training time, and writes a figure of real test digits, samples
from each model and the training curves to ``examples/out/digits.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import OUT_DIR, add_common_args, num_threads, pick, save_figure, standard_normal, train
from _data import load_digits_split
from matplotlib.figure import Figure

import flowtorch.distributions as dist
from flowtorch.recipes import NSF

LEVELS = 17  # pixel values are 0..16
SIDE = 8  # images are SIDE x SIDE
DIM = SIDE * SIDE
BOUND = 5.0  # zuko's splines cover [-5, 5]; flowtorch's are given the same interval
N_VAL, N_TEST = 180, 360


class Preprocess:
    r"""The map ``z = T(v)`` from dequantised pixels ``v`` in ``[0, 17)^64`` to the flows' space.

    .. math::
        p = \alpha + (1 - 2\alpha)\,v / 17, \qquad s = \log p - \log(1 - p), \qquad
        z = (s - m) / \sigma,

    with per-pixel ``m`` and ``sigma`` the mean and standard deviation of ``s`` on one dequantised
    copy of the training images. ``T`` is a fixed bijection onto its image, with

    .. math::
        \log\left|\det \frac{\partial z}{\partial v}\right| = \sum_i \Big[\log\frac{1 - 2\alpha}{17}
        - \log p_i - \log(1 - p_i) - \log \sigma_i\Big].
    """

    def __init__(self, v_train: torch.Tensor, alpha: float = 0.05) -> None:
        self.alpha = alpha
        s = self._logit(v_train)
        self.mean = s.mean(0)
        self.std = s.std(0)
        self._const = DIM * math.log((1.0 - 2.0 * alpha) / LEVELS) - self.std.log().sum()

    def _logit(self, v: torch.Tensor) -> torch.Tensor:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * v / LEVELS
        return p.log() - (-p).log1p()

    def __call__(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log|det dz/dv|)`` for ``v`` of shape ``(n, 64)``; the log-det has shape ``(n,)``."""
        p = self.alpha + (1.0 - 2.0 * self.alpha) * v / LEVELS
        z = (p.log() - (-p).log1p() - self.mean) / self.std
        log_det = self._const - (p.log() + (-p).log1p()).sum(-1)
        return z, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The pixels ``v`` of the points ``z`` (clamped to the range ``T`` maps onto)."""
        p = torch.sigmoid(z * self.std + self.mean)
        return ((p - self.alpha) / (1.0 - 2.0 * self.alpha) * LEVELS).clamp(0.0, LEVELS - 1e-4)


@dataclass
class Model:
    """A density model under comparison: its module, how to score and sample it, and its results."""

    name: str
    module: torch.nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    sample: Callable[[int], torch.Tensor]
    losses: list[float] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0
    train_time: float = 0.0
    test_nll: float = math.nan

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


def build_flowtorch(layers: int, hidden: Sequence[int], bins: int) -> Model:
    """flowtorch's NSF: ``layers`` autoregressive spline layers, MADE orders alternating."""
    flow = dist.Flow(standard_normal(DIM), NSF(layers=layers, bins=bins, bound=BOUND, hidden_dims=hidden))
    return Model("flowtorch NSF", flow, flow.log_prob, lambda n: flow.sample((n,)))


def build_zuko(layers: int, hidden: Sequence[int], bins: int) -> Model:
    """zuko's NSF with the same layers, hidden sizes and bins (orders alternate there too)."""
    import zuko

    flow = zuko.flows.NSF(DIM, transforms=layers, bins=bins, hidden_features=tuple(hidden))
    return Model("zuko NSF", flow, lambda z: flow().log_prob(z), lambda n: flow().sample((n,)))


@torch.no_grad()
def mean_nll(model: Model, prep: Preprocess, v: torch.Tensor, batch_size: int = 1024) -> float:
    """The mean NLL of the dequantised pixels ``v`` in nats per image (Jacobian of ``T`` included)."""
    total = 0.0
    for chunk in v.split(batch_size):
        z, log_det = prep(chunk)
        total += -(model.log_prob(z) + log_det).sum().item()
    return total / len(v)


def bits_per_dim(nll: float) -> float:
    """An NLL in nats per image as bits per pixel."""
    return nll / (DIM * math.log(2.0))


def dequantise(x: torch.Tensor, generator: torch.Generator, copies: int = 1) -> torch.Tensor:
    """``copies`` dequantised copies ``x + u``, ``u ~ U[0, 1)``, of the images ``x``, stacked."""
    x = x.repeat(copies, 1)
    return x + torch.rand(x.shape, generator=generator)


def fit(
    model: Model,
    prep: Preprocess,
    x_train: torch.Tensor,
    v_val: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    seed: int,
    progress: bool = True,
) -> None:
    """Maximum likelihood with Adam and a cosine learning-rate decay, keeping the parameters with
    the lowest validation NLL; fills in ``model.losses``, ``val_curve``, ``best_step`` and
    ``train_time`` and leaves the module holding the best parameters.

    The batches and their dequantisation noise come from a generator seeded with ``seed``, so
    every model sees exactly the same data in the same order.
    """
    generator = torch.Generator().manual_seed(seed)
    module = model.module
    best = [mean_nll(model, prep, v_val), 0.0]  # the lowest validation NLL and its step
    model.val_curve = [(0, best[0])]
    best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}

    def step(_: int) -> tuple[torch.Tensor, float]:
        idx = torch.randint(0, len(x_train), (batch_size,), generator=generator)
        z, log_det = prep(dequantise(x_train[idx], generator))
        loss = -(model.log_prob(z) + log_det).mean()
        return loss, loss.item()

    def validate(i: int) -> dict[str, str]:
        nonlocal best_state
        done = i + 1
        if done % eval_every == 0 or done == steps:
            val = mean_nll(model, prep, v_val)
            model.val_curve.append((done, val))
            if val < best[0]:
                best[:] = [val, done]
                best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        return {"val": f"{model.val_curve[-1][1]:.1f}", "best": f"{best[0]:.1f}"}

    start = time.perf_counter()
    model.losses = train(module.parameters(), step, steps, lr, model.name, progress, after=validate)
    model.train_time = time.perf_counter() - start
    module.load_state_dict(best_state)
    model.best_step = int(best[1])


def _tile(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``rows * cols`` images of 64 pixels as one array, one blank pixel between neighbours."""
    grid = torch.full((rows * (SIDE + 1) - 1, cols * (SIDE + 1) - 1), float("nan"))
    for k, image in enumerate(images[: rows * cols]):
        r, c = divmod(k, cols)
        grid[r * (SIDE + 1) : r * (SIDE + 1) + SIDE, c * (SIDE + 1) : c * (SIDE + 1) + SIDE] = image.view(
            SIDE, SIDE
        )
    return grid


def _smooth(values: list[float], width: int) -> torch.Tensor:
    """The running mean of ``values`` over ``width`` steps (shorter at the start)."""
    t = torch.tensor(values, dtype=torch.float64)
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])
    idx = torch.arange(1, len(t) + 1)
    lo = (idx - width).clamp(min=0)
    return (csum[idx] - csum[lo]) / (idx - lo)


@torch.no_grad()
def plot(models: list[Model], prep: Preprocess, x_test: torch.Tensor, rows: int, path: Path) -> Path:
    """Real test digits and samples of each model (pixels floored to the levels 0..16), then the
    training (running mean) and validation curves, in nats per image; written as a PNG."""
    cols = rows
    panels = [("real test digits", x_test)]
    for model in models:
        torch.manual_seed(0)
        v = prep.inverse(model.sample(rows * cols))
        panels.append((f"{model.name} samples", v.floor()))
    fig = Figure(figsize=(4.0 * (len(panels) + 1.4), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1, width_ratios=[1.0] * len(panels) + [1.4])
    for ax, (title, images) in zip(axes, panels):
        ax.imshow(_tile(images, rows, cols).numpy(), cmap="gray_r", vmin=0, vmax=LEVELS - 1)
        ax.set_title(title)
        ax.set_axis_off()
    ax = axes[-1]
    colours = ["tab:orange", "tab:green"]
    lows: list[float] = []
    for model, colour in zip(models, colours):
        width = max(len(model.losses) // 50, 1)
        ax.plot(
            _smooth(model.losses, width).numpy(), color=colour, alpha=0.5, lw=1, label=f"{model.name} train"
        )
        steps, vals = zip(*model.val_curve)
        ax.plot(steps, vals, "o-", color=colour, ms=3, lw=1.5, label=f"{model.name} validation")
        ax.axvline(model.best_step, color=colour, ls=":", lw=1)
        lows.append(min(min(vals), min(model.losses)))
    uniform = DIM * math.log(LEVELS)
    ax.axhline(uniform, color="0.5", ls="--", lw=1, label="uniform over the levels")
    ax.set_ylim(min(lows) - 5.0, uniform + 20.0)
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats per image)")
    ax.set_title("training curves (dotted: best validation step)")
    ax.legend(fontsize="small")
    fig.suptitle("8x8 digits: neural spline flows at the same budget, NLL of the dequantised pixels")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> float:
    """Runs the comparison with command-line arguments ``argv``; returns flowtorch's test NLL in
    nats per image (of the dequantised pixels, Jacobian of the preprocessing included)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, OUT_DIR / "digits.png")
    parser.add_argument("--layers", type=int, default=None, help="spline layers of each flow")
    parser.add_argument("--hidden", type=int, default=None, help="units of each of the two hidden layers")
    parser.add_argument("--bins", type=int, default=8, help="spline bins")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between validation passes")
    args = parser.parse_args(argv)
    smoke: bool = args.smoke
    steps = pick(args.steps, 1000, 30, smoke)
    batch_size = pick(args.batch_size, 128, 128, smoke)
    lr = pick(args.lr, 1e-3, 1e-3, smoke)
    layers = pick(args.layers, 5, 2, smoke)
    hidden = (pick(args.hidden, 128, 128, smoke),) * 2
    eval_every = pick(args.eval_every, 50, 10, smoke)

    try:
        import zuko  # noqa: F401
    except ImportError:
        if not smoke:
            parser.error("the comparison needs zuko: pip install zuko (or run with --smoke)")
        have_zuko = False
        print("zuko is not installed: the comparison with zuko's NSF is skipped")
    else:
        have_zuko = True

    with num_threads(args.threads):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(args.seed)
        x_train, x_val, x_test = load_digits_split(N_VAL, N_TEST, generator)
        prep = Preprocess(dequantise(x_train, generator))
        # Fixed dequantisation noise for validation (one copy) and test (several copies, whose mean
        # estimates the expectation over u in the bound), the same for every model.
        v_val = dequantise(x_val, generator)
        test_copies = 2 if smoke else 10
        v_test = dequantise(x_test, generator, copies=test_copies)
        print(
            f"digits: {len(x_train)} training / {len(x_val)} validation / {len(x_test)} test images "
            f"of {DIM} pixels in 0..{LEVELS - 1}"
        )
        print(
            f"budget: {layers} autoregressive spline layers, hidden {hidden}, {args.bins} bins on "
            f"[-{BOUND:g}, {BOUND:g}]; Adam lr {lr:g} (cosine), batch {batch_size}, {steps} steps, "
            f"validation every {eval_every}"
        )
        builders = [build_flowtorch] + ([build_zuko] if have_zuko else [])
        models: list[Model] = []
        for build in builders:
            torch.manual_seed(args.seed)
            model = build(layers, hidden, args.bins)
            fit(
                model,
                prep,
                x_train,
                v_val,
                steps,
                batch_size,
                lr,
                eval_every,
                seed=args.seed + 1,
                progress=not args.no_progress,
            )
            model.test_nll = mean_nll(model, prep, v_test)
            models.append(model)
        path = plot(models, prep, x_test, rows=4 if smoke else 6, path=args.out)
        elapsed = time.perf_counter() - start

    print(
        f"test NLL: mean over {len(x_test)} images x {test_copies} dequantisations; best validation step kept"
    )
    header = f"{'model':<14} {'parameters':>10} {'test NLL (nats/image)':>22} {'bits/dim':>9}"
    print(header + f" {'best step':>9} {'train time (s)':>14}")
    for m in models:
        bpd = bits_per_dim(m.test_nll)
        row = f"{m.name:<14} {m.num_params:>10} {m.test_nll:>22.2f} {bpd:>9.3f}"
        print(row + f" {m.best_step:>9} {m.train_time:>14.1f}")
    if len(models) == 2:
        ratio = models[0].num_params / models[1].num_params
        within = "within" if abs(ratio - 1.0) <= 0.1 else "NOT within"
        print(f"parameters flowtorch / zuko: {ratio:.3f} ({within} 10% of each other)")
    uniform = DIM * math.log(LEVELS)
    print(
        f"uniform over the {LEVELS} levels: {uniform:.2f} nats/image ({bits_per_dim(uniform):.3f} bits/dim)"
    )
    print(f"wrote {path}")
    print(f"total {elapsed:.1f} s")
    nll = models[0].test_nll
    print(f"final test NLL (flowtorch NSF): {nll:.2f} nats/image ({bits_per_dim(nll):.3f} bits/dim)")
    return nll


if __name__ == "__main__":
    main()
