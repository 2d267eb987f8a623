"""What ``flowtorch.BijectiveMode`` costs and saves when a flow samples, or samples then scores.

``python benchmarks/mode_paths.py [--quick] [--json PATH] [--batches 1,16,512] [--models iaf,naf]``

For each model (D = 16, 5 layers, MADE or MLP conditioners with hidden layers ``[64, 64]``, one
torch thread) and each batch size, the same draw of ``n`` samples and their log-density is taken
along every path the library offers, next to a hand-written floor with the same weights and the
peers' versions of the same architecture:

========================  ================================================================
``floor``                 the model written in plain PyTorch (``floors.py``, or a sampling
                          direction built here from its parts), weights copied from the flow
``rsample_and_log_prob``  ``flow.rsample_and_log_prob((n,))``: one forward pass, no mode
``mode eager``            ``with BijectiveMode(): y = flow.rsample((n,)); lp = flow.log_prob(y)``
``mode deferred``         the same inside ``BijectiveMode(requires_ladj=False)``: the forward
                          pass records the parameters and ``log_prob`` computes log|det J|
``no mode``               ``y = flow.rsample((n,)); lp = flow.log_prob(y)``: ``log_prob`` runs the
                          inverse (left out above batch 16 when it is many times slower)
``zuko``, ``pyro``        the peers' sample-and-score: zuko's ``flow().rsample_and_log_prob``;
                          Pyro's ``TransformedDistribution.rsample`` then ``log_prob`` (served
                          by its transforms' one-entry caches)
========================  ================================================================

Each path is timed as a *step* (the draw and its log-density, grad mode on, no backward) and as
a *training step* (the reverse-KL loss to a standard normal, ``E[log q(y) + |y|^2 / 2]``, as
``compare.py`` writes it, then ``backward``; no optimizer step, so the weights stay put). The
"sample only" rows time ``flow.rsample((n,))`` with no mode, inside ``BijectiveMode()`` and
inside ``BijectiveMode(requires_ladj=False)``, where the forward pass may skip log|det J|.

The models: ``iaf`` (``Invert(AffineAutoregressive)``), ``nsf_ar_inv`` (``Invert`` of the
autoregressive rational-quadratic spline: one-pass sampling), ``nsf_coupling`` (``recipes.NSF``
with coupling layers, as ``compare.py``'s ``spline_coupling_step``), ``affine_coupling``
(``recipes.RealNVP``); and families whose log|det J| has a cost of its own, for the sample-only
rows: ``residual`` (``ResidualFlow`` with the exact log-det, D vector-Jacobian products and a
``slogdet``: the stochastic estimators draw from the global generator in an order that differs
between paths, so the same seed would not give the same log-density), ``naf``
(``Invert(NeuralAutoregressive)``, sampling in closed form), ``sylvester``, ``lu_linear``,
``planar``. The conditioners' output layers are scaled up from the library's near-zero
initialisation, and free parameters drawn away from zero, so that every layer does real work.

The floors: ``floors.FloorIAF``; ``floors.FloorSplineAR`` and
``floors.FloorCouplingSpline`` run in the sampling direction (the forward spline is written here
from Durkan et al.'s formulas); an affine coupling floor is written here. Every floor is checked
against ``rsample_and_log_prob`` from the same seed and left out, loudly, if it disagrees.

Before timing, every sample-and-score path of a model is run from one seed and compared with
``rsample_and_log_prob``: the log-densities (max abs difference, below 1e-3 in float32), the
samples and the gradients of the loss; warnings are recorded, and a ``CacheMissWarning`` inside
a mode counts as a disagreement.

Timing is ``_timing.measure``: interleaved rounds, medians, per-round ratios. Each table's ratios
are to the floor, or to ``rsample_and_log_prob`` where there is no floor. The summary checks:

(a) ``mode eager`` and ``mode deferred`` / ``rsample_and_log_prob`` <= 1.05;
(b) ``mode deferred`` / ``mode eager`` <= 1.02 (the deferred log-det costs nothing extra);
(c) sample only, deferred / eager < 1, for the families whose log-det costs something;
(d) at batch 1 and 16: flowtorch's fastest path / floor <= 1.5, and / each peer < 1.

Everything goes to ``benchmarks/results/mode_paths.json`` (``--json``). ``--quick`` (5 rounds of
12 ms samples) takes under two minutes with one of two cores busy elsewhere; the full run (8
rounds of 30 ms samples) about three times as long.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import floors
import peers
import run as run_py
from _timing import CLOCKS, Candidate, Result, Stats, format_table, looped, measure

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params
from flowtorch import recipes

D, LAYERS, HIDDEN = 16, 5, (64, 64)
SPLINE = compare.SPLINE  # 8 bins on [-3, 3]
BATCHES = (1, 16, 512)
OUTPUT_SCALE = 30.0  # the conditioners' output layers, scaled up as run.make_iaf does
FREE_PARAM_STD = 0.2  # free parameters near zero get this much noise
CHECK_BATCH, CHECK_SEED = 16, 1234
LP_TOL = 1e-3  # float32, 16 dims, 5 layers
GRAD_RTOL = 1e-3  # relative to the largest gradient
NO_MODE_SKIP = 8.0  # above batch 16, "no mode" is left out when its step is this many times slower

RESULTS = Path(__file__).resolve().parent / "results" / "mode_paths.json"

FLOOR = "floor"
RSL = "rsample_and_log_prob"
EAGER = "mode eager"
DEFERRED = "mode deferred"
NO_MODE = "no mode"
FT_PATHS = (RSL, EAGER, DEFERRED, NO_MODE)
S_NONE, S_EAGER, S_DEFERRED = "sample only, no mode", "sample only, mode eager", "sample only, mode deferred"

SampleScore = Callable[[int], tuple[Tensor, Tensor]]


@dataclass
class Variant:
    """One way to sample ``n`` points and score them: ``run(n) -> (y, log q(y))``; ``module``
    owns the parameters (its gradients are zeroed before each training step)."""

    name: str
    module: nn.Module
    run: SampleScore
    note: str = ""


# ------------------------------------------------------------------------------------------ floors
class FloorSplineARSample(floors.FloorSplineAR):
    """The inverted autoregressive spline flow: sampling inverts each layer's spline in one
    parallel pass (the direction ``FloorSplineAR.log_prob`` runs), layers first to last."""

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        d, k = self.d, self.bins
        z = torch.randn(n, d)
        lp = floors.standard_normal_log_prob(z)
        y = z
        for made in self.mades:
            out = made(y)
            uw = out[..., : d * k].view(n, d, k)
            uh = out[..., d * k : 2 * d * k].view(n, d, k)
            ud = out[..., 2 * d * k :].view(n, d, k - 1) + self.offset
            y, ld = floors.rq_spline_inverse(y, uw, uh, ud, self.bound)
            lp = lp + ld.sum(-1)  # the layer's log|det| is minus the spline's log-derivative
        return y, lp


def rq_spline_forward(x: Tensor, uw: Tensor, uh: Tensor, ud: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """The monotonic rational-quadratic spline (Durkan et al. 2019) on ``[-B, B]``, identity tails,
    with the parametrisation of ``floors.rq_spline_inverse``; returns ``y`` and ``log dy/dx``."""
    k = uw.shape[-1]
    w = floors.MIN_BIN + (1.0 - floors.MIN_BIN * k) * floors._softmax(uw)
    h = floors.MIN_BIN + (1.0 - floors.MIN_BIN * k) * floors._softmax(uh)
    d = floors.MIN_DERIVATIVE + torch.nn.functional.softplus(ud)
    zero = w.new_zeros(()).expand(*w.shape[:-1], 1)
    one = w.new_ones(()).expand(*w.shape[:-1], 1)
    xk = torch.cat((zero, torch.cumsum(w, -1)), -1) * (2 * bound) - bound
    yk = torch.cat((zero, torch.cumsum(h, -1)), -1) * (2 * bound) - bound
    dk = torch.cat((one, d, one), -1)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    idx = torch.searchsorted(xk[..., 1:-1].contiguous(), xc.unsqueeze(-1))
    x0, x1 = xk.gather(-1, idx).squeeze(-1), xk.gather(-1, idx + 1).squeeze(-1)
    y0, y1 = yk.gather(-1, idx).squeeze(-1), yk.gather(-1, idx + 1).squeeze(-1)
    d0, d1 = dk.gather(-1, idx).squeeze(-1), dk.gather(-1, idx + 1).squeeze(-1)

    wk, hk = x1 - x0, y1 - y0
    s = hk / wk
    xi = (xc - x0) / wk
    xi1 = xi * (1.0 - xi)
    denom = s + (d0 + d1 - 2.0 * s) * xi1
    y = y0 + hk * (s * xi * xi + d0 * xi1) / denom
    log_deriv = 2.0 * torch.log(s) + torch.log(d1 * xi * xi + 2.0 * s * xi1 + d0 * (1.0 - xi) ** 2)
    log_deriv = log_deriv - 2.0 * torch.log(denom)
    return torch.where(inside, y, x), torch.where(inside, log_deriv, 0.0)


def _mlp(net: nn.ModuleList, h: Tensor) -> Tensor:
    for i, lin in enumerate(net):
        h = lin(h)
        if i < len(net) - 1:
            h = torch.relu(h)
    return h


class FloorCouplingSplineSample(floors.FloorCouplingSpline):
    """The spline coupling flow in the sampling direction: the forward spline, layers first to last."""

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        k = self.bins
        z = torch.randn(n, self.d)
        lp = floors.standard_normal_log_prob(z)
        y = z
        for net, flip in zip(self.nets, self.flips):
            even, odd = y[..., 0::2], y[..., 1::2]
            a, b = (odd, even) if flip else (even, odd)
            h = _mlp(net, a)  # type: ignore[arg-type]
            m = b.shape[-1]
            uw = h[..., : m * k].view(n, m, k)
            uh = h[..., m * k : 2 * m * k].view(n, m, k)
            ud = h[..., 2 * m * k :].view(n, m, k - 1) + self.offset
            b, ld = rq_spline_forward(b, uw, uh, ud, self.bound)
            lp = lp - ld.sum(-1)
            even, odd = (b, a) if flip else (a, b)
            y = floors._interleave(even, odd, self.d)
        return y, lp


class FloorAffineCoupling(nn.Module):
    """RealNVP in the sampling direction: an MLP reads one half of the event (even or odd
    positions, alternating by layer) and emits ``[loc | log_scale]`` for the other half,
    ``y_b = loc + exp(s) x_b`` with ``s`` softly bounded in ``(-5, 5)`` (flowtorch's bound)."""

    def __init__(self, d: int, layers: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.d = d
        n_a, n_b = (d + 1) // 2, d // 2
        self.flips = [i % 2 == 1 for i in range(layers)]
        self.nets = nn.ModuleList()
        for flip in self.flips:
            n_in, n_out = (n_b, n_a) if flip else (n_a, n_b)
            sizes = [n_in, *hidden, 2 * n_out]
            self.nets.append(nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])))

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.d)
        lp = floors.standard_normal_log_prob(z)
        y = z
        for net, flip in zip(self.nets, self.flips):
            even, odd = y[..., 0::2], y[..., 1::2]
            a, b = (odd, even) if flip else (even, odd)
            out = _mlp(net, a)  # type: ignore[arg-type]
            m = b.shape[-1]
            s = floors.soft_bound(out[..., m:], -5.0, 5.0)
            b = out[..., :m] + torch.exp(s) * b
            lp = lp - s.sum(-1)
            even, odd = (b, a) if flip else (a, b)
            y = floors._interleave(even, odd, self.d)
        return y, lp


