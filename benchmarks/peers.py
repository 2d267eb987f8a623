"""The benchmark models built with flowtorch, its peers and flowtorch 0.8, the same architecture in each.

Every builder returns a :class:`Model`: the ``nn.Module`` that owns the parameters, the function
the workload calls (``log_prob(x)`` for density workloads, ``sample_and_log_prob(n)`` for
sample-then-score), and a note saying how the library was set up. Each library is used the way
its documentation shows, configured to the benchmark's architecture: ``layers`` layers, each
conditioned by a masked (autoregressive) or plain (coupling) MLP with ``hidden`` layers and ReLU;
every linear layer of every library holds the same number of parameters, which the benchmarks
print. Between layers each library changes the variable order in its own way (alternating MADE
orders in flowtorch, zuko, Pyro and the floors; a reverse or random permutation layer in nflows
and normflows; random MADE orders in 0.8).

The libraries are imported when a builder is first called; a library that is not installed
raises ``ImportError``, which the benchmarks report as "not installed".

Validation of distribution arguments: zuko turns ``torch.distributions`` validation off for the
whole process when imported, and Pyro turns it on. :func:`import_peers` imports all peers and
then sets torch's default back to off, so that the order of imports does not matter; flowtorch
models pass ``validate_args`` explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

import flowtorch.distributions as ftdist
from flowtorch import recipes

__all__ = ["LIBRARIES", "MLP", "Model", "build", "import_peers", "n_params"]

#: Peer libraries, in the order the tables list them.
LIBRARIES = ("zuko", "nflows", "normflows", "pyro", "flowtorch 0.8")


@dataclass
class Model:
    """A built model: ``run`` is ``log_prob(x)`` or ``sample_and_log_prob(n) -> (y, log_p)``."""

    name: str
    module: nn.Module
    run: Callable[..., Any]
    note: str = ""


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def import_peers() -> dict[str, str]:
    """Imports the installed peers; returns ``{library: version or 'not installed: ...'}``."""
    versions: dict[str, str] = {}
    for lib, mod in (("zuko", "zuko"), ("nflows", "nflows"), ("normflows", "normflows"), ("pyro", "pyro")):
        try:
            m = __import__(mod)
            versions[lib] = getattr(m, "__version__", "?")
        except ImportError as exc:
            versions[lib] = f"not installed: {exc}"
    torch.distributions.Distribution.set_default_validate_args(False)
    return versions


def _standard_normal(d: int, validate: bool) -> torch.distributions.Distribution:
    normal = torch.distributions.Normal(torch.zeros(d), torch.ones(d), validate_args=validate)
    return torch.distributions.Independent(normal, 1, validate_args=validate)


def _orders(d: int, layers: int) -> list[Tensor]:
    """Alternating identity and reversed orders, as flowtorch's recipes use."""
    return [torch.arange(d) if i % 2 == 0 else torch.arange(d - 1, -1, -1) for i in range(layers)]


class MLP(nn.Module):
    """A plain ReLU MLP taking ``(x, context=None)``, as nflows' and normflows' coupling layers
    call their networks."""

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return x


def _uniform_hidden(lib: str, hidden: Sequence[int]) -> tuple[int, int]:
    """nflows-style MADEs take one hidden width and a number of blocks."""
    if len(set(hidden)) != 1:
        raise ValueError(f"{lib}: hidden layers must all have one width, got {tuple(hidden)}")
    return hidden[0], len(hidden) - 1


# ===================================================================================== flowtorch
def flowtorch_model(
    kind: str, d: int, layers: int, hidden: Sequence[int], validate: bool, **kw: Any
) -> Model:
    plan = {
        "maf": lambda: recipes.MAF(layers, hidden),
        "iaf": lambda: recipes.IAF(layers, hidden),
        "spline_ar": lambda: recipes.NSF(layers, kw["bins"], kw["bound"], True, hidden),
        "spline_coupling": lambda: recipes.NSF(layers, kw["bins"], kw["bound"], False, hidden),
    }[kind]()
    flow = ftdist.Flow(_standard_normal(d, validate), plan, validate_args=validate)
    if kind == "iaf":
        return Model("flowtorch", flow, lambda n: flow.rsample_and_log_prob((n,)), "rsample_and_log_prob")
    return Model("flowtorch", flow, flow.log_prob, f"validate_args={validate}")


