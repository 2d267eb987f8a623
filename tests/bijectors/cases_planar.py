"""Generic-test cases of the planar family (``Planar``, ``Radial``, ``Sylvester``) and of
``ResidualFlow``.

None of these has a textbook closed-form inverse, but each has one that is reliable to float
precision: ``Radial`` solves a quadratic, ``Planar`` and ``Sylvester`` solve scalar monotone
equations by safeguarded Newton steps, and ``ResidualFlow`` iterates a contraction to a
tolerance. So every class runs the whole generic suite, round trips included, and ``CUSTOM`` is
empty. The default-argument cases (and ``[context]`` for the classes with a conditioner) come
from ``conftest``; ``ResidualFlow`` has no conditioner, so its context case is listed here.

``ResidualFlow``'s default estimator for ``D <= 4`` is the exact log-det; the stochastic
estimators (``"series"``, ``"roulette"``) are not generic cases (the generic log-det check needs
a deterministic value): ``tests/bijectors/test_residual.py`` compares them with the exact one.
"""

from __future__ import annotations

from flowtorch.bijectors.planar import Planar
from flowtorch.bijectors.radial import Radial
from flowtorch.bijectors.residual import InvertibleResNet, ResidualFlow
from flowtorch.bijectors.sylvester import Sylvester
from flowtorch.core.compose import Compose
from tests.case import Case

__all__ = ["CASES", "CUSTOM"]

# the default log-det of InvertibleResNet is a stochastic estimate: its case asks for the exact one
CUSTOM: set[str] = {"InvertibleResNet"}

CASES: list[Case] = [
    Case("Planar[D=1]", lambda: Planar(), shape=(1,)),
    Case("Radial[D=5,context]", lambda: Radial(), shape=(5,), context=True),
    Case("Sylvester[hidden=2,1 reflection,D=4]", lambda: Sylvester(hidden=2, n_reflections=1), shape=(4,)),
    Case("Sylvester[triangular]", lambda: Sylvester(variant="triangular")),
    Case(
        "Sylvester[triangular,flip,context]", lambda: Sylvester(variant="triangular", flip=True), context=True
    ),
    Case("ResidualFlow[context]", lambda: ResidualFlow(hidden_dims=(16, 16)), context=True),
    Case(
        "ResidualFlow[elu,exact norm,D=5]",
        lambda: ResidualFlow(hidden_dims=(8,), activation="elu", estimator="exact", spectral="exact"),
        shape=(5,),
    ),
    Case(
        "ResidualFlow[tanh,D=2]", lambda: ResidualFlow(hidden_dims=(8, 8, 8), activation="tanh"), shape=(2,)
    ),
    Case("InvertibleResNet[exact log-det]", lambda: InvertibleResNet(hidden_dims=(8,), estimator="exact")),
    Case(
        "Compose(Planar, Radial, Sylvester, ResidualFlow)[context]",
        lambda: Compose([Planar(), Radial(), Sylvester(), ResidualFlow(hidden_dims=(8,))]),
        context=True,
    ),
]
