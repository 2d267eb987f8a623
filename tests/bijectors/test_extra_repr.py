"""``extra_repr`` of every bijector family: the hyperparameters a printed flow shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import flowtorch.nn as fnn
from flowtorch.bijectors import (
    affine,
    coupling,
    ffjord,
    linear,
    monotonic,
    naf,
    normalization,
    reshape,
    residual,
)

S = torch.Size

CASES: list[tuple[str, Callable[[], Any], str]] = [
    (
        "AffineFixed",
        lambda: affine.AffineFixed(loc=-1.0, scale=2.5)(shape=S([2])),
        "shape=(2,), loc=-1.0, scale=2.5",
    ),
    (
        "AffineCoupling[additive]",
        lambda: coupling.AffineCoupling(additive=True)(shape=S([4])),
        "shape=(4,), mask=[1, 0, 1, 0], additive=True",
    ),
    (
        "AffineCoupling[half,flip]",
        lambda: coupling.AffineCoupling(mask="half", flip=True)(shape=S([5])),
        "shape=(5,), mask=[0, 0, 0, 1, 1], additive=False",
    ),
    (
        "AffineCoupling[17 elements]",  # a long mask is summarised
        lambda: coupling.AffineCoupling()(shape=S([17])),
        "shape=(17,), mask=<9 identity of 17>, additive=False",
    ),
    (
        "AffineCoupling[(4, 5)]",
        lambda: coupling.AffineCoupling()(shape=S([4, 5])),
        "shape=(4, 5), mask=<12 identity of 20>, additive=False",
    ),
    (
        "SplineCoupling[context]",
        lambda: coupling.SplineCoupling(count_bins=4, bound=2.0)(shape=S([3]), context_shape=S([2])),
        "shape=(3,), context_shape=(2,), mask=[1, 0, 1], count_bins=4, bound=2.0",
    ),
    (
        "FFJORD",
        lambda: ffjord.FFJORD(hidden_dims=(4,))(shape=S([2])),
        "shape=(2,), time=1.0, solver='dopri5', trace='exact'",
    ),
    (
        "FFJORD[adjoint]",
        lambda: ffjord.FFJORD(hidden_dims=(4,), time=0.5, solver="rk4", trace="hutchinson", adjoint=True)(
            shape=S([2])
        ),
        "shape=(2,), time=0.5, solver='rk4', trace='hutchinson', adjoint=True",
    ),
    (
        "LULinear",
        lambda: linear.LULinear(diag_activation="exp", bias=False)(shape=S([3])),
        "shape=(3,), features=3, diag_activation='exp', bias=False",
    ),
    ("Householder", lambda: linear.Householder(n_reflections=2)(shape=S([3])), "shape=(3,), n_reflections=2"),
    (
        "SOSPolynomial",
        lambda: monotonic.SOSPolynomial(count=2, degree=3, solver="bisection")(shape=S([2])),
        "shape=(2,), solver='bisection', count=2, degree=3",
    ),
    (
        "Bernstein",
        lambda: monotonic.Bernstein(degree=5, bound=2.0)(shape=S([2])),
        "shape=(2,), solver='newton', degree=5, bound=2.0",
    ),
    (
        "UMNN",
        lambda: monotonic.UMNN(nodes=16, rule="clenshaw-curtis", hidden_dims=(8,))(shape=S([2])),
        "shape=(2,), solver='newton', nodes=16, rule='clenshaw-curtis'",
    ),
    (
        "NeuralAutoregressive",
        lambda: naf.NeuralAutoregressive(hidden_units=4)(shape=S([2])),
        "shape=(2,), solver='newton', hidden_units=4",
    ),
    (
        "BlockNeuralAutoregressive",
        lambda: naf.BlockNeuralAutoregressive(hidden_units=3, hidden_layers=2, slope=0.2)(shape=S([2])),
        "shape=(2,), hidden_units=3, hidden_layers=2, slope=0.2",
    ),
    ("ActNorm", lambda: normalization.ActNorm(dim=0)(shape=S([3, 2])), "shape=(3, 2), dim=-2"),
    (
        "BatchNorm",
        lambda: normalization.BatchNorm(momentum=0.5, eps=1e-3)(shape=S([3])),
        "shape=(3,), dim=-1, momentum=0.5, eps=0.001",
    ),
    ("Reshape", lambda: reshape.Reshape((3, -1))(shape=S([2, 3])), "shape=(2, 3), target_shape=(3, 2)"),
    (
        "SpectralNormLinear",
        lambda: fnn.SpectralNormLinear(3, 4, coefficient=0.5, bias=False, exact=True),
        "in_features=3, out_features=4, coefficient=0.5, bias=False, exact=True",
    ),
    (
        "ResidualFlow",
        lambda: residual.ResidualFlow(hidden_dims=(8,), activation="elu", coefficient=0.7, estimator="exact")(
            shape=S([2])
        ),
        "shape=(2,), hidden_dims=(8,), activation='elu', coefficient=0.7, estimator='exact'",
    ),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_extra_repr_shows_the_hyperparameters(make: Callable[[], Any], expected: str) -> None:
    module = make()
    assert module.extra_repr() == expected
    text = repr(module)
    assert text.startswith(f"{type(module).__name__}(") and expected in text
