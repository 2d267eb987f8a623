"""Small data sets and helpers shared by the examples, written with torch only."""

from __future__ import annotations

import math

import torch

__all__ = ["make_two_moons", "two_moons_log_prob"]


def _moon_centres(t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Points on the two noiseless half circles: the upper one for label 0, the lower one for 1.

    ``t`` runs over ``[0, pi]``. The upper moon is the unit half circle above the origin; the lower
    moon is the same half circle flipped and moved to ``(1, 0.5)``, so the two interlock.
    """
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=-1)
    lower = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=-1)
    return torch.where(label[..., None].bool(), lower, upper)


def make_two_moons(
    n: int, noise: float = 0.1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws ``n`` points of the two-moons data set.

    Each point picks a moon with probability 1/2, a position ``t ~ U(0, pi)`` along it (uniform in
    arc length) and isotropic Gaussian noise of standard deviation ``noise``.

    Args:
        n: number of points.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        generator: random number generator, for reproducible data.

    Returns:
        ``(x, label)``: points of shape ``(n, 2)`` and moon labels (0 or 1) of shape ``(n,)``.
    """
    label = torch.randint(0, 2, (n,), generator=generator)
    t = math.pi * torch.rand(n, generator=generator)
    x = _moon_centres(t, label) + noise * torch.randn(n, 2, generator=generator)
    return x, label


def two_moons_log_prob(x: torch.Tensor, noise: float = 0.1, grid: int = 2048) -> torch.Tensor:
    """The log density of the distribution ``make_two_moons`` samples from, by quadrature.

    The density is a mixture, over the moon and over ``t``, of Gaussians centred on the curve:
    ``p(x) = 1/2 sum_moon 1/pi int_0^pi N(x; c_moon(t), noise^2 I) dt``. The integral is taken with
    the midpoint rule on ``grid`` points per moon, which is accurate while the spacing between
    neighbouring centres (``pi / grid``) is well below ``noise``. Its mean over held-out points is
    the best negative log-likelihood any model can reach in expectation (the data's entropy).

    Args:
        x: points of shape ``(..., 2)``.
        noise: the ``noise`` the data was drawn with.
        grid: quadrature points per moon.

    Returns:
        ``log p(x)`` of shape ``x.shape[:-1]``.
    """
    t = (torch.arange(grid, dtype=x.dtype) + 0.5) * (math.pi / grid)
    labels = torch.cat([torch.zeros(grid), torch.ones(grid)]).to(torch.long)
    centres = _moon_centres(torch.cat([t, t]), labels)  # (2 * grid, 2)
    sq = (x[..., None, :] - centres).pow(2).sum(-1)  # (..., 2 * grid)
    log_kernel = -0.5 * sq / noise**2 - math.log(2.0 * math.pi * noise**2)
    # Each of the 2 * grid components has weight 1 / (2 * grid).
    return torch.logsumexp(log_kernel, dim=-1) - math.log(2 * grid)
