"""Sylvester normalizing flows (van den Berg et al. 2018): planar flows with ``M`` hidden units."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from flowtorch.bijectors.planar import solve_shifted_tanh
from flowtorch.core.bijector import Bijector, Conditioner, Costs, Later, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.core.validation import integer_at_least, vector_event
from flowtorch.parameters import Tensor

__all__ = ["Sylvester"]

_VARIANTS = ("householder", "triangular")


class Sylvester(Bijector):
    r"""Sylvester flow: :math:`y = x + Q R \tanh(\tilde R Q^\top x + b)` on a vector event.

    .. math::
        \log|\det J| = \log\big|\det\big(I_M + \mathrm{diag}(\tanh'(a))\,\tilde R R\big)\big|
                     = \sum_{i=1}^M \log\big|1 + \tanh'(a_i)\, \tilde R_{ii} R_{ii}\big|,
        \qquad a = \tilde R Q^\top x + b,

    by Sylvester's determinant identity, with :math:`R, \tilde R` upper triangular
    :math:`M \times M` and :math:`Q` a :math:`D \times M` matrix with orthonormal columns. The
    diagonals are :math:`R_{ii} = \tanh(\cdot)`, :math:`\tilde R_{ii} = \tanh(\cdot)`, so
    :math:`R_{ii}\tilde R_{ii} > -1` and the map is invertible.

    ``variant="householder"`` (H-SNF): :math:`Q` is the first :math:`M` columns of
    :math:`H_1 \cdots H_K`, a product of ``n_reflections`` Householder reflections
    :math:`H_k = I - 2 v_k v_k^\top / \|v_k\|^2`; any :math:`M \le D`.
    ``variant="triangular"`` (T-SNF): :math:`M = D` and :math:`Q` is the identity, or the
    reversal permutation with ``flip=True`` (alternate it between layers).

    Inverse: the part of :math:`x` orthogonal to the columns of :math:`Q` is unchanged, and
    :math:`z = Q^\top x` solves :math:`z + R\tanh(\tilde R z + b) = Q^\top y`, a triangular
    system: its last row involves :math:`z_M` alone, and each row above adds one unknown, so
    it is solved from the bottom up by :math:`M` scalar monotone equations
    (:func:`~flowtorch.bijectors.planar.solve_shifted_tanh`), then refined by two
    differentiable Newton steps (triangular solves), which give the implicit function's first
    and second derivatives. It is reliable to float precision, outside ``BijectiveMode`` too.

    The conditioner emits the packed upper triangles of :math:`R` and :math:`\tilde R`
    (``M (M + 1) / 2`` numbers each, row by row, diagonal entries before the ``tanh``),
    :math:`b` (``M``) and, for the Householder variant, the reflection vectors
    (``(K, D)``). The default ``flowtorch.parameters.Tensor()`` gives free parameters, or
    parameters affine in a context (the paper's amortised setting).

    Reference: van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows for
    Variational Inference", 2018.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.Tensor()``.
        hidden: :math:`M`, the number of hidden units (Householder variant; default ``D``).
        variant: ``"householder"`` or ``"triangular"``.
        n_reflections: :math:`K` (Householder variant; default ``D``).
        flip: use the reversal permutation as :math:`Q` (triangular variant).

    Shapes: ``x`` is ``sample + batch + (D,)``; parameter batch dims (from a context)
    broadcast against ``sample + batch``.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.sylvester import Sylvester
        >>> b = Sylvester(hidden=2)(shape=torch.Size([4]))
        >>> x = torch.randn(5, 4)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> torch.allclose(b.inverse(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([5]))
    """

    costs = Costs(
        "numerical (M scalar solves, bottom up)",
        "O(DM + M²)",
        "O(DM + M²) + M scalar solves",
        "O(M)",
        reference="van den Berg et al. 2018",
    )

    domain = constraints.real_vector
    codomain = constraints.real_vector
    _rows: torch.Tensor
    _cols: torch.Tensor

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        hidden: int | None = None,
        variant: str = "householder",
        n_reflections: int | None = None,
        flip: bool = False,
    ) -> None:
        name = type(self).__name__
        shape = vector_event(name, shape)
        d = shape[0]
        if variant not in _VARIANTS:
            raise ValueError(f"{name}: variant must be one of {_VARIANTS}, got {variant!r}")
        m = d if hidden is None else hidden
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= d:
            raise ValueError(f"{name}: hidden must be an integer in [1, D={d}], got {hidden!r}")
        if variant == "triangular" and m != d:
            raise ValueError(f"{name}: the triangular variant has hidden = D = {d}, got hidden={hidden}")
        k = d if n_reflections is None else n_reflections
        integer_at_least(k, f"{name}: n_reflections")
        if variant == "triangular" and n_reflections is not None:
            raise ValueError(f"{name}: n_reflections applies to the householder variant only")
        if variant == "householder" and flip:
            raise ValueError(f"{name}: flip applies to the triangular variant only")
        self.hidden = m
        self.variant = variant
        self.n_reflections = k if variant == "householder" else 0
        self.flip = bool(flip)
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn, shape=shape, context_shape=context_shape
        )
        rows, cols = torch.triu_indices(m, m)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        m, d = self.hidden, self.shape[0]
        tri = torch.Size([m * (m + 1) // 2])
        shapes: tuple[torch.Size, ...] = (tri, tri, torch.Size([m]))
        if self.variant == "householder":
            shapes = (*shapes, torch.Size([self.n_reflections, d]))
        return shapes

    # ------------------------------------------------------------------ the matrices
    def _triangular(self, packed: torch.Tensor) -> torch.Tensor:
        """The upper-triangular matrix of the packed numbers, with ``tanh`` on the diagonal."""
        m = self.hidden
        full = packed.new_zeros(*packed.shape[:-1], m, m)
        full[..., self._rows, self._cols] = packed
        diag = torch.diagonal(full, dim1=-2, dim2=-1)
        return torch.triu(full, 1) + torch.diag_embed(torch.tanh(diag))

    def _q(self, params: Params) -> torch.Tensor | None:
        """``Q`` (``param_batch + (D, M)``), or ``None`` for the triangular variant."""
        if self.variant != "householder":
            return None
        v = params[3]
        d, m = self.shape[0], self.hidden
        q = torch.eye(d, m, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], d, m)
        scaled = v * (2.0 / v.square().sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny))
        for k in reversed(range(self.n_reflections)):  # Q = H_1 ... H_K I[:, :M]
            vk, sk = v[..., k, :], scaled[..., k, :]
            q = q - sk.unsqueeze(-1) * (vk.unsqueeze(-2) @ q)
        return q

    def _down(self, x: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        """``Q^T x``."""
        if q is None:
            return x.flip(-1) if self.flip else x
        return (x.unsqueeze(-2) @ q).squeeze(-2)

    def _up(self, z: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        """``Q z``."""
        if q is None:
            return z.flip(-1) if self.flip else z
        return (q @ z.unsqueeze(-1)).squeeze(-1)

    def _parts(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self._triangular(params[0]), self._triangular(params[1]), params[2], self._q(params)

    @staticmethod
    def _matvec(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (a @ z.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def _ladj(r: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        th = torch.tanh(a)
        diag = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(s, dim1=-2, dim2=-1)
        return torch.log1p((1.0 - th * th) * diag).sum(-1)

    # ------------------------------------------------------------------ the maths
    # the forward maths is written once, in _forward_deferred: the base class derives the
    # fused and the value-only methods from it
    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        r, s, b, q = self._parts(params)
        return self._ladj(r, s, self._matvec(s, self._down(x, q)) + b)

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        r, s, b, q = self._parts(params)
        a = self._matvec(s, self._down(x, q)) + b
        return x + self._up(self._matvec(r, torch.tanh(a)), q), lambda: self._ladj(r, s, a)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        r, s, b, q = self._parts(params)
        t = self._down(y, q)
        t, r_, s_, b_ = (v.detach() for v in (t, r, s, b))
        batch = broadcast_shapes(t.shape[:-1], r_.shape[:-2], b_.shape[:-1])
        m = self.hidden
        z = t.new_zeros(*batch, m)
        th = t.new_zeros(*batch, m)  # tanh(a_j) of the rows solved so far
        for i in reversed(range(m)):  # back substitution, one scalar equation per row
            rhs = t[..., i] - (r_[..., i, i + 1 :] * th[..., i + 1 :]).sum(-1)
            c = (s_[..., i, i + 1 :] * z[..., i + 1 :]).sum(-1) + b_[..., i]
            r_ii, s_ii = r_[..., i, i], s_[..., i, i]
            z_i = solve_shifted_tanh(rhs, r_ii, s_ii, c)
            z[..., i] = z_i
            th[..., i] = torch.tanh(s_ii * z_i + c)
        # Two differentiable Newton steps on the whole system: the first gives the implicit
        # function's first derivatives, the second (from a point whose value and first
        # derivatives are right, where the Newton map's derivative vanishes) its second ones.
        t = self._down(y, q)
        eye = torch.eye(m, dtype=z.dtype, device=z.device)
        for _ in range(2):
            tanh_a = torch.tanh(self._matvec(s, z) + b)
            residual = z + self._matvec(r, tanh_a) - t
            jac = eye + r * (1.0 - tanh_a * tanh_a).unsqueeze(-2) @ s
            z = z - torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True).squeeze(-1)
        a = self._matvec(s, z) + b
        x = y - self._up(self._matvec(r, torch.tanh(a)), q)
        return x, self._ladj(r, s, a)

    def extra_repr(self) -> str:
        s = f"{super().extra_repr()}, hidden={self.hidden}, variant={self.variant!r}"
        if self.variant == "householder":
            s += f", n_reflections={self.n_reflections}"
        elif self.flip:
            s += ", flip=True"
        return s
