"""``torch.func`` transforms of bijectors (``vmap``, ``grad``, ``jacrev``, ``functional_call``)
agree with eager autograd, inside ``BijectiveMode`` and outside it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vmap

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.bijectors.coupling import AffineCoupling
from flowtorch.core.bijector import Bijector

D = 3
F64 = torch.float64
TOL = dict(atol=1e-10, rtol=1e-10)


def made() -> Any:
    return params.DenseAutoregressive(hidden_dims=(8,))


PLANS: dict[str, Callable[[], Any]] = {
    "Affine": lambda: bij.Affine(),
    "Spline": lambda: bij.Spline(count_bins=4),
    "AffineAutoregressive": lambda: bij.AffineAutoregressive(made()),
    "SplineAutoregressive": lambda: bij.SplineAutoregressive(made(), count_bins=4),
    "Invert(AffineAutoregressive)": lambda: bij.Invert(bij.AffineAutoregressive(made())),
    "AffineCoupling": lambda: AffineCoupling(),
    "Compose(MAF, Permute, Spline)": lambda: bij.Compose(
        [bij.AffineAutoregressive(made()), bij.Permute(), bij.Spline(count_bins=4)]
    ),
}


@contextlib.contextmanager
def maybe_mode(inside: bool) -> Iterator[None]:
    if inside:
        with flowtorch.BijectiveMode():
            yield
    else:
        yield


def build(name: str) -> Bijector:
    torch.manual_seed(0)
    b = PLANS[name]()(shape=torch.Size([D])).to(F64)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 0.4 / (p.shape[-1] if p.dim() > 1 else 1) ** 0.5)
    return b


def eager_jacobian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(f, x)  # type: ignore[no-any-return]


@pytest.mark.parametrize("inside", [False, True], ids=["outside", "inside-mode"])
@pytest.mark.parametrize("name", list(PLANS))
def test_torch_func_agrees_with_eager(name: str, inside: bool) -> None:
    b = build(name)
    x = torch.randn(5, D, dtype=F64)
    y_eager = b.forward(x).detach()
    ladj_eager = b.log_abs_det_jacobian(x, y_eager).detach()

    def ladj(v: torch.Tensor) -> torch.Tensor:
        return b.log_abs_det_jacobian(v, b.forward(v))

    with maybe_mode(inside):
        # vmap over the batch, one event at a time
        torch.testing.assert_close(vmap(b.forward)(x), y_eager, **TOL)
        torch.testing.assert_close(vmap(b.inverse)(y_eager), x, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(vmap(ladj)(x), ladj_eager, **TOL)
        # jacrev of one event: the Jacobian, and its log-determinant is log_abs_det_jacobian
        jac = jacrev(b.forward)(x[0])
        torch.testing.assert_close(jac, eager_jacobian(b.forward, x[0]), **TOL)
        torch.testing.assert_close(torch.linalg.slogdet(jac)[1], ladj_eager[0], atol=1e-9, rtol=1e-9)
        jac_inv = jacrev(b.inverse)(y_eager[0])
        torch.testing.assert_close(jac_inv, torch.linalg.inv(jac), atol=1e-8, rtol=1e-8)
        # per-example Jacobians: vmap of jacrev
        torch.testing.assert_close(vmap(jacrev(b.forward))(x)[2], eager_jacobian(b.forward, x[2]), **TOL)
        # grad of the log-det with respect to the input
        torch.testing.assert_close(grad(ladj)(x[1]), eager_jacobian(ladj, x[1]), **TOL)
        # grad with respect to the parameters, through functional_call
        named = {k: v.detach() for k, v in b.named_parameters()}
        grads = grad(lambda p: functional_call(b, p, (x,)).square().sum())(named)
    b.zero_grad()
    b.forward(x).square().sum().backward()
    for k, p in b.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, **TOL, msg=k)


@pytest.mark.parametrize("name", ["Spline", "AffineAutoregressive", "Invert(AffineAutoregressive)"])
def test_inside_the_mode_vmap_hits_the_cache(name: str) -> None:
    """Inside ``vmap`` and the mode, ``inverse(forward(x))`` returns ``x`` itself: exact equality,
    where a recomputed inverse differs in the last bits."""
    b = build(name)
    x = torch.randn(64, D, dtype=F64) * 2

    def round_trip(v: torch.Tensor) -> torch.Tensor:
        return b.inverse(b.forward(v))

    with flowtorch.BijectiveMode():
        cached = vmap(round_trip)(x)
    recomputed = vmap(round_trip)(x)
    assert torch.equal(cached, x)
    assert not torch.equal(recomputed, x)
    torch.testing.assert_close(recomputed, x, atol=1e-9, rtol=1e-9)
