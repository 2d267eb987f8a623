"""Second derivatives through numerical inverses (float64, against central finite differences).

A gradient penalty differentiates a gradient: ``P(theta) = |d log p(y) / d theta|^2``, then
``d P / d theta``. For a bijector whose inverse is a root found without gradients, the
derivatives come from differentiable Newton steps at the root; one step gives only the first
derivatives right (the user's report: a directional second derivative of 63.3 where finite
differences give 17.2). Where second derivatives are not available, asking for them
(``create_graph=True``) raises an error that says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist

F64 = torch.float64
D = 3


def flow_of(layer: Callable[[], Any]) -> dist.Flow:
    torch.manual_seed(0)
    normal = torch.distributions.Normal(torch.zeros(D, dtype=F64), torch.ones(D, dtype=F64))
    base = torch.distributions.Independent(normal, 1)
    flow = dist.Flow(base, bij.Compose([layer(), bij.Reverse(), layer()]))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


def penalty(flow: dist.Flow, z: torch.Tensor, create: bool, mode: bool) -> torch.Tensor:
    """The user's penalty: ``|grad log p(y)|^2`` at the flow's own samples ``y = f(z)``."""
    params = list(flow.parameters())
    with flowtorch.BijectiveMode() if mode else torch.enable_grad():
        y = flow.bijector.forward(z)
        log_p = flow.log_prob(y).sum()
        grads = torch.autograd.grad(log_p, params, create_graph=create, allow_unused=True)
    return sum(((g**2).sum() for g in grads if g is not None), torch.zeros((), dtype=F64))


def directional(flow: dist.Flow, z: torch.Tensor, v: list[torch.Tensor], mode: bool) -> float:
    params = list(flow.parameters())
    g2 = torch.autograd.grad(penalty(flow, z, True, mode), params, allow_unused=True)
    return float(sum((g * vi).sum() for g, vi in zip(g2, v) if g is not None))


def finite_difference(flow: dist.Flow, z: torch.Tensor, v: list[torch.Tensor], eps: float = 1e-5) -> float:
    params = list(flow.parameters())
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.add_(sign * eps * vi)
        values.append(float(penalty(flow, z, False, False)))
        with torch.no_grad():
            for p, vi in zip(params, v):
                p.sub_(sign * eps * vi)
    return (values[0] - values[1]) / (2 * eps)


LAYERS: dict[str, Callable[[], Any]] = {
    "Planar": lambda: bij.Planar(),
    "Sylvester(triangular)": lambda: bij.Sylvester(variant="triangular"),
    "Sylvester(householder)": lambda: bij.Sylvester(variant="householder"),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_second_derivative_through_the_inverse_matches_finite_differences(name: str) -> None:
    flow = flow_of(LAYERS[name])
    torch.manual_seed(7)
    z = flow.base_dist.sample((6,))
    v = [torch.randn_like(p) for p in flow.parameters()]
    expected = finite_difference(flow, z, v)
    outside = directional(flow, z, v, mode=False)  # through the numerical inverse
    inside = directional(flow, z, v, mode=True)  # the inverse served from the cache
    assert outside == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert inside == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_residual_flow_refuses_a_second_derivative_through_its_inverse() -> None:
    """ResidualFlow's inverse is a fixed point whose gradient solves a linear system by the same
    iteration: first order only. Asking for more raises, instead of a silently wrong number;
    first derivatives, and the penalty inside the mode (no inverse), work."""
    flow = flow_of(lambda: bij.ResidualFlow())
    torch.manual_seed(7)
    y = flow.sample((6,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = torch.autograd.grad(flow.log_prob(y).sum(), list(flow.parameters()))
    assert all(torch.isfinite(g).all() for g in first)
    with pytest.raises(RuntimeError, match=r"ResidualFlow: second derivatives through the numerical inverse"):
        penalty(flow, flow.base_dist.sample((6,)), create=True, mode=False)
    assert torch.isfinite(penalty(flow, flow.base_dist.sample((6,)), create=True, mode=True))


def made() -> Any:
    return flowtorch.parameters.DenseAutoregressive(hidden_dims=(8,))


ROOT_FINDERS: dict[str, Callable[[], Any]] = {
    "Bernstein": lambda: bij.Bernstein(),
    "SOSPolynomial": lambda: bij.SOSPolynomial(made()),
    "UMNN": lambda: bij.UMNN(made()),
    "NeuralAutoregressive": lambda: bij.NeuralAutoregressive(made()),
    "BlockNeuralAutoregressive": lambda: bij.BlockNeuralAutoregressive(),
}


@pytest.mark.parametrize("name", list(ROOT_FINDERS))
def test_root_finders_refuse_a_second_derivative_and_keep_the_first(name: str) -> None:
    """These bijectors' forward is a root found numerically, with a first-order implicit
    gradient: a penalty on the gradient of a loss of their samples raises (finite differences
    disagree with what autograd would give, e.g. -138.8 against -178.2 for Bernstein); first
    derivatives, also taken with create_graph=True and not differentiated again, are as before."""
    torch.manual_seed(0)
    b = ROOT_FINDERS[name]()(shape=torch.Size([D])).to(F64)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    params = list(b.parameters())
    z = torch.randn(5, D, dtype=F64)
    loss = (b.forward(z) ** 2).sum()
    plain = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    graphed = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    for a, g in zip(plain, graphed):
        if a is not None:
            torch.testing.assert_close(a, g.detach(), rtol=0.0, atol=0.0)
    pen = sum((g**2).sum() for g in graphed if g is not None)
    with pytest.raises(RuntimeError, match=r"second derivatives through .* are not available"):
        torch.autograd.grad(pen, params, allow_unused=True)
    jac = torch.autograd.functional.jacobian(b.forward, z[0], create_graph=True)
    assert jac.shape == (D, D) and torch.isfinite(jac).all()