# ------------------------------------------------------------------------------------------ models
def _made(i: int) -> Any:
    """Layer ``i``'s MADE plan: orders alternate, as in flowtorch's recipes and the floors."""
    return params.DenseAutoregressive(hidden_dims=HIDDEN, permutation="identity" if i % 2 == 0 else "reverse")


def _spread(flow: nn.Module, seed: int) -> None:
    """Moves the flow away from the identity: conditioners' output layers scaled up (as
    ``run.make_iaf`` does), free parameters that start near zero drawn around it."""
    gen = torch.Generator().manual_seed(seed)
    outputs: set[int] = set()
    with torch.no_grad():
        for module in flow.modules():
            out = getattr(module, "output", None)
            if isinstance(module, (params.DenseAutoregressive, params.DenseCoupling)) and isinstance(
                out, nn.Linear
            ):
                out.weight.mul_(OUTPUT_SCALE)
                out.bias.copy_(0.05 * torch.randn(out.bias.shape, generator=gen))
                outputs.update((id(out.weight), id(out.bias)))
        for p in flow.parameters():
            if id(p) not in outputs and p.numel() and float(p.abs().max()) < 1e-2:
                p.add_(FREE_PARAM_STD * torch.randn(p.shape, generator=gen))


def _build(plan: Any, d: int) -> dist.Flow:
    torch.manual_seed(0)
    flow = dist.Flow(peers._standard_normal(d, False), plan, validate_args=False)
    _spread(flow, seed=0)
    return flow


