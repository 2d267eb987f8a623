"""Small data sets and helpers shared by the examples, written with torch (the digits loader reads
the copy of the data set that ships with scikit-learn)."""

from __future__ import annotations

import math

import torch

__all__ = [
    "load_digits_split",
    "make_rotating_mixture",
    "make_two_moons",
    "rotating_mixture_log_prob",
    "sample_rotating_mixture",
    "two_moons_log_prob",
]


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


def load_digits_split(
    n_val: int, n_test: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits, shuffled and split into training, validation and test.

    The 1797 images (``sklearn.datasets.load_digits``, bundled with scikit-learn, no download) are
    flattened to 64 pixels with integer values ``0..16``. The split is a random permutation drawn
    from ``generator``: the first ``n_test`` images are the test set, the next ``n_val`` the
    validation set and the rest the training set.

    Args:
        n_val: number of validation images.
        n_test: number of test images.
        generator: random number generator, for a reproducible split.

    Returns:
        ``(train, val, test)``: float tensors of shape ``(n, 64)`` holding pixel values ``0..16``.
    """
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float32)
    if n_val < 1 or n_test < 1 or n_val + n_test >= len(pixels):
        raise ValueError(f"cannot split {len(pixels)} images into {n_val} validation and {n_test} test ones")
    order = torch.randperm(len(pixels), generator=generator)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return pixels[train], pixels[val], pixels[test]


def _rotating_mixture_parts(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means ``(..., 2, 2)`` (component, coordinate) and shared Cholesky factor ``(..., 2, 2)`` of
    the two Gaussian components of ``p(y | c)``; ``c`` has shape ``(..., 1)``.

    With ``s = (c + 1) / 2`` running from 0 to 1, the components sit at ``+-1.5 s`` along the
    direction at angle ``theta = s pi / 2``; each has standard deviation ``0.3 + 0.7 (1 - s)``
    along that direction and ``0.3`` across it.
    """
    s = (c[..., 0] + 1.0) / 2.0
    theta = s * (math.pi / 2.0)
    u = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)  # along
    v = torch.stack([-torch.sin(theta), torch.cos(theta)], dim=-1)  # across
    offset = (1.5 * s)[..., None] * u
    means = torch.stack([offset, -offset], dim=-2)
    # Covariance R diag(a^2, b^2) R^T with R = [u v]: its Cholesky factor is that of this matrix.
    a = 0.3 + 0.7 * (1.0 - s)
    b = torch.full_like(a, 0.3)
    rot = torch.stack([u, v], dim=-1)  # columns u and v
    cov = rot @ torch.diag_embed(torch.stack([a * a, b * b], dim=-1)) @ rot.transpose(-1, -2)
    return means, torch.linalg.cholesky(cov)


def make_rotating_mixture(
    n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draws ``n`` pairs ``(y, c)`` of a 2-D conditional density that turns, narrows and splits with ``c``.

    The context is ``c ~ U(-1, 1)``. Given ``c``, with ``s = (c + 1) / 2``, ``y`` is an equal
    mixture of two Gaussians with means :math:`\pm 1.5 s\,u(c)`,
    :math:`u(c) = (\cos\theta, \sin\theta)`, :math:`\theta = s\pi/2`, and the same covariance,
    of standard deviation :math:`0.3 + 0.7(1 - s)` along :math:`u(c)` and :math:`0.3` across it.
    At ``c = -1`` it is one Gaussian stretched along the horizontal axis; as ``c`` grows it turns
    counter-clockwise, shrinks and splits; at ``c = 1`` it is two round blobs 3 apart on the
    vertical axis. :func:`rotating_mixture_log_prob` gives its exact log density.

    Args:
        n: number of pairs.
        generator: random number generator, for reproducible data.

    Returns:
        ``(y, c)``: points of shape ``(n, 2)`` and contexts of shape ``(n, 1)``.
    """
    c = 2.0 * torch.rand(n, 1, generator=generator) - 1.0
    return sample_rotating_mixture(c, generator), c


def sample_rotating_mixture(c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of ``y ~ p(y | c)`` of :func:`make_rotating_mixture` for each given context.

    Args:
        c: contexts of shape ``(n, 1)``, in ``[-1, 1]``.
        generator: random number generator, for reproducible draws.

    Returns:
        Points of shape ``(n, 2)``.
    """
    n = len(c)
    means, tril = _rotating_mixture_parts(c)
    component = torch.randint(0, 2, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator)
    return means[torch.arange(n), component] + (tril @ noise[..., None])[..., 0]


def rotating_mixture_log_prob(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The exact conditional log density ``log p(y | c)`` of :func:`make_rotating_mixture`.

    Args:
        y: points of shape ``(..., 2)``.
        c: contexts of shape ``(..., 1)``, broadcasting against ``y``'s batch dims.

    Returns:
        ``log p(y | c)`` of the broadcast batch shape.
    """
    means, tril = _rotating_mixture_parts(c)
    component = torch.distributions.MultivariateNormal(means, scale_tril=tril[..., None, :, :])
    return torch.logsumexp(component.log_prob(y[..., None, :]), dim=-1) - math.log(2.0)
