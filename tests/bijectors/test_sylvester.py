"""Sylvester: Q and the triangles, the log-det by Sylvester's identity, the flipped variant, the
orthogonal complement; arguments the other checks do not name, and repr of each variant."""

from __future__ import annotations

import pytest
import torch

from flowtorch.bijectors.sylvester import Sylvester
from tests.case import build_float64

S = torch.Size
DT = torch.float64


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({}, (2, 2), r"Sylvester acts on a vector event \(shape \(D,\)\), got shape \(2, 2\)"),
        ({}, (), r"Sylvester acts on a vector event \(shape \(D,\)\), got shape \(\)"),
        ({"variant": "triangular", "n_reflections": 2}, (3,), "n_reflections applies to the householder"),
        ({"n_reflections": True}, (3,), "n_reflections must be a positive integer, got True"),
        ({"hidden": 2.0}, (3,), r"hidden must be an integer in \[1, D=3\], got 2\.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sylvester(**kwargs)(shape=S(shape))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"hidden": 2, "n_reflections": 1}, "shape=(4,), hidden=2, variant='householder', n_reflections=1"),
        ({}, "shape=(4,), hidden=4, variant='householder', n_reflections=4"),
        ({"variant": "triangular"}, "shape=(4,), hidden=4, variant='triangular'"),
        ({"variant": "triangular", "flip": True}, "shape=(4,), hidden=4, variant='triangular', flip=True"),
    ],
)
def test_extra_repr_names_the_variant_and_its_options(kwargs: dict[str, object], expected: str) -> None:
    b = Sylvester(**kwargs)(shape=S([4]))
    assert b.extra_repr() == expected
    m = b.hidden
    tri = S([m * (m + 1) // 2])
    shapes = (tri, tri, S([m]))
    if b.variant == "householder":
        shapes = (*shapes, S([b.n_reflections, 4]))
    assert b.param_shapes() == shapes


def test_sylvester_q_has_orthonormal_columns_and_triangles() -> None:
    b = build_float64(Sylvester(hidden=3, n_reflections=2), d=5)
    params = tuple(b.params_fn.params)  # type: ignore[union-attr]
    r, s, _, q = b._parts(params)  # type: ignore[operator]
    assert q.shape == (5, 3)
    torch.testing.assert_close(q.T @ q, torch.eye(3, dtype=DT))
    for m in (r, s):
        assert torch.equal(m, torch.triu(m))
        assert (torch.diagonal(m).abs() < 1).all()


def test_sylvester_log_det_by_sylvesters_identity() -> None:
    b = build_float64(Sylvester(hidden=3), d=5)
    r, s, bias, q = b._parts(tuple(b.params_fn.params))  # type: ignore[union-attr,operator]
    x = torch.randn(4, 5, dtype=DT)
    a = x @ q @ s.T + bias
    h = 1 - torch.tanh(a) ** 2
    jac = torch.eye(5, dtype=DT) + q @ r @ (h[:, :, None] * s) @ q.T  # dy/dx = I + Q R diag(h') S Q^T
    _, ladj = b.forward_and_ladj(x)  # type: ignore[operator]
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac)[1])


def test_sylvester_flip_is_the_identity_variant_on_reversed_coordinates() -> None:
    plain = build_float64(Sylvester(variant="triangular"), d=4)
    flipped = Sylvester(variant="triangular", flip=True)(shape=torch.Size([4])).to(DT)
    flipped.load_state_dict(plain.state_dict())  # type: ignore[attr-defined]
    x = torch.randn(3, 4, dtype=DT)
    torch.testing.assert_close(flipped.forward(x), plain.forward(x.flip(-1)).flip(-1))  # type: ignore[operator]


def test_sylvester_leaves_the_orthogonal_complement_alone() -> None:
    b = build_float64(Sylvester(hidden=2), d=5)
    *_, q = b._parts(tuple(b.params_fn.params))  # type: ignore[union-attr,operator]
    x = torch.randn(7, 5, dtype=DT)
    y = b.forward(x)  # type: ignore[operator]
    project = torch.eye(5, dtype=DT) - q @ q.T
    torch.testing.assert_close(y @ project, x @ project)