def _floor_variant(floor: nn.Module, flow: dist.Flow, note: str) -> Variant:
    floors.copy_weights(flow, floor)
    return Variant(FLOOR, floor, floor.rsample_and_log_prob, note)  # type: ignore[arg-type]


def _try_peers(builders: Sequence[tuple[str, Callable[[], Variant]]]) -> list[Variant]:
    """The peers that build; one that is missing or fails is reported and left out."""
    out = []
    for lib, make in builders:
        try:
            torch.manual_seed(1)
            out.append(make())
        except ImportError as exc:
            print(f"  {lib}: not installed ({exc})")
        except Exception as exc:
            print(f"  {lib}: could not be built, left out ({type(exc).__name__}: {exc})")
    return out


def _peer_from_build(lib: str, kind: str, d: int) -> Variant:
    """A peer whose ``peers.build`` model already samples and scores (``kind="iaf"``)."""
    m = peers.build(lib, kind, d, LAYERS, HIDDEN)
    return Variant(lib, m.module, m.run, m.note)


def _zuko_inverted_spline_ar(d: int) -> Variant:
    import zuko

    made = peers.build("zuko", "spline_ar", d, LAYERS, HIDDEN, **SPLINE).module
    flow = zuko.flows.Flow([t.inv for t in made.transform.transforms], made.base)  # type: ignore[union-attr]
    return Variant("zuko", flow, lambda n: flow().rsample_and_log_prob((n,)), "MAF spline layers inverted")