# ========================================================================================== zuko
def _zuko(kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    import zuko
    from zuko.distributions import DiagNormal
    from zuko.flows.coupling import GeneralCouplingTransform
    from zuko.lazy import UnconditionalDistribution
    from zuko.transforms import MonotonicRQSTransform

    hidden = list(hidden)
    if kind in ("maf", "iaf"):
        flow = zuko.flows.MAF(d, transforms=layers, hidden_features=hidden)
    elif kind == "spline_ar":
        rqs = partial(MonotonicRQSTransform, bound=kw["bound"])
        shapes = [(kw["bins"],), (kw["bins"],), (kw["bins"] - 1,)]
        flow = zuko.flows.MAF(d, transforms=layers, hidden_features=hidden, univariate=rqs, shapes=shapes)
    elif kind == "spline_coupling":
        rqs = partial(MonotonicRQSTransform, bound=kw["bound"])
        shapes = [(kw["bins"],), (kw["bins"],), (kw["bins"] - 1,)]
        even = torch.arange(d) % 2 == 0
        transforms = [
            GeneralCouplingTransform(
                d, mask=even if i % 2 == 0 else ~even, univariate=rqs, shapes=shapes, hidden_features=hidden
            )
            for i in range(layers)
        ]
        base = UnconditionalDistribution(DiagNormal, torch.zeros(d), torch.ones(d), buffer=True)
        flow = zuko.flows.Flow(transforms, base)
    else:
        raise KeyError(kind)
    if kind == "iaf":
        iaf = zuko.flows.Flow([t.inv for t in flow.transform.transforms], flow.base)
        return Model("zuko", iaf, lambda n: iaf().rsample_and_log_prob((n,)), "MAF layers inverted")
    return Model("zuko", flow, lambda x: flow().log_prob(x))


# ======================================================================================== nflows
def _nflows(kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        CompositeTransform,
        InverseTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        PiecewiseRationalQuadraticCouplingTransform,
        ReversePermutation,
    )

    width, blocks = _uniform_hidden("nflows", hidden)
    made = {"num_blocks": blocks, "use_residual_blocks": False}
    transforms: list[nn.Module] = []
    for i in range(layers):
        if kind in ("maf", "iaf", "spline_ar") and i > 0:
            transforms.append(ReversePermutation(d))
        if kind in ("maf", "iaf"):
            t: nn.Module = MaskedAffineAutoregressiveTransform(d, width, **made)
            transforms.append(InverseTransform(t) if kind == "iaf" else t)
        elif kind == "spline_ar":
            transforms.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    d, width, num_bins=kw["bins"], tails="linear", tail_bound=kw["bound"], **made
                )
            )
        elif kind == "spline_coupling":
            mask = (torch.arange(d) % 2 == (0 if i % 2 else 1)).int()  # 1: transformed
            transforms.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask,
                    lambda n_in, n_out: MLP(n_in, n_out, hidden),
                    num_bins=kw["bins"],
                    tails="linear",
                    tail_bound=kw["bound"],
                )
            )
        else:
            raise KeyError(kind)
    flow = Flow(CompositeTransform(transforms), StandardNormal([d]))
    if kind == "iaf":
        return Model("nflows", flow, flow.sample_and_log_prob, "InverseTransform(MAF layer)")
    return Model("nflows", flow, flow.log_prob)


# ===================================================================================== normflows
def _normflows(kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive
    from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
    from normflows.utils.masks import create_alternating_binary_mask

    width, blocks = _uniform_hidden("normflows", hidden)
    flows: list[nn.Module] = []
    for i in range(layers):
        if kind in ("maf", "iaf", "spline_ar") and i > 0:
            flows.append(nf.flows.Permute(d, mode="shuffle"))
        if kind in ("maf", "iaf"):
            layer = nf.flows.MaskedAffineAutoregressive(
                d, width, num_blocks=blocks, use_residual_blocks=False
            )
            # normflows' forward is the sampling direction; the MAF scores data with one pass
            flows.append(nf.flows.Reverse(layer) if kind == "maf" else layer)
        elif kind == "spline_ar":
            layer = nf.flows.AutoregressiveRationalQuadraticSpline(
                d, 1, width, num_bins=kw["bins"], tail_bound=kw["bound"]
            )
            # the wrapper's network has residual blocks: give it a plain MADE of the benchmark's shape
            layer.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
                features=d,
                hidden_features=width,
                num_bins=kw["bins"],
                tails="linear",
                tail_bound=kw["bound"],
                num_blocks=blocks,
                use_residual_blocks=False,
                activation=nn.ReLU(),
            )
            flows.append(layer)
        elif kind == "spline_coupling":
            layer = nf.flows.CoupledRationalQuadraticSpline(
                d, 1, width, num_bins=kw["bins"], tail_bound=kw["bound"]
            )
            # the wrapper uses a residual network and an extra unconditional spline: replace it by
            # normflows' coupling layer with a plain MLP of the benchmark's shape
            layer.prqct = PiecewiseRationalQuadraticCoupling(
                mask=create_alternating_binary_mask(d, even=i % 2 == 1),
                transform_net_create_fn=lambda n_in, n_out: MLP(n_in, n_out, hidden),
                num_bins=kw["bins"],
                tails="linear",
                tail_bound=kw["bound"],
                apply_unconditional_transform=False,
            )
            flows.append(layer)
        else:
            raise KeyError(kind)
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), flows)
    if kind == "iaf":
        return Model("normflows", model, model.sample, "NormalizingFlow.sample")
    note = "Reverse(MaskedAffineAutoregressive)" if kind == "maf" else ""
    return Model("normflows", model, model.log_prob, note)


