"""Dense linear bijectors: an LU-parametrised matrix and a product of Householder reflections.

Both keep their learnable parameters on the bijector itself and take no conditioner, so they
take no context either (inside a conditional ``Compose`` they are simply called without one).
The LU maths lives in the family base :class:`LUBijector`, shared with
:class:`~flowtorch.bijectors.conv.Invertible1x1Conv`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints
from typing_extensions import Self

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params
from flowtorch.core.validation import integer_at_least

__all__ = ["Householder", "LUBijector", "LULinear", "Permutation"]

Permutation = Union[torch.Tensor, Sequence[int], Literal["identity"], None]


#: What the eval-mode cache of ``LUBijector`` holds: the tensors W depends on, copies of their values,
#: and W^-1.
_InverseCache = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]


def _no_conditioner(name: str, params_fn: object) -> None:
    if params_fn is not None:
        raise TypeError(
            f"{name} keeps its learnable parameters on itself and takes no conditioner "
            f"(params_fn), got {params_fn!r}; it is unconditional and takes no context"
        )


def _permutation(permutation: Permutation, n: int, name: str) -> torch.Tensor:
    """A permutation of ``0..n-1``: random (``None``), ``"identity"``, or the one given."""
    if permutation is None:
        return torch.randperm(n)
    if isinstance(permutation, str):
        if permutation != "identity":
            raise ValueError(f"{name}: unknown permutation {permutation!r}; use 'identity' or a sequence")
        return torch.arange(n)
    perm = torch.as_tensor(permutation, dtype=torch.long)
    if perm.dim() != 1 or perm.numel() != n or not torch.equal(perm.sort().values, torch.arange(n)):
        raise ValueError(f"{name}: {perm.tolist()} is not a permutation of 0..{n - 1}")
    return perm


class LUBijector(Bijector, base=True):
    r"""Shared maths of the LU-parametrised linear maps :math:`W = P L (U + \mathrm{diag}(d))`.

    The mixed dim is event dim ``-_mix_from_end`` (1: the last dim; 3: the channel dim of a
    ``(C, H, W)`` event); every other dim is mapped independently. Subclasses set
    ``_mix_from_end`` and the class-level ``domain``; :class:`LULinear` and
    :class:`~flowtorch.bijectors.Invertible1x1Conv` are the two in flowtorch.

    Args:
        permutation: :math:`P` as a permutation of the mixed dim, ``None`` (default) for a random
            one drawn at build time, or ``"identity"``.
        identity_init: start from :math:`L = I, U = 0, d = 1` (default); otherwise the strict
            triangles are drawn at random.
        diag_activation: ``"softplus"`` (default) or ``"exp"``, which makes :math:`d` positive.
        min_diag: added to the diagonal; default ``1e-3`` for softplus, ``0`` for exp.
        bias: learn a shift (default ``True``).

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.linear import LUBijector
        >>> class MixLast(LUBijector):  # mixes the last event dim, as LULinear does
        ...     pass
        >>> b = MixLast(shape=torch.Size([3]), identity_init=False)
        >>> x = torch.randn(4, 3)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> torch.allclose(b.inverse(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([4]))
    """

    _mix_from_end = 1
    domain = constraints.real_vector
    codomain = constraints.real_vector
    permutation: torch.Tensor
    inv_permutation: torch.Tensor
    bias: nn.Parameter | None

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        permutation: Permutation = None,
        identity_init: bool = True,
        diag_activation: Literal["softplus", "exp"] = "softplus",
        min_diag: float | None = None,
        bias: bool = True,
    ) -> None:
        name = type(self).__name__
        _no_conditioner(name, params_fn)
        if diag_activation not in ("softplus", "exp"):
            raise ValueError(f"{name}: diag_activation must be 'softplus' or 'exp', got {diag_activation!r}")
        if min_diag is None:
            min_diag = 1e-3 if diag_activation == "softplus" else 0.0
        if not 0 <= min_diag < 1:
            raise ValueError(f"{name}: min_diag must be in [0, 1) (the diagonal starts at 1), got {min_diag}")
        self.diag_activation = diag_activation
        self.min_diag = float(min_diag)
        super().__init__(None, shape=shape, context_shape=context_shape)
        n = self.shape[-self._mix_from_end]
        if n < 1:
            raise ValueError(f"{name}: the mixed dim has size {n}; it must be at least 1")
        #: the size of the mixed dim
        self.features = n
        #: how many times each diagonal entry enters log|det J| (the other event dims' size)
        self._repeats = self.shape.numel() // n
        perm = _permutation(permutation, n, name)
        self.register_buffer("permutation", perm)
        self.register_buffer("inv_permutation", torch.argsort(perm))
        # Only the strictly lower (upper) triangle of ``lower`` (``upper``) is used.
        self.lower = nn.Parameter(torch.zeros(n, n))
        self.upper = nn.Parameter(torch.zeros(n, n))
        self.unconstrained_diag = nn.Parameter(torch.full((n,), self._unconstrain(1.0)))
        if bias:
            self.bias = nn.Parameter(torch.zeros(n))
        else:
            self.register_parameter("bias", None)
        if not identity_init:
            bound = 1.0 / math.sqrt(n)
            with torch.no_grad():
                self.lower.uniform_(-bound, bound)
                self.upper.uniform_(-bound, bound)
        #: (the tensors W depends on, copies of their values, W^-1), see _cached_inverse_weight
        self._inverse_cache: _InverseCache | None = None

    def _unconstrain(self, d: float) -> float:
        """The raw diagonal parameter that gives diagonal entry ``d``."""
        d -= self.min_diag
        return math.log(d) if self.diag_activation == "exp" else math.log(math.expm1(d))

    def _raw_event_dim(self) -> int:
        return len(self.shape)  # log|det J| is one number per batch element

    # ------------------------------------------------------------------ the factors
    def diagonal(self) -> torch.Tensor:
        """The positive diagonal :math:`d` of the upper factor, shape ``(n,)``."""
        raw = self.unconstrained_diag
        d = raw.exp() if self.diag_activation == "exp" else F.softplus(raw)
        return d + self.min_diag if self.min_diag else d

    def _log_diagonal(self) -> torch.Tensor:
        if self.diag_activation == "exp" and not self.min_diag:
            raw: torch.Tensor = self.unconstrained_diag
            return raw
        return self.diagonal().log()

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit lower triangular :math:`L` and the upper triangular :math:`U + \\mathrm{diag}(d)`."""
        lower = torch.tril(self.lower, -1) + torch.eye(
            self.features, dtype=self.lower.dtype, device=self.lower.device
        )
        upper = torch.triu(self.upper, 1) + torch.diag(self.diagonal())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """The assembled matrix :math:`W = P L (U + \\mathrm{diag}(d))`, shape ``(n, n)``."""
        lower, upper = self.factors()
        return (lower @ upper)[self.permutation]  # (P A)_i = A_{perm[i]}

    def _solve(self, v: torch.Tensor, dim: int) -> torch.Tensor:
        """:math:`W^{-1} v` along ``dim`` of ``v``, by a permutation and two triangular solves."""
        lower, upper = self.factors()
        v = v.index_select(dim, self.inv_permutation)  # P^{-1} v
        moved = v.movedim(dim, -1)
        rows = moved.reshape(-1, self.features)  # one system per row: solve  r = A z  as  r^T = z^T A^T
        rows = torch.linalg.solve_triangular(lower.mT, rows, upper=True, left=False, unitriangular=True)
        rows = torch.linalg.solve_triangular(upper.mT, rows, upper=False, left=False)
        out: torch.Tensor = rows.reshape(moved.shape).movedim(-1, dim).contiguous()
        return out

    def inverse_weight(self) -> torch.Tensor:
        """:math:`W^{-1} = (U + \\mathrm{diag}(d))^{-1} L^{-1} P^{-1}`, by triangular solves."""
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        return self._solve(eye, 0)

    # ------------------------------------------------------------------ eval-mode cache
    def _cached_inverse_weight(self) -> torch.Tensor | None:
        """:math:`W^{-1}` from the eval-mode cache, or ``None`` when it must not be used.

        The cache is used only in eval mode and when no gradient is needed with respect to the
        parameters (a cached tensor cannot carry a fresh autograd graph). It is served only if
        every tensor :math:`W` depends on is the same object, of the same dtype and device, and
        holds the same values as when :math:`W^{-1}` was computed (compared with a copy, so that
        writes no version counter records, through ``p.data`` or by a fused optimizer step, are
        seen too); it is dropped by every ``train()``/``eval()`` call and by ``.to()``.
        """
        if self.training:
            return None
        if torch.is_grad_enabled() and any(
            p.requires_grad for p in (self.lower, self.upper, self.unconstrained_diag)
        ):
            return None
        tensors = (self.lower, self.upper, self.unconstrained_diag, self.inv_permutation)
        cache = self._inverse_cache
        if cache is not None:
            objects, copies, inverse = cache
            if all(
                t is o and t.dtype == c.dtype and t.device == c.device and torch.equal(t, c)
                for t, o, c in zip(tensors, objects, copies)
            ):
                return inverse
        with torch.no_grad():
            copies = tuple(t.detach().clone() for t in tensors)
            self._inverse_cache = (tensors, copies, self.inverse_weight())
        return self._inverse_cache[2]

    def clear_cache(self) -> None:
        """Drops the cached :math:`W^{-1}` (to free its memory; it is never served stale)."""
        self._inverse_cache = None

    def train(self, mode: bool = True) -> Self:
        self._inverse_cache = None
        return super().train(mode)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._inverse_cache = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ the map
    def _mix(self, matrix: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``matrix @ x`` along the mixed dim, plus ``bias``."""
        k = self._mix_from_end
        if k == 1:
            return F.linear(x, matrix, bias)
        n = self.features
        cols = x.reshape(*x.shape[: x.dim() - k], n, -1)  # (..., n, positions)
        out = matrix @ cols
        if bias is not None:
            out = out + bias[:, None]
        return out.reshape(x.shape)

    def _log_det(self) -> torch.Tensor:
        ladj = self._log_diagonal().sum()
        return ladj * self._repeats if self._repeats != 1 else ladj

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self._mix(self.weight(), x, self.bias)

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        v = y if self.bias is None else self._unbias(y)
        inv = self._cached_inverse_weight()
        if inv is not None:
            return self._mix(inv, v, None)
        return self._solve(v, v.dim() - self._mix_from_end)

    def _unbias(self, y: torch.Tensor) -> torch.Tensor:
        assert self.bias is not None
        k = self._mix_from_end
        b = self.bias if k == 1 else self.bias.reshape(self.features, *(1,) * (k - 1))
        return y - b

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._log_det()

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(x, params), self._log_det()

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inverse(y, params), self._log_det()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, features={self.features}, diag_activation={self.diag_activation!r}, "
            f"bias={self.bias is not None}"
        )


class LULinear(LUBijector):
    r"""Dense invertible linear map of the last event dim, parametrised by its LU decomposition.

    .. math::
        y = W x + b, \qquad W = P\, L\, (U + \mathrm{diag}(d)), \qquad
        \log|\det J| = \sum_{i=1}^{n} \log d_i,

    where :math:`P` is a fixed permutation (a buffer, random unless given), :math:`L` is unit
    lower triangular, :math:`U` strictly upper triangular and :math:`d > 0` is
    ``softplus(raw) + min_diag`` or ``exp(raw) + min_diag`` (``diag_activation``). Evaluating
    :math:`W` costs :math:`O(n^3)`, log|det J| :math:`O(n)`; the inverse is two triangular solves,
    :math:`x = (U + \mathrm{diag}(d))^{-1} L^{-1} P^{-1} (y - b)`. In eval mode, when no gradient
    with respect to the parameters is needed, :math:`W^{-1}` is computed once and reused until a
    parameter changes (keyed on the parameters' version counters; dropped by ``train()``,
    ``eval()`` and ``.to()``). Other event dims, if any, are mapped independently and each adds
    its own copy of :math:`\sum_i \log d_i`.

    With ``identity_init=True`` the factors start at :math:`L = I`, :math:`U = 0`, :math:`d = 1`,
    :math:`b = 0`: :math:`W = P`, a volume-preserving reordering; with
    ``permutation="identity"`` as well, the layer starts as the identity map.

    The parameters live on the bijector (no conditioner), so it takes no context.

    References: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    2018; Durkan et al., "Neural Spline Flows", 2019.

    Args:
        permutation: :math:`P` as a permutation of ``0..n-1`` (``(Px)_i = x_{perm[i]}``), ``None``
            (default) for a random one drawn at build time, or ``"identity"``.
        identity_init: start from :math:`L = I, U = 0, d = 1` (default); otherwise the strict
            triangles are drawn from :math:`\mathcal{U}(-1/\sqrt{n}, 1/\sqrt{n})`.
        diag_activation: ``"softplus"`` (default) or ``"exp"``.
        min_diag: added to the diagonal; default ``1e-3`` for softplus, ``0`` for exp.
        bias: learn the shift :math:`b` (default ``True``).

    Shapes: ``x`` is ``sample + batch + shape`` with ``shape[-1] = n``; log|det J| is
    ``sample + batch``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.LULinear(permutation=[1, 0], diag_activation="exp")(shape=torch.Size([2]))
        >>> b.forward(torch.tensor([1.0, 2.0])).detach()
        tensor([2., 1.])
        >>> x = torch.randn(5, 2)
        >>> torch.allclose(b.inverse(b.forward(x)), x)
        True
    """

    costs = Costs(
        "analytic",
        "O(D²) per sample + O(D³) to form W",
        "2 triangular solves, O(D²) per sample",
        "O(D)",
        reference="Kingma & Dhariwal 2018; Durkan et al. 2019",
    )


class Householder(Bijector):
    r"""Orthogonal map of the last event dim: a product of ``n_reflections`` Householder reflections.

    .. math::
        y = H_K \cdots H_1 x, \qquad H_k = I - 2\,\frac{v_k v_k^\top}{\|v_k\|^2}, \qquad
        \log|\det J| = 0.

    Each :math:`H_k` is symmetric and orthogonal (its own inverse), so the inverse applies the
    reflections in reverse order: :math:`x = H_1 \cdots H_K y`. Products of :math:`n`
    reflections reach every orthogonal :math:`n \times n` matrix. The vectors :math:`v_k` are
    learnable parameters of the bijector (no conditioner, no context), drawn from a standard
    normal at build time.

    Reference: Tomczak & Welling, "Improving Variational Auto-Encoders using Householder Flow",
    2016.

    Args:
        n_reflections: :math:`K`, default :math:`n` (the size of the last event dim).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.Householder(n_reflections=2)(shape=torch.Size([3]))
        >>> q = b.weight()
        >>> torch.allclose(q @ q.T, torch.eye(3), atol=1e-6)
        True
    """

    costs = Costs(
        "analytic",
        "O(KD), K reflections",
        "O(KD)",
        "0 (volume preserving)",
        reference="Tomczak & Welling 2016",
    )

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        n_reflections: int | None = None,
    ) -> None:
        _no_conditioner("Householder", params_fn)
        super().__init__(None, shape=shape, context_shape=context_shape)
        n = self.shape[-1]
        k = n if n_reflections is None else n_reflections
        self.n_reflections = integer_at_least(k, "Householder: n_reflections")
        #: the reflection vectors :math:`v_k`, one per row
        self.vectors = nn.Parameter(torch.randn(k, n))

    def _reflections(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(v_k, 2 v_k / |v_k|^2)`` for each reflection, in forward order."""
        v = self.vectors
        tiny = torch.finfo(v.dtype).tiny
        scaled = v * (2.0 / v.square().sum(-1, keepdim=True).clamp_min(tiny))
        return list(zip(v.unbind(0), scaled.unbind(0)))

    @staticmethod
    def _reflect(x: torch.Tensor, v: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
        return x - (x @ v).unsqueeze(-1) * scaled

    def weight(self) -> torch.Tensor:
        """The orthogonal matrix :math:`Q = H_K \\cdots H_1`, shape ``(n, n)`` (``y = Q x``)."""
        eye = torch.eye(self.shape[-1], dtype=self.vectors.dtype, device=self.vectors.device)
        return self._forward(eye, None).mT  # row i of the forward image of I is (Q e_i)^T

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        for v, s in self._reflections():
            x = self._reflect(x, v, s)
        return x

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        for v, s in reversed(self._reflections()):
            y = self._reflect(y, v, s)
        return y

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return x.new_zeros(())

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(x, params), x.new_zeros(())

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inverse(y, params), y.new_zeros(())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_reflections={self.n_reflections}"