def _pyro_sample_score(module: nn.Module, transforms: Sequence[Any], d: int, note: str) -> Variant:
    import pyro.distributions as pd

    base = pd.Normal(torch.zeros(d), torch.ones(d), validate_args=False).to_event(1)
    td = pd.TransformedDistribution(base, list(transforms), validate_args=False)

    def sample_and_log_prob(n: int) -> tuple[Tensor, Tensor]:
        y = td.rsample((n,))
        return y, td.log_prob(y)  # served by the transforms' one-entry caches

    return Variant("pyro", module, sample_and_log_prob, note)


def _pyro_spline_ar(d: int) -> Variant:
    # Pyro's autoregressive splines are parallel in the forward (sampling) direction
    module = peers.build("pyro", "spline_ar", d, LAYERS, HIDDEN, **SPLINE).module
    return _pyro_sample_score(module, list(module), d, "SplineAutoregressive, rsample then log_prob (cached)")


def _zuko_spline_coupling(d: int) -> Variant:
    flow = peers.build("zuko", "spline_coupling", d, LAYERS, HIDDEN, **SPLINE).module
    return Variant("zuko", flow, lambda n: flow().rsample_and_log_prob((n,)))  # type: ignore[operator]


def _pyro_spline_coupling(d: int) -> Variant:
    m = peers.build("pyro", "spline_coupling", d, LAYERS, HIDDEN, **SPLINE)
    # ``m.run`` is the TransformedDistribution's bound log_prob: its transforms, Permute included
    td = m.run.__self__  # type: ignore[attr-defined]
    return _pyro_sample_score(m.module, td.transforms, d, m.note + "; rsample then log_prob (cached)")


def _zuko_affine_coupling(d: int) -> Variant:
    import zuko
    from zuko.distributions import DiagNormal
    from zuko.flows.coupling import GeneralCouplingTransform
    from zuko.lazy import UnconditionalDistribution

    even = torch.arange(d) % 2 == 0
    transforms = [
        GeneralCouplingTransform(d, mask=even if i % 2 == 0 else ~even, hidden_features=list(HIDDEN))
        for i in range(LAYERS)
    ]
    base = UnconditionalDistribution(DiagNormal, torch.zeros(d), torch.ones(d), buffer=True)
    flow = zuko.flows.Flow(transforms, base)
    return Variant(
        "zuko", flow, lambda n: flow().rsample_and_log_prob((n,)), "GeneralCouplingTransform, affine"
    )


def _pyro_affine_coupling(d: int) -> Variant:
    import pyro.distributions.transforms as T
    from pyro.nn import DenseNN

    split = d // 2
    transforms: list[Any] = []
    for i in range(LAYERS):
        if i > 0:
            transforms.append(T.Permute(torch.arange(d - 1, -1, -1)))
        transforms.append(
            T.AffineCoupling(split, DenseNN(split, list(HIDDEN), param_dims=[d - split, d - split]))
        )
    module = nn.ModuleList(t for t in transforms if isinstance(t, nn.Module))
    return _pyro_sample_score(module, transforms, d, "AffineCoupling, Permute between layers; cached")


def _spline_kw() -> dict[str, Any]:
    return {"count_bins": SPLINE["bins"], "bound": SPLINE["bound"]}


@dataclass(frozen=True)
class Spec:
    """A benchmark model: its flow, its floor (if any), its peers, and whether its log|det J|
    costs enough that skipping it while sampling should show (target (c))."""

    key: str
    title: str
    plan: Callable[[int], Any]
    floor: Callable[[dist.Flow, int], Variant] | None = None
    peers: Callable[[int], list[Variant]] | None = None
    costly_ladj: bool = False


