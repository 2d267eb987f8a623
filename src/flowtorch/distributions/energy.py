"""The four 2-D energy densities of Rezende & Mohamed (2015), targets for variational inference."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.distributions import Distribution, constraints

__all__ = ["EnergyDensity"]

_NAMES = ("U1", "U2", "U3", "U4")


def _w1(z1: torch.Tensor) -> torch.Tensor:
    return torch.sin(0.5 * math.pi * z1)


def _w2(z1: torch.Tensor) -> torch.Tensor:
    return 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1: torch.Tensor) -> torch.Tensor:
    return 3.0 * torch.sigmoid((z1 - 1.0) / 0.3)


def _neg_log_two_bumps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`-\log(e^{-a^2/2} + e^{-b^2/2})`, without underflow."""
    return -torch.logaddexp(-0.5 * a * a, -0.5 * b * b)


def _energy(name: str, z: torch.Tensor) -> torch.Tensor:
    """The energy :math:`U(z)` named ``name`` at ``z`` (``... x 2``); see :class:`EnergyDensity`."""
    z1, z2 = z[..., 0], z[..., 1]
    if name == "U1":
        ring: torch.Tensor = 0.5 * ((torch.linalg.vector_norm(z, dim=-1) - 2.0) / 0.4) ** 2
        return ring + _neg_log_two_bumps((z1 - 2.0) / 0.6, (z1 + 2.0) / 0.6)
    w1 = _w1(z1)
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "U3":
        return _neg_log_two_bumps((z2 - w1) / 0.35, (z2 - w1 + _w2(z1)) / 0.35)
    if name == "U4":
        return _neg_log_two_bumps((z2 - w1) / 0.4, (z2 - w1 + _w3(z1)) / 0.35)
    raise ValueError(f"EnergyDensity: unknown energy {name!r}; use one of {_NAMES}")


class EnergyDensity(Distribution):
    r"""The unnormalised density :math:`p(z) \propto e^{-U(z)}` on :math:`\mathbb R^2`, with one of
    the four energies of Rezende & Mohamed (2015, table 1):

    .. math::
        U_1(z) &= \tfrac12\Big(\frac{\|z\| - 2}{0.4}\Big)^2
                 - \log\Big(e^{-\frac12 (\frac{z_1 - 2}{0.6})^2}
                 + e^{-\frac12 (\frac{z_1 + 2}{0.6})^2}\Big),\\
        U_2(z) &= \tfrac12\Big(\frac{z_2 - w_1(z)}{0.4}\Big)^2,\\
        U_3(z) &= -\log\Big(e^{-\frac12 (\frac{z_2 - w_1(z)}{0.35})^2}
                 + e^{-\frac12 (\frac{z_2 - w_1(z) + w_2(z)}{0.35})^2}\Big),\\
        U_4(z) &= -\log\Big(e^{-\frac12 (\frac{z_2 - w_1(z)}{0.4})^2}
                 + e^{-\frac12 (\frac{z_2 - w_1(z) + w_3(z)}{0.35})^2}\Big),

    with :math:`w_1(z) = \sin(\pi z_1 / 2)`, :math:`w_2(z) = 3 e^{-\frac12 ((z_1 - 1)/0.6)^2}`
    and :math:`w_3(z) = 3\,\sigma((z_1 - 1)/0.3)`.

    ``log_prob`` returns :math:`-U(z)`, without the normalising constant (which
    :meth:`log_normalizer` estimates by quadrature). :math:`U_1` is normalisable;
    :math:`U_2` to :math:`U_4` do not decay along :math:`z_1`, so their :math:`e^{-U}` has
    infinite mass. The paper shows them on the square :math:`[-4, 4]^2`; ``box=4.0`` adds the
    wall :math:`\tfrac12 \sum_i (\max(|z_i| - \text{box}, 0) / 0.1)^2` to the energy, which
    leaves it unchanged inside the square and makes every target normalisable. There is no
    exact sampler: ``sample`` raises.

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015.

    Args:
        name: ``"U1"``, ``"U2"``, ``"U3"`` or ``"U4"``.
        box: half-width of the confining square, or ``None`` for the energy as published.

    Shapes: ``log_prob(z)`` takes ``batch + (2,)`` and returns ``batch``.

    Example:
        >>> import torch
        >>> from flowtorch.distributions.energy import EnergyDensity
        >>> p = EnergyDensity("U1")
        >>> p.log_prob(torch.tensor([[2.0, 0.0], [0.0, 0.0]])) > -2.0
        tensor([ True, False])
    """

    support = constraints.real_vector
    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_rsample = False

    def __init__(self, name: str = "U1", box: float | None = None, validate_args: bool | None = None) -> None:
        if name not in _NAMES:
            raise ValueError(f"EnergyDensity: unknown energy {name!r}; use one of {_NAMES}")
        if box is not None and not box > 0:
            raise ValueError(f"EnergyDensity: box must be positive or None, got {box}")
        self.name = name
        self.box = None if box is None else float(box)
        super().__init__(torch.Size(), torch.Size([2]), validate_args=validate_args)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`U(z)`, with the wall if ``box`` is set; shape ``batch``."""
        u = _energy(self.name, z)
        if self.box is not None:
            outside = (z.abs() - self.box).clamp_min(0.0) / 0.1
            u = u + 0.5 * outside.square().sum(-1)
        return u

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`-U(z)`: the log density up to the constant :math:`\\log Z`."""
        if self._validate_args:
            self._validate_sample(value)
        return -self.energy(value)

    def log_normalizer(self, limit: float = 6.0, points: int = 1201) -> float:
        r""":math:`\log Z = \log \int e^{-U(z)}\,dz` by the trapezoidal rule on ``[-limit, limit]^2``.

        Accurate to about 1e-6 for :math:`U_1` and for the boxed energies with the defaults;
        without a box, :math:`U_2` to :math:`U_4` have no finite :math:`Z` (this then returns
        the mass inside the square only).
        """
        grid = torch.linspace(-limit, limit, points, dtype=torch.float64)
        mesh = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
        log_p = -self.energy(mesh)
        weights = torch.ones(points, dtype=torch.float64)
        weights[0] = weights[-1] = 0.5
        log_w = (weights[:, None] * weights[None, :]).log() + 2.0 * math.log(float(grid[1] - grid[0]))
        return float(torch.logsumexp((log_p + log_w).flatten(), 0))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        raise NotImplementedError(
            f"EnergyDensity({self.name!r}) is known only up to its normalising constant and has no "
            "exact sampler; fit a flow to it (examples/energy_vi.py) and sample that"
        )

    def __repr__(self) -> str:
        box = "" if self.box is None else f", box={self.box}"
        return f"EnergyDensity({self.name!r}{box})"
