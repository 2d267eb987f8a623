"""Hand-written PyTorch floors: the benchmark models with no library machinery.

Each floor is the least code that computes the same model as flowtorch's flow: plain
``nn.Linear`` weights multiplied by fixed 0/1 masks, the elementwise maths written inline, the
standard normal base density as a formula. No distributions, no bijector classes, no checks, no
caches. What flowtorch adds on top of a floor is the price of its generality; the benchmarks
report every library's time as a ratio to the floor of the same model.

The floors use flowtorch's conventions, so that :func:`copy_weights` can load a flowtorch flow's
weights into a floor and the two give the same numbers (the benchmarks check this):

* MADE (Germain et al. 2015): input ``i`` has degree ``i + 1`` (``order="identity"``) or
  ``D - i`` (``"reverse"``); hidden units cycle through degrees ``1..D-1``; a hidden unit sees
  inputs of degree ``<=`` its own, an output sees degrees strictly below its input's. The
  output layer holds one block of ``D`` units per parameter (``[loc | log_scale]``, or
  ``[widths | heights | derivatives]`` with ``K`` units per dimension for splines).
* MAF layers map data to noise with :math:`x = (y - \\mu(y)) e^{-s(y)}`,
  :math:`s` bounded softly in ``(-5, 3)`` as flowtorch bounds it (:func:`soft_bound`); the IAF
  applies the same map in the sampling direction.
* The spline layers evaluate the rational-quadratic spline of Durkan et al. (2019) on
  ``[-B, B]`` with identity tails, in the direction flowtorch's density evaluation runs it
  (the inverse), written from the paper's formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "PassThroughMode",
    "FloorCouplingSpline",
    "FloorIAF",
    "FloorMADE",
    "FloorMAF",
    "FloorSplineAR",
    "copy_weights",
    "made_masks",
    "rq_spline_inverse",
    "soft_bound",
    "standard_normal_log_prob",
]

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class PassThroughMode(TorchFunctionMode):
    """A ``TorchFunctionMode`` that does nothing but call the function it intercepts: the floor
    of what any Python mode costs."""

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return func(*args, **(kwargs or {}))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """:math:`\\log \\mathcal{N}(z; 0, I)`, summed over the last dim."""
    return -0.5 * (z * z).sum(-1) - z.shape[-1] * LOG_SQRT_2PI


def made_masks(d: int, hidden: Sequence[int], extras: Sequence[int], order: str) -> list[Tensor]:
    """The 0/1 masks of a MADE with ``hidden`` layers whose output holds one block per
    parameter, with ``extras[p]`` consecutive units per input dim in block ``p``."""
    ar = torch.arange(d)
    deg_in = ar + 1 if order == "identity" else d - ar
    degrees = [deg_in]
    for h in hidden:
        degrees.append(torch.arange(h) % max(d - 1, 1) + 1 if d > 1 else torch.zeros(h, dtype=torch.long))
    masks = [(b[:, None] >= a[None, :]).float() for a, b in zip(degrees[:-1], degrees[1:])]
    deg_out = torch.cat([deg_in.repeat_interleave(e) for e in extras])
    masks.append((deg_out[:, None] > degrees[-1][None, :]).float())
    return masks


class FloorMADE(nn.Module):
    """A MADE: ``nn.Linear`` layers whose weights are multiplied by fixed masks at each call."""

    def __init__(self, d: int, hidden: Sequence[int], extras: Sequence[int], order: str) -> None:
        super().__init__()
        sizes = [d, *hidden, sum(extras) * d]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for i, m in enumerate(made_masks(d, hidden, extras, order)):
            self.register_buffer(f"mask{i}", m)
        self.n = len(sizes) - 1

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i, lin in enumerate(self.linears):
            h = F.linear(h, lin.weight * getattr(self, f"mask{i}"), lin.bias)
            if i < self.n - 1:
                h = torch.relu(h)
        return h


def soft_bound(x: Tensor, low: float, high: float) -> Tensor:
    """The log-scale bound of flowtorch's affine layers, :math:`x / (1 + \alpha x + \beta |x|)`
    with :math:`\alpha = (1/h + 1/l) / 2`, :math:`\beta = (1/h - 1/l) / 2`: inside ``(low, high)``
    with a gradient everywhere (``flowtorch.ops.soft_clamp``), written from the formula."""
    beta, alpha = 0.5 * (1.0 / high - 1.0 / low), 0.5 * (1.0 / high + 1.0 / low)
    return x / (1.0 + alpha * x + beta * x.abs())


def _orders(layers: int) -> list[str]:
    return ["identity" if i % 2 == 0 else "reverse" for i in range(layers)]


class _AffineStack(nn.Module):
    """``layers`` MADE-affine layers; :meth:`pass_through` runs the parallel direction."""

    def __init__(self, d: int, layers: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.d = d
        self.mades = nn.ModuleList(FloorMADE(d, hidden, (1, 1), o) for o in _orders(layers))

    def _layer(self, made: FloorMADE, u: Tensor) -> tuple[Tensor, Tensor]:
        out = made(u)
        loc, log_scale = out[..., : self.d], soft_bound(out[..., self.d :], -5.0, 3.0)
        return (u - loc) * torch.exp(-log_scale), log_scale.sum(-1)


class FloorMAF(_AffineStack):
    """Masked autoregressive flow; ``log_prob`` is one parallel pass per layer."""

    def log_prob(self, y: Tensor) -> Tensor:
        ladj = y.new_zeros(())
        for made in reversed(self.mades):
            y, s = self._layer(made, y)
            ladj = ladj + s
        return standard_normal_log_prob(y) - ladj


class FloorIAF(_AffineStack):
    """Inverse autoregressive flow; sampling and scoring is one parallel pass per layer."""

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.d)
        lp = standard_normal_log_prob(z)
        y = z
        for made in self.mades:
            y, s = self._layer(made, y)
            lp = lp + s
        return y, lp


# ------------------------------------------------------------------------------------------ splines
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3


def _softmax(u: Tensor) -> Tensor:
    """Softmax over the last dim, written out: ``torch.softmax`` over a last dim of a few bins,
    on a strided view of the conditioner's output, is several times slower on CPU."""
    e = torch.exp(u - u.detach().amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def rq_spline_inverse(y: Tensor, uw: Tensor, uh: Tensor, ud: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Inverse of the monotonic rational-quadratic spline (Durkan et al. 2019), identity tails.

    ``uw``, ``uh``: ``(..., K)`` unnormalised bin widths and heights; ``ud``: ``(..., K - 1)``
    unnormalised interior derivatives. Returns ``x`` and the *forward* log-derivative
    :math:`\\log dy/dx` at ``x``, elementwise.
    """
    k = uw.shape[-1]
    w = MIN_BIN + (1.0 - MIN_BIN * k) * _softmax(uw)
    h = MIN_BIN + (1.0 - MIN_BIN * k) * _softmax(uh)
    d = MIN_DERIVATIVE + F.softplus(ud)
    zero = w.new_zeros(()).expand(*w.shape[:-1], 1)
    one = w.new_ones(()).expand(*w.shape[:-1], 1)
    xk = torch.cat((zero, torch.cumsum(w, -1)), -1) * (2 * bound) - bound
    yk = torch.cat((zero, torch.cumsum(h, -1)), -1) * (2 * bound) - bound
    dk = torch.cat((one, d, one), -1)

    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    idx = torch.searchsorted(yk[..., 1:-1].contiguous(), yc.unsqueeze(-1))
    x0, x1 = xk.gather(-1, idx).squeeze(-1), xk.gather(-1, idx + 1).squeeze(-1)
    y0, y1 = yk.gather(-1, idx).squeeze(-1), yk.gather(-1, idx + 1).squeeze(-1)
    d0, d1 = dk.gather(-1, idx).squeeze(-1), dk.gather(-1, idx + 1).squeeze(-1)

    wk, hk = x1 - x0, y1 - y0
    s = hk / wk
    kappa = d0 + d1 - 2.0 * s
    dy = yc - y0
    a = hk * (s - d0) + dy * kappa
    b = hk * d0 - dy * kappa
    c = -s * dy
    xi = 2.0 * c / (-b - torch.sqrt(b * b - 4.0 * a * c))
    xi1 = xi * (1.0 - xi)
    denom = s + kappa * xi1
    log_deriv = 2.0 * torch.log(s) + torch.log(d1 * xi * xi + 2.0 * s * xi1 + d0 * (1.0 - xi) ** 2)
    log_deriv = log_deriv - 2.0 * torch.log(denom)
    x = x0 + xi * wk
    return torch.where(inside, x, y), torch.where(inside, log_deriv, 0.0)


class FloorSplineAR(nn.Module):
    """Autoregressive rational-quadratic spline flow (MAF direction): ``log_prob`` is one
    parallel pass per layer, each inverting a spline whose parameters come from a MADE."""

    def __init__(self, d: int, layers: int, hidden: Sequence[int], bins: int = 8, bound: float = 3.0) -> None:
        super().__init__()
        self.d, self.bins, self.bound = d, bins, bound
        self.mades = nn.ModuleList(FloorMADE(d, hidden, (bins, bins, bins - 1), o) for o in _orders(layers))
        # the spline's derivatives start at the identity (as flowtorch's splines offset them)
        self.offset = math.log(math.expm1(1.0 - MIN_DERIVATIVE))

    def log_prob(self, y: Tensor) -> Tensor:
        d, k = self.d, self.bins
        ladj = y.new_zeros(())
        for made in reversed(self.mades):
            out = made(y)
            batch = out.shape[:-1]
            uw = out[..., : d * k].view(*batch, d, k)
            uh = out[..., d * k : 2 * d * k].view(*batch, d, k)
            ud = out[..., 2 * d * k :].view(*batch, d, k - 1) + self.offset
            y, ld = rq_spline_inverse(y, uw, uh, ud, self.bound)
            ladj = ladj + ld.sum(-1)
        return standard_normal_log_prob(y) - ladj


class FloorCouplingSpline(nn.Module):
    """Rational-quadratic spline coupling flow: an MLP reads one half of the event (even or
    odd positions, alternating by layer) and parametrises splines of the other half."""

    def __init__(self, d: int, layers: int, hidden: Sequence[int], bins: int = 8, bound: float = 3.0) -> None:
        super().__init__()
        self.d, self.bins, self.bound = d, bins, bound
        self.n_a, self.n_b = (d + 1) // 2, d // 2  # even positions, odd positions
        self.nets = nn.ModuleList()
        self.flips = [i % 2 == 1 for i in range(layers)]
        for flip in self.flips:
            n_in, n_out = (self.n_b, self.n_a) if flip else (self.n_a, self.n_b)
            sizes = [n_in, *hidden, n_out * (3 * bins - 1)]
            self.nets.append(nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        # the spline's derivatives start at the identity (as flowtorch's SplineCoupling offsets them)
        self.offset = math.log(math.expm1(1.0 - MIN_DERIVATIVE))

    def log_prob(self, y: Tensor) -> Tensor:
        k = self.bins
        ladj = y.new_zeros(())
        for net, flip in zip(reversed(self.nets), reversed(self.flips)):
            even, odd = y[..., 0::2], y[..., 1::2]
            a, b = (odd, even) if flip else (even, odd)
            h = a
            for i, lin in enumerate(net):
                h = lin(h)
                if i < len(net) - 1:
                    h = torch.relu(h)
            n, batch = b.shape[-1], h.shape[:-1]  # flowtorch's layout: one block per parameter
            uw = h[..., : n * k].view(*batch, n, k)
            uh = h[..., n * k : 2 * n * k].view(*batch, n, k)
            ud = h[..., 2 * n * k :].view(*batch, n, k - 1) + self.offset
            b, ld = rq_spline_inverse(b, uw, uh, ud, self.bound)
            ladj = ladj + ld.sum(-1)
            even, odd = (b, a) if flip else (a, b)
            y = _interleave(even, odd, self.d)
        return standard_normal_log_prob(y) - ladj


def _interleave(even: Tensor, odd: Tensor, d: int) -> Tensor:
    """The event with ``even`` at positions 0, 2, ... and ``odd`` at 1, 3, ..."""
    if even.shape[-1] == odd.shape[-1]:
        return torch.stack((even, odd), -1).flatten(-2)
    pad = torch.cat((odd, odd.new_zeros(()).expand(*odd.shape[:-1], 1)), -1)
    return torch.stack((even, pad), -1).flatten(-2)[..., :d]


# --------------------------------------------------------------------------- sharing weights
def copy_weights(flow: nn.Module, floor: nn.Module) -> None:
    """Copies the weights of a flowtorch flow's conditioners into a floor of the same model.

    Both list their ``nn.Linear`` layers in the same order (layer by layer, first to last), so
    their ``nn.Linear`` weights and biases pair up one to one.
    """
    src = [m for m in flow.modules() if isinstance(m, nn.Linear)]
    dst = [m for m in floor.modules() if isinstance(m, nn.Linear)]
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} linear layers in the flow, {len(dst)} in the floor")
    with torch.no_grad():
        for a, b in zip(src, dst):
            if a.weight.shape != b.weight.shape:
                raise ValueError(f"weight shapes differ: {tuple(a.weight.shape)} vs {tuple(b.weight.shape)}")
            b.weight.copy_(a.weight)
            if b.bias is not None:
                b.bias.copy_(a.bias)