SPECS: dict[str, Spec] = {
    s.key: s
    for s in [
        Spec(
            "iaf",
            "IAF: Invert(AffineAutoregressive(MADE))",
            lambda d: bij.Compose([bij.Invert(bij.AffineAutoregressive(_made(i))) for i in range(LAYERS)]),
            lambda flow, d: _floor_variant(floors.FloorIAF(d, LAYERS, HIDDEN), flow, "floors.FloorIAF"),
            lambda d: _try_peers(
                [(lib, lambda lib=lib: _peer_from_build(lib, "iaf", d)) for lib in ("zuko", "pyro")]
            ),
        ),
        Spec(
            "nsf_ar_inv",
            f"NSF-AR inverted: Invert(SplineAutoregressive(MADE)), {SPLINE['bins']} bins",
            lambda d: bij.Compose(
                [bij.Invert(bij.SplineAutoregressive(_made(i), **_spline_kw())) for i in range(LAYERS)]
            ),
            lambda flow, d: _floor_variant(
                FloorSplineARSample(d, LAYERS, HIDDEN, **SPLINE),
                flow,
                "floors.FloorSplineAR, sampling direction",
            ),
            lambda d: _try_peers(
                [("zuko", lambda: _zuko_inverted_spline_ar(d)), ("pyro", lambda: _pyro_spline_ar(d))]
            ),
            costly_ladj=True,
        ),
        Spec(
            "nsf_coupling",
            f"NSF coupling: recipes.NSF(autoregressive=False), {SPLINE['bins']} bins",
            lambda d: recipes.NSF(LAYERS, SPLINE["bins"], SPLINE["bound"], False, HIDDEN),
            lambda flow, d: _floor_variant(
                FloorCouplingSplineSample(d, LAYERS, HIDDEN, **SPLINE),
                flow,
                "floors.FloorCouplingSpline, forward spline",
            ),
            lambda d: _try_peers(
                [("zuko", lambda: _zuko_spline_coupling(d)), ("pyro", lambda: _pyro_spline_coupling(d))]
            ),
            costly_ladj=True,
        ),
        Spec(
            "affine_coupling",
            "affine coupling: recipes.RealNVP",
            lambda d: recipes.RealNVP(LAYERS, HIDDEN),
            lambda flow, d: _floor_variant(FloorAffineCoupling(d, LAYERS, HIDDEN), flow, "written here"),
            lambda d: _try_peers(
                [("zuko", lambda: _zuko_affine_coupling(d)), ("pyro", lambda: _pyro_affine_coupling(d))]
            ),
        ),
        Spec(
            "residual",
            "residual: ResidualFlow(hidden_dims=(64, 64), estimator='exact')",
            lambda d: bij.Compose(
                [bij.ResidualFlow(hidden_dims=HIDDEN, estimator="exact") for _ in range(LAYERS)]
            ),
            costly_ladj=True,
        ),
        Spec(
            "naf",
            "NAF inverted: Invert(NeuralAutoregressive(MADE)), 16 sigmoids",
            lambda d: bij.Compose([bij.Invert(bij.NeuralAutoregressive(_made(i))) for i in range(LAYERS)]),
            costly_ladj=True,
        ),
        Spec(
            "sylvester",
            "Sylvester (Householder, M = D)",
            lambda d: bij.Compose([bij.Sylvester() for _ in range(LAYERS)]),
        ),
        Spec("lu_linear", "LULinear", lambda d: bij.Compose([bij.LULinear() for _ in range(LAYERS)])),
        Spec("planar", "Planar", lambda d: bij.Compose([bij.Planar() for _ in range(LAYERS)])),
    ]
}


# -------------------------------------------------------------------------------------- the paths
def flowtorch_variants(flow: dist.Flow) -> list[Variant]:
    def one_pass(n: int) -> tuple[Tensor, Tensor]:
        return flow.rsample_and_log_prob((n,))

    def in_mode(requires_ladj: bool) -> SampleScore:
        def sample_score(n: int) -> tuple[Tensor, Tensor]:
            with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
                y = flow.rsample((n,))
                return y, flow.log_prob(y)

        return sample_score

    def no_mode(n: int) -> tuple[Tensor, Tensor]:
        y = flow.rsample((n,))
        return y, flow.log_prob(y)

    return [
        Variant(RSL, flow, one_pass),
        Variant(EAGER, flow, in_mode(True)),
        Variant(DEFERRED, flow, in_mode(False)),
        Variant(NO_MODE, flow, no_mode),
    ]


def sample_only(flow: dist.Flow) -> list[tuple[str, Callable[[int], Tensor]]]:
    def in_mode(requires_ladj: bool) -> Callable[[int], Tensor]:
        def sample(n: int) -> Tensor:
            with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
                return flow.rsample((n,))

        return sample

    return [
        (S_NONE, lambda n: flow.rsample((n,))),
        (S_EAGER, in_mode(True)),
        (S_DEFERRED, in_mode(False)),
    ]


def _loss(y: Tensor, lp: Tensor) -> Tensor:
    """Reverse KL to a standard normal, up to a constant (``compare._reverse_kl_loss``)."""
    return (lp + 0.5 * (y * y).sum(-1)).mean()


def forward_step(v: Variant, n: int) -> Callable[[], Any]:
    return lambda: v.run(n)


def train_step(v: Variant, n: int) -> Callable[[], None]:
    loss = compare._reverse_kl_loss(v.run, n)
    module = v.module

    def step() -> None:
        module.zero_grad(set_to_none=True)
        loss().backward()

    return step


# ------------------------------------------------------------------------------------- correctness
def _warning_counts(caught: Sequence[warnings.WarningMessage]) -> dict[str, int]:
    return dict(Counter(w.category.__name__ for w in caught))


def _grads(module: nn.Module) -> Tensor:
    return torch.cat([p.grad.reshape(-1) for p in module.parameters() if p.grad is not None])


