"""Linear layers with a bounded spectral norm, the contractive blocks of residual flows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpectralNormLinear"]


class SpectralNormLinear(nn.Module):
    r"""A linear layer :math:`x \mapsto \tilde W x + b` with spectral norm at most ``coefficient``.

    .. math:: \tilde W = W / \max\big(1, \hat\sigma(W) / c\big),

    where :math:`\hat\sigma(W)` is the largest singular value of :math:`W`. By default it is
    estimated by power iteration, warm-started from the buffer ``u`` and run at every call
    until the extrapolated error of :math:`\hat\sigma` is below ``power_tol`` (relative;
    default ``100 eps``) or ``power_max_iter`` steps, so a forward pass and a later inverse pass
    see the same map. ``u`` is written back only when the estimate improved, so the buffer's
    version counter (which ``BijectiveMode`` checks) moves only when it must. The gradient flows
    through :math:`\hat\sigma = u^\top W v` with :math:`u, v` held fixed, the derivative of the
    top singular value.

    Power iteration approaches :math:`\sigma` from below at the rate
    :math:`(\sigma_2/\sigma_1)^2` per step: when the two largest singular values nearly
    coincide, a call may stop short (at ``power_max_iter``, or where float rounding hides the
    progress) and leave :math:`\|\tilde W\|` a little above :math:`c` (by 0.3% in the worst of
    2000 random 5x3 float32 matrices at their first call); later calls continue from there.
    ``exact=True`` computes :math:`\sigma` by singular values instead: exact and without state,
    at a higher cost for larger matrices.

    Reference: Miyato et al., "Spectral Normalization for Generative Adversarial Networks", 2018.

    Args:
        in_features: size of each input, the number of columns of :math:`W`.
        out_features: size of each output, the number of rows of :math:`W`.
        coefficient: :math:`c > 0`, the bound on the spectral norm.
        bias: whether the layer adds a learnable bias :math:`b`.
        power_tol: relative tolerance of the power iteration (default ``100 eps`` of the
            weight's dtype).
        power_max_iter: the most power-iteration steps per call.
        exact: compute :math:`\sigma(W)` by singular values instead of power iteration.

    Shapes: ``x`` is ``batch + (in_features,)``, the output ``batch + (out_features,)``.

    Example:
        >>> import torch
        >>> from flowtorch.nn import SpectralNormLinear
        >>> _ = torch.manual_seed(0)
        >>> layer = SpectralNormLinear(3, 5, coefficient=0.9)
        >>> bool(torch.linalg.matrix_norm(layer.normalized_weight(), 2) <= 0.9 * (1 + 1e-4))
        True
    """

    u: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coefficient: float = 0.9,
        bias: bool = True,
        power_tol: float | None = None,
        power_max_iter: int = 500,
        exact: bool = False,
    ) -> None:
        super().__init__()
        if not coefficient > 0.0:
            raise ValueError(f"SpectralNormLinear: coefficient must be positive, got {coefficient}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.coefficient = float(coefficient)
        self.power_tol = power_tol
        self.power_max_iter = int(power_max_iter)
        self.exact = bool(exact)
        linear = nn.Linear(in_features, out_features, bias=bias)  # its initialisation
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if bias else None
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))

    @torch.no_grad()
    def _power_iteration(self) -> tuple[torch.Tensor, torch.Tensor]:
        w, u = self.weight, self.u
        eps, tiny = torch.finfo(w.dtype).eps, torch.finfo(w.dtype).tiny
        tol = self.power_tol if self.power_tol is not None else 100.0 * eps
        first = previous = change = -1.0
        v = u.new_empty(self.in_features)
        for _ in range(self.power_max_iter):
            v = w.mT @ u
            v = v / torch.linalg.vector_norm(v).clamp_min(tiny)
            wv = w @ v
            sigma = float(torch.linalg.vector_norm(wv))
            u = wv / max(sigma, tiny)
            if first < 0:
                first = sigma
            elif previous >= 0:
                last, change = change, abs(sigma - previous)
                # the error left, extrapolated from the geometric rate of the last two changes
                rate = min(change / last, 0.999) if last > 0 else 0.0
                if change * (1.0 + rate / (1.0 - rate)) <= tol * sigma or change <= 4.0 * eps * sigma:
                    break  # (the second test: progress below rounding, nothing more to gain)
            previous = sigma
        if sigma > first * (1.0 + 16.0 * eps):  # the warm start was not converged: keep the better one
            self.u.copy_(u)
        return u, v

    def sigma(self) -> torch.Tensor:
        """The largest singular value of ``weight``, estimated (or exact with ``exact=True``);
        differentiable in ``weight``."""
        if self.exact:
            norm: torch.Tensor = torch.linalg.matrix_norm(self.weight, 2)
            return norm
        u, v = self._power_iteration()
        return torch.dot(u, self.weight @ v)

    def normalized_weight(self) -> torch.Tensor:
        """:math:`\\tilde W`, shape ``(out_features, in_features)``."""
        scale = (self.sigma() / self.coefficient).clamp_min(1.0)
        return self.weight / scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"coefficient={self.coefficient}, bias={self.bias is not None}, exact={self.exact}"
        )
