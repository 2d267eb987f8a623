"""Generic-test cases of the frontier families: neural autoregressive flows, monotone polynomial and
integral transformers (numerical inverses) and FFJORD (ODE solvers).

Every class is listed in ``CUSTOM`` and built here with tiny networks so that the suite stays
fast. FFJORD cases use the exact trace (the log-det must match the autograd Jacobian) and tight
solver tolerances (the round trip is exact only up to the solver's error: ``1e-9`` in float64).
"""

from __future__ import annotations

from flowtorch.bijectors.ffjord import FFJORD
from flowtorch.bijectors.monotonic import UMNN, Bernstein, SOSPolynomial
from flowtorch.bijectors.naf import BlockNeuralAutoregressive, NeuralAutoregressive
from flowtorch.bijectors.permute import Permute
from flowtorch.core.compose import Compose, Invert
from flowtorch.parameters import DenseAutoregressive
from tests.case import Case

__all__ = ["CASES", "CUSTOM"]

CUSTOM = {"BlockNeuralAutoregressive", "Bernstein", "FFJORD", "NeuralAutoregressive", "SOSPolynomial", "UMNN"}


def _made() -> DenseAutoregressive:
    return DenseAutoregressive(hidden_dims=(8,))  # type: ignore[no-any-return]


def _naf() -> NeuralAutoregressive:
    return NeuralAutoregressive(_made(), hidden_units=4)  # type: ignore[no-any-return]


def _ffjord(**kwargs: object) -> FFJORD:
    options: dict[str, object] = dict(hidden_dims=(8,), rtol=1e-11, atol=1e-11)
    options.update(kwargs)
    return FFJORD(**options)  # type: ignore[no-any-return]


CASES: list[Case] = [
    Case("NeuralAutoregressive", _naf),
    Case("NeuralAutoregressive[context]", _naf, context=True),
    Case(
        "NeuralAutoregressive[bisection,2x2]",
        lambda: NeuralAutoregressive(_made(), hidden_units=3, solver="bisection"),
        shape=(2, 2),
    ),
    Case("BlockNeuralAutoregressive", lambda: BlockNeuralAutoregressive(hidden_units=4)),
    Case(
        "BlockNeuralAutoregressive[context]", lambda: BlockNeuralAutoregressive(hidden_units=3), context=True
    ),
    Case(
        "BlockNeuralAutoregressive[2 layers,2x2]",
        lambda: BlockNeuralAutoregressive(hidden_units=3, hidden_layers=2),
        shape=(2, 2),
    ),
    Case("SOSPolynomial", lambda: SOSPolynomial(_made())),
    Case("SOSPolynomial[context]", lambda: SOSPolynomial(_made(), count=2, degree=3), context=True),
    Case("Bernstein", lambda: Bernstein(degree=6)),
    Case("Bernstein[context]", lambda: Bernstein(degree=4, bound=2.0), context=True),
    Case("Bernstein[bisection,2x2]", lambda: Bernstein(degree=5, solver="bisection"), shape=(2, 2)),
    Case("UMNN", lambda: UMNN(_made(), embedding_dim=3, hidden_dims=(8,), nodes=16)),
    Case(
        "UMNN[context,clenshaw-curtis]",
        lambda: UMNN(_made(), embedding_dim=2, hidden_dims=(6,), nodes=17, rule="clenshaw-curtis"),
        context=True,
    ),
    Case("FFJORD", lambda: _ffjord()),
    Case("FFJORD[context]", lambda: _ffjord(hidden_dims=(6,), context_features=3), context=True),
    Case(
        "FFJORD[rk4,softplus,2x2]",
        lambda: _ffjord(solver="rk4", steps=24, activation="softplus"),
        shape=(2, 2),
    ),
    Case("FFJORD[adjoint,context]", lambda: _ffjord(hidden_dims=(6,), adjoint=True), context=True),
    Case("Invert(NeuralAutoregressive)[context]", lambda: Invert(_naf()), context=True),
    Case(
        "Compose(UMNN, Permute, BlockNeuralAutoregressive)",
        lambda: Compose(
            [
                UMNN(_made(), embedding_dim=2, hidden_dims=(6,), nodes=12),
                Permute(),
                BlockNeuralAutoregressive(hidden_units=3),
            ]
        ),
    ),
]