def check(flow: dist.Flow, variants: Sequence[Variant], floor: Variant | None, n: int) -> dict[str, Any]:
    """Every path from seed ``CHECK_SEED`` against ``rsample_and_log_prob``: log-densities,
    samples, gradients of the loss, warnings (``CacheMissWarning`` inside a mode is an error)."""
    outs: dict[str, tuple[Tensor, Tensor, Tensor | None, dict[str, int]]] = {}
    for v in [*variants, *([floor] if floor else [])]:
        v.module.zero_grad(set_to_none=True)
        torch.manual_seed(CHECK_SEED)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y, lp = v.run(n)
            _loss(y, lp).backward()
        grad = _grads(v.module) if v.name != FLOOR else None
        outs[v.name] = (y.detach(), lp.detach(), grad, _warning_counts(caught))
        v.module.zero_grad(set_to_none=True)
    samples: dict[str, Tensor] = {}
    sample_warnings: dict[str, dict[str, int]] = {}
    for name, sample in sample_only(flow):
        torch.manual_seed(CHECK_SEED)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            samples[name] = sample(n).detach()
        sample_warnings[name] = _warning_counts(caught)

    ref_y, ref_lp, ref_grad, ref_warn = outs[RSL]
    assert ref_grad is not None
    gmax = ref_grad.abs().max().item()
    report: dict[str, Any] = {
        "seed": CHECK_SEED,
        "batch": n,
        "reference": RSL,
        "log_prob_range": [ref_lp.min().item(), ref_lp.max().item()],
        "grad_abs_max": gmax,
        "reference_warnings": ref_warn,
        "paths": {},
    }
    print(
        f"  correctness (batch {n}, seed {CHECK_SEED}, against {RSL}: log q in "
        f"[{ref_lp.min().item():.2f}, {ref_lp.max().item():.2f}], max |grad| {gmax:.3g}):"
    )
    problems = []
    for name, (y, lp, grad, warned) in outs.items():
        if name == RSL:
            continue
        lp_diff = (lp - ref_lp).abs().max().item()
        y_diff = (y - ref_y).abs().max().item()
        g_diff = None if grad is None else (grad - ref_grad).abs().max().item()
        misses = warned.get("CacheMissWarning", 0)
        ok = lp_diff < LP_TOL and y_diff < LP_TOL and misses == 0
        if g_diff is not None and g_diff > GRAD_RTOL * max(gmax, 1.0):
            ok = False
        report["paths"][name] = {
            "log_prob_max_abs_diff": lp_diff,
            "sample_max_abs_diff": y_diff,
            "grad_max_abs_diff": g_diff,
            "warnings": warned,
            "agree": ok,
        }
        if not ok:
            problems.append(name)
        grad_text = "" if g_diff is None else f", |d grad| {g_diff:.1e}"
        warn_text = f", warnings {warned}" if warned else ""
        print(
            f"    {name:<22} |d log q| {lp_diff:.1e}, |d y| {y_diff:.1e}{grad_text}{warn_text}"
            + ("" if ok else "   <-- DISAGREES")
        )
    for name, y in samples.items():
        y_diff = (y - ref_y).abs().max().item()
        ok = y_diff < LP_TOL and sample_warnings[name].get("CacheMissWarning", 0) == 0
        report["paths"][name] = {
            "sample_max_abs_diff": y_diff,
            "warnings": sample_warnings[name],
            "agree": ok,
        }
        if not ok:
            problems.append(name)
        warn_text = f", warnings {sample_warnings[name]}" if sample_warnings[name] else ""
        print(f"    {name:<22} |d y| {y_diff:.1e}{warn_text}" + ("" if ok else "   <-- DISAGREES"))
    report["problems"] = problems
    report["agree"] = not [p for p in problems if p != FLOOR]
    if problems:
        print(f"  WARNING: {', '.join(problems)} disagree(s) with {RSL} (or a mode missed its cache)")
    return report


# ------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class Config:
    rounds: int
    target_s: float
    clock: Callable[[], float]


