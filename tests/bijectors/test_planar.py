"""Planar: the maths, the numerical inverse (and the scalar solver when its iteration budget runs
out); for the family of Planar, Radial and Sylvester, bad arguments, the cache and peers.

The generic suite (``tests/bijectors/cases_planar.py``) runs every class with round trips,
autograd log-dets, shapes, gradients, dtypes, contexts, cycles and serialisation; these tests
add what is particular to the family.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowtorch
import flowtorch.bijectors.planar as planar_module
import flowtorch.bijectors.sylvester as sylvester_module
from flowtorch.bijectors.planar import Planar, solve_shifted_tanh
from flowtorch.bijectors.radial import Radial
from flowtorch.bijectors.sylvester import Sylvester
from flowtorch.core.compose import Compose
from flowtorch.distributions import Flow
from tests.case import build_float64

DT = torch.float64


def standard_normal(d: int) -> torch.distributions.Distribution:
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(d, dtype=DT), torch.ones(d, dtype=DT)), 1
    )


# ----------------------------------------------------------------------------- the scalar solver
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solve_shifted_tanh_is_accurate_over_the_whole_monotone_range(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    n = 4000
    p = torch.randn(n, generator=g, dtype=dtype) * 3.0
    q = torch.randn(n, generator=g, dtype=dtype) * 3.0
    # push a quarter of the cases onto the boundary p q = -1, where f'(z) vanishes at a point
    q[: n // 4] = -1.0 / p[: n // 4]
    q = torch.where(p * q < -1.0, -q, q)  # keep p q >= -1
    c = torch.randn(n, generator=g, dtype=dtype) * 2.0
    t = torch.randn(n, generator=g, dtype=dtype) * 5.0
    z = solve_shifted_tanh(t, p, q, c)
    residual = z + p * torch.tanh(q * z + c) - t
    assert residual.abs().max() <= 8 * torch.finfo(dtype).eps * (1 + t.abs().max() + p.abs().max())
    assert ((z >= t - p.abs()) & (z <= t + p.abs())).all()


# ----------------------------------------------------------------------------- Planar
def test_planar_reparametrisation_keeps_the_map_invertible() -> None:
    b = build_float64(Planar(), d=3)
    _, w, _ = (t.detach().clone() for t in b.params_fn.params)  # type: ignore[union-attr]
    u = -20.0 * w  # w^T u = -20 |w|^2: without the reparametrisation the map would fold over
    with torch.no_grad():
        b.params_fn.params[0].copy_(u)  # type: ignore[union-attr]
    u_hat, w_, _, p = b._parts(tuple(b.params_fn.params))  # type: ignore[union-attr,operator]
    torch.testing.assert_close((w_ * u_hat).sum(-1, keepdim=True), p)
    assert p.item() > -1.0
    torch.testing.assert_close(p, F.softplus((w * u).sum(-1, keepdim=True)) - 1.0)
    x = torch.randn(200, 3, dtype=DT) * 3
    y, ladj = b.forward_and_ladj(x)  # type: ignore[operator]
    assert torch.isfinite(ladj).all()
    torch.testing.assert_close(b.inverse(y), x, atol=1e-9, rtol=1e-9)  # type: ignore[operator]


def test_planar_log_det_is_the_matrix_determinant_lemma() -> None:
    b = build_float64(Planar(), d=4)
    u, w, bias = tuple(b.params_fn.params)  # type: ignore[union-attr]
    u_hat, *_ = b._parts((u, w, bias))  # type: ignore[operator]
    x = torch.randn(6, 4, dtype=DT)
    a = x @ w + bias
    jac = torch.eye(4, dtype=DT) + (1 - torch.tanh(a) ** 2)[:, None, None] * u_hat[:, None] * w[None, :]
    _, ladj = b.forward_and_ladj(x)  # type: ignore[operator]
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac)[1])


def test_planar_inverse_near_the_invertibility_boundary() -> None:
    """w^T u_hat = -1 + softplus(-12) ~ -1 + 6e-6: nearly flat at one point, still inverted."""
    b = build_float64(Planar(), d=2, seed=3)
    with torch.no_grad():
        u, w, bias = b.params_fn.params  # type: ignore[union-attr]
        u.copy_(-12.0 * w / w.square().sum())
        bias.zero_()
    x = torch.randn(500, 2, dtype=DT)
    y = b.forward(x)  # type: ignore[operator]
    # the map's inverse is ill-conditioned near a = 0 (f'(a) ~ 6e-6): errors grow like eps / f'
    torch.testing.assert_close(b.inverse(y), x, atol=1e-7, rtol=1e-7)  # type: ignore[operator]


def _inverse_of(b: object, y: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    return b._inverse(y, params)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    "plan",
    [Planar(), Radial(), Sylvester(), Sylvester(hidden=2, n_reflections=2), Sylvester(variant="triangular")],
    ids=["Planar", "Radial", "Sylvester", "Sylvester[hidden=2]", "Sylvester[triangular]"],
)
def test_inverse_gradients_are_the_implicit_ones(plan: object) -> None:
    """Finite differences of the numerical inverse, in ``y`` and in every parameter."""
    b = build_float64(plan, d=3, seed=1, scale=0.7)
    y = torch.randn(2, 3, dtype=DT, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in b.params_fn.params)  # type: ignore[union-attr]
    assert torch.autograd.gradcheck(lambda y, *p: _inverse_of(b, y, *p), (y, *params))
    # and the log-det returned with it
    assert torch.autograd.gradcheck(
        lambda y, *p: b._inverse_and_ladj(y, p)[1],  # type: ignore[attr-defined]
        (y, *params),
    )


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Planar()(shape=torch.Size([2, 2])), "vector event"),
        (lambda: Radial()(shape=torch.Size([])), "vector event"),
        (lambda: Sylvester(hidden=4)(shape=torch.Size([3])), "hidden"),
        (lambda: Sylvester(hidden=0)(shape=torch.Size([3])), "hidden"),
        (lambda: Sylvester(variant="orthogonal")(shape=torch.Size([3])), "variant"),
        (lambda: Sylvester(variant="triangular", hidden=2)(shape=torch.Size([3])), "triangular"),
        (lambda: Sylvester(n_reflections=0)(shape=torch.Size([3])), "n_reflections"),
        (lambda: Sylvester(flip=True)(shape=torch.Size([3])), "flip"),
    ],
)
def test_bad_arguments_are_named(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


# ----------------------------------------------------------------------------- the cache
def _count_solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = planar_module.solve_shifted_tanh

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(planar_module, "solve_shifted_tanh", counted)
    monkeypatch.setattr(sylvester_module, "solve_shifted_tanh", counted)
    return calls


@pytest.mark.parametrize("requires_ladj", [True, False])
def test_flow_scores_its_own_samples_without_solving(
    monkeypatch: pytest.MonkeyPatch, requires_ladj: bool
) -> None:
    torch.manual_seed(0)
    flow = Flow(standard_normal(3), Compose([Planar(), Sylvester(), Radial(), Planar()]))
    flow.to(DT)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)
    calls = _count_solves(monkeypatch)
    torch.manual_seed(1)
    expected_y, expected = flow.rsample_and_log_prob((16,))
    with flowtorch.BijectiveMode(requires_ladj=requires_ladj):
        torch.manual_seed(1)
        y = flow.rsample((16,))
        log_p = flow.log_prob(y)
        layer = flow.bijector.bijectors[0]
        x = torch.randn(2, 3, dtype=DT)
        assert layer.inverse(layer.forward(x)) is x  # forward then inverse: the very input
    assert calls[0] == 0
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(log_p, expected)
    # outside the mode the same density comes from the numerical inverses
    torch.testing.assert_close(flow.log_prob(y.detach()), expected, atol=1e-10, rtol=1e-10)
    assert calls[0] > 0


def test_amortised_parameters_from_a_context() -> None:
    """A context makes (u, w, b) a function of it: one map per context, as in amortised VI."""
    torch.manual_seed(0)
    b = Planar()(shape=torch.Size([2]), context_shape=torch.Size([3])).to(DT)
    with torch.no_grad():
        for p in b.parameters():
            p.normal_()
    c = torch.randn(4, 3, dtype=DT)
    x = torch.randn(5, 4, 2, dtype=DT)  # 5 samples for each of 4 contexts
    y, ladj = b.forward_and_ladj(x, c)
    fixed = Planar()(shape=torch.Size([2])).to(DT)
    for i in range(4):
        with torch.no_grad():
            for mine, amortised in zip(fixed.params_fn.params, b.params_fn(None, c[i])):  # type: ignore[union-attr,misc]
                mine.copy_(amortised)
        yi, li = fixed.forward_and_ladj(x[:, i])
        torch.testing.assert_close(y[:, i], yi)
        torch.testing.assert_close(ladj[:, i], li)
    torch.testing.assert_close(b.inverse(y, c), x, atol=1e-10, rtol=1e-10)


# ----------------------------------------------------------------------------- peers
def test_planar_and_radial_match_pyro() -> None:
    pyro_t = pytest.importorskip("pyro.distributions.transforms")
    b = build_float64(Planar(), d=4, seed=4, scale=0.8)
    u, w, bias = (p.detach() for p in b.params_fn.params)  # type: ignore[union-attr]
    theirs = pyro_t.Planar(4).to(DT)
    with torch.no_grad():
        theirs.u.copy_(u)
        theirs.w.copy_(w)
        theirs.bias.copy_(bias)
    x = torch.randn(50, 4, dtype=DT)
    y, ladj = b.forward_and_ladj(x)  # type: ignore[operator]
    y_p = theirs(x)
    diff_y = (y - y_p).abs().max().item()
    diff_l = (ladj - theirs.log_abs_det_jacobian(x, y_p)).abs().max().item()
    print(f"Planar vs pyro: max |dy| {diff_y:.2e}, max |d ladj| {diff_l:.2e}")
    assert diff_y < 1e-12 and diff_l < 1e-12

    r = build_float64(Radial(), d=4, seed=5, scale=0.8)
    x0, alpha_raw, beta_raw = (p.detach() for p in r.params_fn.params)  # type: ignore[union-attr]
    theirs_r = pyro_t.Radial(4).to(DT)
    with torch.no_grad():
        theirs_r.x0.copy_(x0)
        theirs_r.alpha_prime.copy_(alpha_raw)
        theirs_r.beta_prime.copy_(beta_raw)
    y, ladj = r.forward_and_ladj(x)  # type: ignore[operator]
    y_p = theirs_r(x)
    diff_y = (y - y_p).abs().max().item()
    diff_l = (ladj - theirs_r.log_abs_det_jacobian(x, y_p)).abs().max().item()
    print(f"Radial vs pyro: max |dy| {diff_y:.2e}, max |d ladj| {diff_l:.2e}")
    assert diff_y < 1e-12 and diff_l < 1e-12


def test_planar_and_radial_match_normflows() -> None:
    nf = pytest.importorskip("normflows")
    b = build_float64(Planar(), d=3, seed=6, scale=0.8)
    u, w, bias = (p.detach() for p in b.params_fn.params)  # type: ignore[union-attr]
    theirs = nf.flows.Planar((3,), u=u[None].clone(), w=w[None].clone(), b=bias.clone())
    x = torch.randn(40, 3, dtype=DT)
    y, ladj = b.forward_and_ladj(x)  # type: ignore[operator]
    y_n, ladj_n = theirs(x)
    diff_y, diff_l = (y - y_n).abs().max().item(), (ladj - ladj_n).abs().max().item()
    print(f"Planar vs normflows: max |dy| {diff_y:.2e}, max |d ladj| {diff_l:.2e}")
    assert diff_y < 1e-12 and diff_l < 1e-12

    r = build_float64(Radial(), d=3, seed=7, scale=0.8)
    x0, alpha_raw, beta_raw = (p.detach() for p in r.params_fn.params)  # type: ignore[union-attr]
    theirs_r = nf.flows.Radial((3,), z_0=x0[None].clone()).to(DT)
    with torch.no_grad():  # normflows: alpha = |a|, beta = softplus(b) - |a|
        theirs_r.alpha.copy_(F.softplus(alpha_raw))
        theirs_r.beta.copy_(beta_raw)
    y, ladj = r.forward_and_ladj(x)  # type: ignore[operator]
    y_n, ladj_n = theirs_r(x)
    diff_y, diff_l = (y - y_n).abs().max().item(), (ladj - ladj_n).abs().max().item()
    print(f"Radial vs normflows: max |dy| {diff_y:.2e}, max |d ladj| {diff_l:.2e}")
    assert diff_y < 1e-12 and diff_l < 1e-12


def test_the_solver_returns_its_iterate_when_max_iter_runs_out() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(50, generator=g, dtype=DT) * 3
    p = torch.randn(50, generator=g, dtype=DT) * 2
    q = p.sign() * torch.rand(50, generator=g, dtype=DT) * 2  # p q >= 0: Newton's first step is taken
    c = torch.randn(50, generator=g, dtype=DT)
    # no iteration: the centre of the bracket [t - |p|, t + |p|]
    torch.testing.assert_close(solve_shifted_tanh(t, p, q, c, max_iter=0), t)
    # one iteration: one Newton step from t, by hand
    th = torch.tanh(q * t + c)
    newton = t - p * th / (1.0 + p * q * (1.0 - th * th))
    z1 = solve_shifted_tanh(t, p, q, c, max_iter=1)
    torch.testing.assert_close(z1, newton)
    z = solve_shifted_tanh(t, p, q, c)
    residual = z + p * torch.tanh(q * z + c) - t
    assert float(residual.abs().max()) < 1e-12
    assert float((z1 - z).abs().max()) > 1e-6  # one step was not enough
