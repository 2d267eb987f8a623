"""LULinear and Householder: the maths, the eval-mode cache, and peers; the argument checks of
Invertible1x1Conv, which shares LULinear's factorisation."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch
from flowtorch.bijectors.affine import Affine
from flowtorch.bijectors.conv import Invertible1x1Conv
from flowtorch.bijectors.linear import Householder, LULinear
from flowtorch.core.compose import Compose
from flowtorch.parameters import Tensor
from tests._torch import needs_fused_cpu_optimizers

S = torch.Size

DT = torch.float64


def lu_linear(n: int = 4, seed: int = 0, **kwargs: object) -> LULinear:
    torch.manual_seed(seed)
    b = LULinear(identity_init=False, **kwargs)(shape=torch.Size([n])).to(DT)
    with torch.no_grad():
        b.unconstrained_diag.normal_(0.0, 0.5)
        b.bias.normal_()  # type: ignore[union-attr]
    return b


def permutation_matrix(perm: torch.Tensor) -> torch.Tensor:
    """The matrix :math:`P` with :math:`(P v)_i = v_{perm[i]}`."""
    return torch.eye(len(perm), dtype=DT)[perm]


# ----------------------------------------------------------------------------- LULinear
@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_lu_linear_log_det_is_slogdet_of_the_assembled_weight(activation: str) -> None:
    b = lu_linear(5, diag_activation=activation)
    lower, upper = b.factors()
    w = permutation_matrix(b.permutation) @ lower @ upper
    torch.testing.assert_close(b.weight(), w)
    assert torch.equal(torch.diagonal(lower), torch.ones(5, dtype=DT))
    assert torch.equal(torch.tril(upper, -1), torch.zeros(5, 5, dtype=DT))
    x = torch.randn(7, 5, dtype=DT)
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(y, x @ w.T + b.bias)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w)[1].expand(7))
    # on a 2-D event the same matrix acts on each row: twice the log-det
    b2 = LULinear(identity_init=False, diag_activation=activation)(shape=torch.Size([3, 5])).to(DT)
    b2.load_state_dict(b.state_dict())
    x2 = torch.randn(4, 3, 5, dtype=DT)
    y2, ladj2 = b2.forward_and_ladj(x2)
    torch.testing.assert_close(y2, x2 @ w.T + b.bias)
    torch.testing.assert_close(ladj2, 3 * torch.linalg.slogdet(w)[1].expand(4))


def test_lu_linear_inverse_is_two_triangular_solves() -> None:
    b = lu_linear(6)
    y = torch.randn(3, 2, 6, dtype=DT)
    x, ladj = b.inverse_and_ladj(y)
    expected = torch.linalg.solve(b.weight(), (y - b.bias).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(b.weight())[1].expand(3, 2))
    torch.testing.assert_close(b.inverse_weight(), torch.linalg.inv(b.weight()))


def test_lu_linear_identity_init() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    exact = LULinear(permutation="identity", diag_activation="exp")(shape=torch.Size([4]))
    assert torch.equal(exact.forward(x), x)
    near = LULinear(permutation="identity")(shape=torch.Size([4]))  # softplus(raw) + 1e-3 = 1
    torch.testing.assert_close(near.forward(x), x)
    permuted = LULinear()(shape=torch.Size([4]))  # W = P: a volume-preserving reordering
    torch.testing.assert_close(permuted.forward(x), x[:, permuted.permutation])
    torch.testing.assert_close(permuted.forward_and_ladj(x)[1], torch.zeros(5), atol=1e-6, rtol=0)


def test_lu_linear_eval_inverse_cache_follows_an_optimizer_step() -> None:
    b = lu_linear(4)
    y = torch.randn(8, 4, dtype=DT)
    b.eval()
    with torch.no_grad():
        x1 = b.inverse(y)
        cached = b._inverse_cache
        assert cached is not None
        b.inverse(y)
        assert b._inverse_cache is cached  # reused, not recomputed
    torch.testing.assert_close(x1, torch.linalg.solve(b.weight(), (y - b.bias).T).T)

    # an optimizer step in eval mode (gradients are computed without the cache)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    loss = b.inverse(y).square().sum() + b.forward(y).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())
    opt.step()
    with torch.no_grad():
        x2 = b.inverse(y)
        assert b._inverse_cache is not cached
        assert not torch.allclose(x2, x1)
        torch.testing.assert_close(b.forward(x2), y)

    # in training mode the cache is not used; eval() starts afresh
    b.train()
    assert b._inverse_cache is None
    with torch.no_grad():
        b.inverse(y)
    assert b._inverse_cache is None
    b.eval()
    with torch.no_grad():
        b.inverse(y)
    assert b._inverse_cache is not None


def test_lu_linear_eval_cache_sees_loads_and_dtype_changes() -> None:
    b = lu_linear(4).eval()
    other = lu_linear(4, seed=1).eval()
    y = torch.randn(5, 4, dtype=DT)
    with torch.no_grad():
        b.inverse(y)
        b.load_state_dict(other.state_dict())
        torch.testing.assert_close(b.inverse(y), other.inverse(y))
        b.float()
        assert b.inverse(y.float()).dtype == torch.float32
        b.double()
        torch.testing.assert_close(b.inverse(y), other.inverse(y), atol=1e-6, rtol=1e-6)


@needs_fused_cpu_optimizers
def test_lu_linear_eval_cache_sees_fused_steps_in_training() -> None:
    b = lu_linear(4).eval()
    y = torch.randn(5, 4, dtype=DT)
    with torch.no_grad():
        b.inverse(y)
    # a fused optimizer step bumps no version counter; the train()/eval() around it drops the cache
    b.train()
    b.forward(y).square().sum().backward()
    torch.optim.Adam(b.parameters(), lr=0.1, fused=True).step()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b.forward(b.inverse(y)), y)
        # a write through ``.data`` moves no version counter either: the cache compares values
        b.upper.data.add_(0.5)
        torch.testing.assert_close(b.forward(b.inverse(y)), y)
        torch.optim.Adam(b.parameters(), lr=0.1, fused=True).step()  # in eval mode this time
        torch.testing.assert_close(b.forward(b.inverse(y)), y)


def test_lu_linear_eval_mode_keeps_gradients() -> None:
    b = lu_linear(3).eval()
    y = torch.randn(4, 3, dtype=DT)
    for _ in range(2):  # each call builds its own graph; no cached graph is reused
        b.zero_grad()
        b.inverse(y).sum().backward()
        assert b.lower.grad is not None and b.lower.grad.abs().sum() > 0
    assert b._inverse_cache is None


def test_lu_linear_in_bijective_mode_after_a_step() -> None:
    b = lu_linear(3)
    x = torch.randn(4, 3, dtype=DT)
    with flowtorch.BijectiveMode():
        y = b.forward(x)
        assert b.inverse(y) is x
        with torch.no_grad():
            b.lower.add_(0.1)
        x2 = b.inverse(y)
        assert x2 is not x
        torch.testing.assert_close(b.forward(x2), y)


def test_lu_linear_in_a_conditional_compose() -> None:
    torch.manual_seed(0)
    flow = Compose([LULinear(), Affine(), Householder()])(
        shape=torch.Size([3]), context_shape=torch.Size([2])
    )
    assert flow.context_shape == (2,)
    assert flow.bijectors[0].context_shape is None  # built with a context shape, yet unconditional
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    y, ladj = flow.forward_and_ladj(x, c)
    x2, ladj2 = flow.inverse_and_ladj(y, c)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj2, ladj)


def test_errors_name_the_problem() -> None:
    with pytest.raises(TypeError, match="takes no conditioner"):
        LULinear(Tensor())(shape=torch.Size([3]))
    with pytest.raises(TypeError, match="takes no conditioner"):
        Householder(Tensor())(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="not a permutation"):
        LULinear(permutation=[0, 0, 1])(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="unknown permutation"):
        LULinear(permutation="reverse")(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="diag_activation"):
        LULinear(diag_activation="relu")(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="min_diag"):
        LULinear(min_diag=-1.0)(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="n_reflections"):
        Householder(n_reflections=0)(shape=torch.Size([3]))
    with pytest.raises(ValueError, match="at least 3 dims"):
        Invertible1x1Conv()(shape=torch.Size([3]))
    b = LULinear()(shape=torch.Size([3]), context_shape=torch.Size([2]))
    with pytest.raises(ValueError, match="takes no context"):
        b.forward(torch.randn(3), torch.randn(2))
    with pytest.raises(ValueError, match="event shape"):
        b.forward(torch.randn(4))


def test_pickle_round_trip_keeps_the_map() -> None:
    b = lu_linear(3).eval()
    y = torch.randn(2, 3, dtype=DT)
    with torch.no_grad():
        expected = b.inverse(y)
    buf = io.BytesIO()
    torch.save(b, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded.inverse(y), expected)
        torch.testing.assert_close(copy.deepcopy(b).inverse(y), expected)


# ----------------------------------------------------------------------------- Householder
def test_householder_is_orthogonal_and_inverts_in_reverse_order() -> None:
    torch.manual_seed(0)
    b = Householder(n_reflections=3)(shape=torch.Size([5])).to(DT)
    q = b.weight()
    torch.testing.assert_close(q @ q.T, torch.eye(5, dtype=DT))
    reflections = []
    for v in b.vectors:
        reflections.append(torch.eye(5, dtype=DT) - 2 * torch.outer(v, v) / v.dot(v))
    torch.testing.assert_close(q, reflections[2] @ reflections[1] @ reflections[0])
    x = torch.randn(4, 2, 5, dtype=DT)
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(y, x @ q.T)
    assert torch.equal(ladj, torch.zeros(4, 2, dtype=DT))
    torch.testing.assert_close(b.inverse(y), x)
    torch.testing.assert_close(b.inverse(y), y @ reflections[2].T @ reflections[1].T @ reflections[0].T)
    # one reflection is an involution with determinant -1
    one = Householder(n_reflections=1)(shape=torch.Size([4])).to(DT)
    torch.testing.assert_close(one.weight() @ one.weight(), torch.eye(4, dtype=DT))
    torch.testing.assert_close(torch.linalg.det(one.weight()), torch.tensor(-1.0, dtype=DT))


def test_householder_gradients_reach_the_vectors() -> None:
    # |y|^2 does not depend on an orthogonal map, so use a loss that does
    torch.manual_seed(0)
    b = Householder()(shape=torch.Size([3])).to(DT)
    y = b.forward(torch.randn(6, 3, dtype=DT))
    (y * torch.arange(1.0, 4.0, dtype=DT)).square().sum().backward()
    assert b.vectors.grad is not None and b.vectors.grad.abs().min() > 0


@pytest.mark.filterwarnings("ignore:torch.triangular_solve is deprecated")
def test_lu_linear_matches_nflows_lu_linear() -> None:
    nflows_lu = pytest.importorskip("nflows.transforms.lu")
    torch.manual_seed(0)
    n = 5
    peer = nflows_lu.LULinear(n, identity_init=False).to(DT)
    with torch.no_grad():
        peer.bias.normal_()
    b = LULinear(permutation="identity", min_diag=peer.eps)(shape=torch.Size([n])).to(DT)
    lower, upper = peer._create_lower_upper()  # the same L and U; only their strict triangles are read
    with torch.no_grad():
        b.lower.copy_(lower)
        b.upper.copy_(upper)
        b.unconstrained_diag.copy_(peer.unconstrained_upper_diag)
        b.bias.copy_(peer.bias)  # type: ignore[union-attr]
    torch.testing.assert_close(b.weight(), peer.weight())
    x = torch.randn(7, n, dtype=DT)
    y, ladj = b.forward_and_ladj(x)
    y_peer, ladj_peer = peer(x)
    x_peer, ladj_inv_peer = peer.inverse(y)
    diffs = {
        "y": (y - y_peer).abs().max().item(),
        "ladj": (ladj - ladj_peer).abs().max().item(),
        "x": (b.inverse(y) - x_peer).abs().max().item(),
        "ladj_inv": (b.inverse_and_ladj(y)[1] + ladj_inv_peer).abs().max().item(),
    }
    print("nflows LULinear max abs differences:", diffs)
    assert max(diffs.values()) < 1e-10


VALUE_ERRORS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "LULinear empty",
        lambda: LULinear()(shape=S([0])),
        "LULinear: the mixed dim has size 0; it must be at least 1",
    ),
]


@pytest.mark.parametrize(("make", "match"), [c[1:] for c in VALUE_ERRORS], ids=[c[0] for c in VALUE_ERRORS])
def test_bad_values_are_named(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


REPRS: list[tuple[str, Callable[[], Any], str]] = [
    (
        "LULinear",
        lambda: LULinear(diag_activation="exp", bias=False)(shape=S([3])),
        "shape=(3,), features=3, diag_activation='exp', bias=False",
    ),
    (
        "Householder",
        lambda: Householder(n_reflections=2)(shape=S([3])),
        "shape=(3,), n_reflections=2",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in REPRS], ids=[c[0] for c in REPRS])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