def _trial(name: str, fn: Callable[[], Any]) -> float | None:
    """Seconds of a second call of ``fn`` (the first warms up); ``None``, reported, if it raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
    except Exception as exc:
        print(f"  {name}: fails, left out ({type(exc).__name__}: {exc})")
        return None


def _timed_group(
    cfg: Config, title: str, steps: Sequence[tuple[str, Callable[[], Any]]], baseline: str
) -> tuple[list[Result], dict[str, int]]:
    candidates = [Candidate(name, looped(step)) for name, step in steps]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = measure(
            candidates, baseline=baseline, repeats=cfg.rounds, target_s=cfg.target_s, clock=cfg.clock
        )
    counts = _warning_counts(caught)
    print()
    print(format_table(title, results, baseline, unit="per step"))
    if counts:
        print(f"  warnings while timing: {counts}")
    return results, counts


@dataclass
class _Ratios:
    """The per-round ratios of one table: printed, kept in ``pairs``, and, for a target, a row
    in ``targets``."""

    results: Sequence[Result]
    model: str
    batch: int
    group: str
    targets: list[dict[str, Any]]
    pairs: dict[str, Any] = field(default_factory=dict)

    def pair(self, a: str, b: str) -> Stats | None:
        names = {r.name for r in self.results}
        if a not in names or b not in names:
            return None
        s = run_py.ratio_between(self.results, a, b)
        self.pairs[f"{a} / {b}"] = s.to_dict()
        print(f"  {a} / {b}: {s.median:.3f}x (IQR {s.q1:.3f}-{s.q3:.3f})")
        return s

    def target(
        self,
        kind: str,
        a: str,
        b: str,
        limit: float,
        strict: bool = False,
        what: str | None = None,
        applies: bool = True,
    ) -> None:
        s = self.pair(a, b)
        if s is None:
            return
        self.targets.append(
            {
                "target": kind,
                "what": what or f"{a} / {b}",
                "model": self.model,
                "batch": self.batch,
                "group": self.group,
                "value": s.median,
                "q1": s.q1,
                "q3": s.q3,
                "limit": limit,
                "strict": strict,
                "met": s.median < limit if strict else s.median <= limit,
                "applies": applies,
            }
        )


def time_model(
    cfg: Config,
    spec: Spec,
    flow: dist.Flow,
    variants: list[Variant],
    batch: int,
    targets: list[dict[str, Any]],
) -> dict[str, Any]:
    """The three tables of one model at one batch size, and the rows of the targets."""
    out: dict[str, Any] = {}
    trial: dict[str, float] = {}
    kept: list[Variant] = []
    for v in variants:
        t = _trial(v.name, train_step(v, batch))
        if t is not None:
            trial[v.name] = t
            kept.append(v)
    if batch > 16 and NO_MODE in trial and RSL in trial and trial[NO_MODE] > NO_MODE_SKIP * trial[RSL]:
        print(
            f"  {NO_MODE}: left out at batch {batch} ({trial[NO_MODE] * 1e3:.0f} ms a step, "
            f"{trial[NO_MODE] / trial[RSL]:.0f}x {RSL})"
        )
        kept = [v for v in kept if v.name != NO_MODE]
        out["no_mode_left_out"] = {"trial_s": trial[NO_MODE], "rsl_trial_s": trial[RSL]}
    names = [v.name for v in kept]
    baseline = FLOOR if FLOOR in names else RSL
    peer_names = [n for n in names if n not in (FLOOR, *FT_PATHS)]
    ft_names = [n for n in FT_PATHS if n in names]

    for group, label, make in (
        ("step", "sample + log_prob, no backward (grad mode on)", forward_step),
        ("train", "sample + log_prob, reverse-KL loss, backward", train_step),
    ):
        steps = [(v.name, make(v, batch)) for v in kept]
        results, counts = _timed_group(cfg, f"{spec.key} batch {batch} / {group}: {label}", steps, baseline)
        table = _Ratios(results, spec.key, batch, group, targets)
        table.target("a", EAGER, RSL, 1.05)
        table.target("a", DEFERRED, RSL, 1.05)
        table.target("b", DEFERRED, EAGER, 1.02)
        table.pair(NO_MODE, RSL)
        # (d): flowtorch's fastest path (by median time), against the floor and each peer
        best = None
        if ft_names:
            by = {r.name: r for r in results}
            best = min(ft_names, key=lambda n: by[n].seconds.median)
            print(f"  fastest flowtorch path: {best}")
            if batch in (1, 16):
                table.target("d", best, FLOOR, 1.5, what=f"best flowtorch / {FLOOR}")
                for peer in peer_names:
                    table.target("d", best, peer, 1.0, strict=True, what=f"best flowtorch / {peer}")
        out[group] = {
            **run_py.results_dict(results, baseline),
            "pairs": table.pairs,
            "best_flowtorch_path": best,
            "warnings": counts,
        }

    sample_steps = [(name, (lambda s=s: s(batch))) for name, s in sample_only(flow)]
    title = f"{spec.key} batch {batch} / sample only: flow.rsample"
    results, counts = _timed_group(cfg, title, sample_steps, S_NONE)
    table = _Ratios(results, spec.key, batch, "sample", targets)
    table.pair(S_EAGER, S_NONE)
    table.pair(S_DEFERRED, S_NONE)
    what = "sample only: deferred / eager"
    table.target("c", S_DEFERRED, S_EAGER, 1.0, strict=True, what=what, applies=spec.costly_ladj)
    out["sample"] = {**run_py.results_dict(results, S_NONE), "pairs": table.pairs, "warnings": counts}
    return out


# ----------------------------------------------------------------------------------------- summary
TARGET_TITLES = {
    "a": "(a) sample-then-score in a mode / rsample_and_log_prob  (<= 1.05)",
    "b": "(b) deferred log-det: mode deferred / mode eager, sample-then-score  (<= 1.02)",
    "c": "(c) sample only: mode deferred / mode eager  (< 1 for costly log-dets; * = applies)",
    "d": "(d) batch 1 and 16: fastest flowtorch path / floor (<= 1.5), / each peer (< 1)",
}


def print_summary(rows: Sequence[dict[str, Any]], batches: Sequence[int]) -> None:
    print("\n=== targets (medians of per-round ratios) ===")
    for kind, title in TARGET_TITLES.items():
        mine = [r for r in rows if r["target"] == kind]
        if not mine:
            continue
        print(f"\n{title}")
        keys = list(dict.fromkeys((r["model"], r["group"], r["what"]) for r in mine))
        width = max(len(f"{m} {g}: {w}") for m, g, w in keys)
        print(f"  {'':<{width}}  " + "  ".join(f"{'batch ' + str(b):>14}" for b in batches))
        for m, g, w in keys:
            cells = []
            for b in batches:
                hit = [r for r in mine if (r["model"], r["group"], r["what"], r["batch"]) == (m, g, w, b)]
                if not hit:
                    cells.append(f"{'-':>14}")
                    continue
                r = hit[0]
                status = "met" if r["met"] else "NOT MET"
                if kind == "c" and not r.get("applies", True):
                    status = "(n/a)"
                cells.append(f"{r['value']:6.3f} {status:>7}")
            star = "*" if kind == "c" and any(r.get("applies") for r in mine if r["model"] == m) else ""
            print(f"  {f'{m}{star} {g}: {w}':<{width}}  " + "  ".join(cells))
    counted = [r for r in rows if r.get("applies", True)]
    met = sum(r["met"] for r in counted)
    print(f"\n  {met} of {len(counted)} target checks met")


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few rounds, short samples (under 2 minutes)")
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})"
    )
    parser.add_argument(
        "--batches",
        default=",".join(map(str, BATCHES)),
        help="batch sizes, comma-separated (default 1,16,512)",
    )
    parser.add_argument(
        "--models", default=",".join(SPECS), help=f"models, comma-separated (default all: {', '.join(SPECS)})"
    )
    parser.add_argument("--dim", type=int, default=D, help=f"event size D (default {D})")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 8; 5 with --quick)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="process",
        help="process CPU time (default: steadiest with one thread on a busy machine) or wall time",
    )
    args = parser.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error("--batches takes integers, e.g. 1,16,512")
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches must be positive")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in SPECS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(SPECS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = Config(
        rounds=args.repeats or (5 if args.quick else 8),
        target_s=0.012 if args.quick else 0.03,
        clock=CLOCKS[args.clock],
    )
    versions = peers.import_peers()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "flowtorch": flowtorch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "peers": versions,
        "quick": args.quick,
        "clock": args.clock,
        "rounds": cfg.rounds,
        "target_s": cfg.target_s,
        **run_py._git_revision(),
    }
    d = args.dim
    print(
        f"flowtorch {meta['flowtorch']}, torch {meta['torch']}, 1 thread, {args.clock} clock, "
        f"commit {meta['commit']}" + (" (src/ has uncommitted changes)" if meta["src_modified"] else "")
    )
    print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"D={d}, {LAYERS} layers, hidden {list(HIDDEN)}, batches {args.batches}, {cfg.rounds} rounds")
    start_all = time.perf_counter()
    targets: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for key in args.models:
        spec = SPECS[key]
        start = time.perf_counter()
        print(f"\n=== {key}: {spec.title} ===", flush=True)
        flow = _build(spec.plan(d), d)
        variants = flowtorch_variants(flow)
        floor = None
        if spec.floor is not None:
            floor = spec.floor(flow, d)
        peer_variants = spec.peers(d) if spec.peers is not None else []
        counts = {
            v.name: peers.n_params(v.module)
            for v in [*variants[:1], *([floor] if floor else []), *peer_variants]
        }
        counts = {("flowtorch" if k == RSL else k): c for k, c in counts.items()}
        print("  parameters: " + ", ".join(f"{k} {c}" for k, c in counts.items()))
        for v in [*([floor] if floor else []), *peer_variants]:
            if v.note:
                print(f"  {v.name}: {v.note}")
        correctness = check(flow, variants, floor, min(CHECK_BATCH, max(args.batches)))
        if floor is not None and FLOOR in correctness["problems"]:
            print(f"  WARNING: the floor does not compute the flow's model; it is left out of {key}'s tables")
            floor = None
        paths = [*([floor] if floor else []), *variants, *peer_variants]
        per_batch = {}
        for batch in args.batches:
            print(f"\n-- {key}, batch {batch}", flush=True)
            per_batch[f"batch={batch}"] = time_model(cfg, spec, flow, paths, batch, targets)
        elapsed = time.perf_counter() - start
        models[key] = {
            "title": spec.title,
            "config": {"d": d, "layers": LAYERS, "hidden": list(HIDDEN), **(SPLINE if "nsf" in key else {})},
            "parameters": counts,
            "costly_ladj": spec.costly_ladj,
            "correctness": correctness,
            "batches": per_batch,
            "elapsed_s": elapsed,
        }
        print(f"({key}: {elapsed:.0f} s)", flush=True)
    print_summary(targets, args.batches)
    disagree = [k for k, m in models.items() if not m["correctness"]["agree"]]
    if disagree:
        print(f"\n  WARNING: paths disagree with {RSL} in: {', '.join(disagree)} (see the correctness lines)")
    meta["elapsed_s"] = time.perf_counter() - start_all
    print(f"\ntotal {meta['elapsed_s']:.0f} s")
    payload = {"meta": meta, "models": models, "targets": targets}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