# ========================================================================================== Pyro
def _pyro(kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    import pyro.distributions as pd
    import pyro.distributions.transforms as T
    from pyro.nn import AutoRegressiveNN, DenseNN

    hidden = list(hidden)
    base = pd.Normal(torch.zeros(d), torch.ones(d), validate_args=False).to_event(1)
    transforms: list[Any] = []
    for i, order in enumerate(_orders(d, layers)):
        if kind in ("maf", "iaf"):
            transforms.append(T.AffineAutoregressive(AutoRegressiveNN(d, hidden, permutation=order)))
        elif kind == "spline_ar":
            k = kw["bins"]
            arn = AutoRegressiveNN(d, hidden, param_dims=[k, k, k - 1], permutation=order)
            transforms.append(
                T.SplineAutoregressive(d, arn, count_bins=k, bound=kw["bound"], order="quadratic")
            )
        elif kind == "spline_coupling":
            k, split = kw["bins"], d // 2
            if i > 0:
                transforms.append(T.Permute(torch.arange(d - 1, -1, -1)))
            net = DenseNN(split, hidden, param_dims=[(d - split) * k, (d - split) * k, (d - split) * (k - 1)])
            transforms.append(
                T.SplineCoupling(
                    d, split, net, count_bins=k, bound=kw["bound"], order="quadratic", identity=True
                )
            )
        else:
            raise KeyError(kind)
    module = nn.ModuleList(t for t in transforms if isinstance(t, nn.Module))
    if kind == "iaf":
        flow = pd.TransformedDistribution(base, transforms, validate_args=False)

        def sample_and_log_prob(n: int) -> tuple[Tensor, Tensor]:
            y = flow.rsample((n,))
            return y, flow.log_prob(y)  # served by the transforms' one-entry caches

        return Model("pyro", module, sample_and_log_prob, "rsample, then log_prob (cached)")
    if kind in ("maf", "spline_ar"):
        # Pyro's autoregressive transforms are parallel forward: score data through their inverses
        transforms = [t.inv for t in transforms]
        note = "TransformedDistribution of the transforms' .inv"
    else:
        note = "identity=True (no spline on the conditioning half); Permute between layers"
    flow = pd.TransformedDistribution(base, transforms, validate_args=False)
    return Model("pyro", module, flow.log_prob, note)


# ================================================================================ flowtorch 0.8
def _flowtorch08(ft08: ModuleType, kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    import warnings

    bij, params, dist = ft08.bijectors, ft08.parameters, ft08.distributions
    hidden = tuple(hidden)
    if kind == "spline_coupling":
        raise NotImplementedError("flowtorch 0.8 has no coupling layers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind in ("maf", "iaf"):
            plans = [
                bij.AffineAutoregressive(params.DenseAutoregressive(hidden_dims=hidden))
                for _ in range(layers)
            ]
        elif kind == "spline_ar":
            plans = [
                bij.SplineAutoregressive(
                    params.DenseAutoregressive(hidden_dims=hidden),
                    count_bins=kw["bins"],
                    bound=kw["bound"],
                    order="quadratic",
                )
                for _ in range(layers)
            ]
        else:
            raise KeyError(kind)
        flow = dist.Flow(_standard_normal(d, False), bij.Compose(bijectors=plans))
    if kind == "iaf":

        def sample_and_log_prob(n: int) -> tuple[Tensor, Tensor]:
            y = flow.rsample((n,))
            return y, flow.log_prob(y)  # served by 0.8's BijectiveTensor

        return Model("flowtorch 0.8", flow, sample_and_log_prob, "rsample, then log_prob (BijectiveTensor)")
    # 0.8's autoregressive layers are parallel forward; its Compose cannot score data through
    # Invert layers, so log_prob inverts each layer sequentially (D passes), as 0.8's tutorial does
    return Model("flowtorch 0.8", flow, flow.log_prob, f"sequential inverse, {d} passes per layer")


def build(lib: str, kind: str, d: int, layers: int, hidden: Sequence[int], **kw: Any) -> Model:
    """Builds ``lib``'s model of workload ``kind`` (``maf``, ``iaf``, ``spline_ar``,
    ``spline_coupling``); ``kw``: ``bins``, ``bound`` for splines, ``ft08`` for flowtorch 0.8."""
    if lib == "zuko":
        return _zuko(kind, d, layers, hidden, **kw)
    if lib == "nflows":
        return _nflows(kind, d, layers, hidden, **kw)
    if lib == "normflows":
        return _normflows(kind, d, layers, hidden, **kw)
    if lib == "pyro":
        return _pyro(kind, d, layers, hidden, **kw)
    if lib == "flowtorch 0.8":
        ft08 = kw.pop("ft08")
        return _flowtorch08(ft08, kind, d, layers, hidden, **kw)
    raise KeyError(lib)
