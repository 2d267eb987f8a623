"""Coupling layers: half of the event, unchanged, parametrises a transform of the other half."""

from __future__ import annotations

import inspect
from typing import Any, cast

import torch

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Later, Params
from flowtorch.core.lazy import Plan
from flowtorch.core.shapes import as_slice, take_last
from flowtorch.core.validation import nonscalar_event
from flowtorch.parameters.coupling import DenseCoupling
from flowtorch.transformers import AffineTransformer, SplineTransformer, Transformer

__all__ = ["AffineCoupling", "SplineCoupling", "coupling_mask"]

_MASKS = ("alternate", "half")


def coupling_mask(
    shape: torch.Size | tuple[int, ...], mask: str | torch.Tensor = "alternate", flip: bool = False
) -> torch.Tensor:
    r"""The boolean coupling mask of an event of ``shape``: true marks the identity part.

    For a last event dim of size :math:`n`, position :math:`i \in \{0, \dots, n-1\}` is in the
    identity part when

    .. math::
        m_i = [\, i \bmod 2 = 0 \,] \quad (\text{alternate}), \qquad
        m_i = [\, i < \lceil n / 2 \rceil \,] \quad (\text{half}),

    broadcast over the other event dims; ``flip`` takes :math:`\neg m`. Both parts must be
    non-empty.

    References: Dinh et al., "NICE: Non-linear Independent Components Estimation", 2015 (the
    partition into odd and even positions); Dinh et al., "Density estimation using Real NVP",
    2017 (masks and alternating them between layers).

    Args:
        shape: the event shape (at least one dim).
        mask: ``"alternate"`` (even positions of the last dim are the identity part),
            ``"half"`` (its first ``ceil(n / 2)`` positions), or a boolean tensor that broadcasts
            to ``shape``.
        flip: swap the two parts.

    Example:
        >>> coupling_mask((5,), "half", flip=True)
        tensor([False, False, False,  True,  True])
    """
    shape = nonscalar_event("a coupling layer", shape)
    n = shape[-1]
    if isinstance(mask, str):
        if mask == "alternate":
            m = torch.arange(n) % 2 == 0
        elif mask == "half":
            m = torch.arange(n) < n - n // 2
        else:
            raise ValueError(f"unknown coupling mask {mask!r}; use one of {_MASKS} or a boolean tensor")
    else:
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise ValueError(f"a coupling mask must be a boolean tensor, got dtype {m.dtype}")
        if m.dim() > len(shape):
            raise ValueError(
                f"coupling mask of shape {tuple(m.shape)} has more dims than the event shape {tuple(shape)}"
            )
        try:
            m = torch.broadcast_to(m, shape)
        except RuntimeError:
            raise ValueError(
                f"coupling mask of shape {tuple(m.shape)} does not broadcast to the event shape "
                f"{tuple(shape)}"
            ) from None
    m = torch.broadcast_to(m, shape).clone()
    if flip:
        m = ~m
    if bool(m.all()) or not bool(m.any()):
        raise ValueError(
            f"coupling mask {m.int().tolist()} must have both an identity part (true) and a "
            "transformed part (false); an event of a single element cannot be coupled"
        )
    return m


def _takes_mask(cls: type) -> bool:
    init: Any = cast(Any, cls).__init__
    return "mask" in inspect.signature(init).parameters


class _Coupling(Bijector):
    r"""Shared machinery of coupling layers (Dinh et al.): with a boolean ``mask`` splitting
    :math:`x` into the identity part :math:`x_a` and the transformed part :math:`x_b`,

    .. math::
        y_a = x_a, \qquad y_b = g(x_b;\, \theta(x_a, c)),

    so :math:`\log|\det J| = \sum_i \log|g'(x_{b,i})|` and, as :math:`y_a = x_a`, the conditioner
    reads either side: forward and inverse are each one parallel pass. Subclasses set
    ``self.transformer`` (:mod:`flowtorch.transformers`), the elementwise map :math:`g`, before
    calling ``super().__init__``.
    """

    transformer: Transformer
    mask: torch.Tensor
    _identity: torch.Tensor
    _transformed_index: torch.Tensor
    _position: torch.Tensor

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        mask: str | torch.Tensor = "alternate",
        flip: bool = False,
    ) -> None:
        m = coupling_mask(shape, mask, flip)
        flat = m.flatten()
        self.n_transformed = int((~flat).sum())
        self.flip = bool(flip)
        super().__init__(self._with_mask(params_fn, m), shape=shape, context_shape=context_shape)
        # Each buffer its own tensor: ``m`` was handed to the conditioner, and ``flatten`` of a
        # 1-D mask is ``m`` itself; a tensor registered twice is parameter sharing to
        # ``torch.jit.trace``, which refuses it.
        self.register_buffer("mask", m.clone(), persistent=False)
        self.register_buffer("_identity", flat.clone(), persistent=False)
        self.register_buffer("_transformed_index", (~flat).nonzero().squeeze(-1), persistent=False)
        # for each event element, its index among the transformed ones (0 for identity elements)
        self.register_buffer("_position", ((~flat).cumsum(0) - 1).clamp(min=0), persistent=False)
        # Regular masks ("alternate", "half") transform a strided slice: written back without a gather.
        self._transformed_slice = as_slice(self._transformed_index.tolist())

    @staticmethod
    def _with_mask(params_fn: Conditioner | None, mask: torch.Tensor) -> Conditioner:
        """The conditioner plan, given ``mask=`` if its class takes one."""
        if params_fn is None:
            return Plan(DenseCoupling, mask=mask)
        if isinstance(params_fn, type):
            params_fn = Plan(params_fn)
        if isinstance(params_fn, Plan) and _takes_mask(params_fn.cls):
            return Plan(params_fn.cls, *params_fn.args, **{**params_fn.kwargs, "mask": mask})
        return params_fn

    def _raw_event_dim(self) -> int:
        return len(self.shape)  # _transform sums over the transformed elements

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return self.transformer.param_shapes(torch.Size([self.n_transformed]))

    def _transform(
        self, value: torch.Tensor, params: Params, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps the transformed part ``value`` (``batch + (n_b,)``) forward or back with the
        transformer; returns it with the *forward* log|det J| summed over the part (``batch``),
        computed from ``value`` and ``params`` only."""
        out, ladj = (
            self.transformer.inverse(value, params) if inverse else self.transformer.forward(value, params)
        )
        return out, ladj.sum(-1) if ladj.dim() else ladj

    # (a vector event needs no reshape: at small batches each op call counts)
    def _split(self, value: torch.Tensor) -> torch.Tensor:
        n = len(self.shape)
        flat = value if n == 1 else value.reshape(*value.shape[: value.dim() - n], -1)
        return take_last(flat, self._transformed_slice, self._transformed_index)

    def _merge(self, value: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        n = len(self.shape)
        flat = value if n == 1 else value.reshape(*value.shape[: value.dim() - n], -1)
        index = self._transformed_slice
        if index is not None and part.shape[:-1] == flat.shape[:-1]:
            out = torch.slice_scatter(flat, part, -1, index.start, index.stop, index.step)
        else:
            out = torch.where(self._identity, flat, part[..., self._position])
        return out if n == 1 else out.reshape(*out.shape[:-1], *self.shape)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        ladj = self.transformer.log_derivative(self._split(x), params, self._split(y))
        return ladj.sum(-1) if ladj.dim() else ladj

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        part, ladj = self._transform(self._split(x), params, False)
        return self._merge(x, part), ladj

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        part, ladj = self._transform(self._split(y), params, True)
        return self._merge(y, part), ladj

    def _deferred(self, value: torch.Tensor, params: Params, inverse: bool) -> tuple[torch.Tensor, Later]:
        t = self.transformer
        part = self._split(value)
        out, later = t.inverse_deferred(part, params) if inverse else t.forward_deferred(part, params)

        def summed() -> torch.Tensor:
            # a transformer without a later (a numerical one) gives it from its output part
            ladj = t.log_derivative(part, params, out) if later is None else later()
            return ladj.sum(-1) if ladj.dim() else ladj

        return self._merge(value, out), summed

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        return self._deferred(x, params, False)

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        return self._deferred(y, params, True)

    def extra_repr(self) -> str:
        n = self.mask.numel()
        mask = self.mask.int().tolist() if n <= 16 else f"<{n - self.n_transformed} identity of {n}>"
        return f"{super().extra_repr()}, mask={mask}"


class AffineCoupling(_Coupling):
    r"""Affine coupling layer (RealNVP); with ``additive=True``, the additive coupling of NICE.

    With the identity part :math:`x_a` (``mask`` true) and the transformed part :math:`x_b`,

    .. math::
        y_a = x_a, \qquad y_b = x_b \odot e^{s} + t, \qquad
        s = \mathrm{softclamp}(\tilde s), \qquad \log|\det J| = \textstyle\sum_i s_i,

    where :math:`(t, \tilde s) = \theta(x_a, c)` come from the conditioner and the soft clamp
    into ``(log_scale_min_clip, log_scale_max_clip)`` (:func:`flowtorch.ops.soft_clamp`, the
    :class:`~flowtorch.transformers.AffineTransformer` that every affine layer applies) keeps
    training stable without cutting gradients. The
    inverse, :math:`x_b = (y_b - t)\,e^{-s}`, is one parallel pass. ``additive=True`` drops
    :math:`s` (:math:`y_b = x_b + t`): volume preserving, :math:`\log|\det J| = 0` exactly.

    References: Dinh et al., "NICE: Non-linear Independent Components Estimation", 2015;
    Dinh et al., "Density estimation using Real NVP", 2017.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.DenseCoupling()``. A plan
            whose class takes ``mask`` is given this layer's mask when built.
        mask: ``"alternate"`` (default: even positions of the last event dim are the identity
            part), ``"half"`` (its first ``ceil(n / 2)`` positions), or a boolean tensor that
            broadcasts to the event shape, true marking the identity part.
        flip: swap the identity and transformed parts (stack layers with alternating ``flip``).
        additive: NICE's additive coupling.
        log_scale_min_clip: the lower bound of the soft-clamped log-scale :math:`s`, negative.
        log_scale_max_clip: the upper bound, positive.

    Shapes: as every bijector; the event has at least two elements, both parts non-empty.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.AffineCoupling(mask="half")(shape=torch.Size([4]))
        >>> x = torch.randn(3, 4)
        >>> y = b.forward(x)
        >>> torch.equal(y[:, :2], x[:, :2]), torch.allclose(b.inverse(y), x, atol=1e-6)
        (True, True)
    """

    costs = Costs(
        "analytic",
        "1 parallel pass of the conditioner",
        "1 parallel pass of the conditioner",
        "O(D), with the pass",
        reference="Dinh et al. 2015 (NICE); Dinh et al. 2017 (RealNVP)",
    )

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        mask: str | torch.Tensor = "alternate",
        flip: bool = False,
        additive: bool = False,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 5.0,
    ) -> None:
        self.transformer = AffineTransformer(
            log_scale_min_clip, log_scale_max_clip, additive, "AffineCoupling"
        )
        super().__init__(params_fn, shape=shape, context_shape=context_shape, mask=mask, flip=flip)

    @property
    def additive(self) -> bool:
        """NICE's additive coupling (no scale)."""
        return cast(AffineTransformer, self.transformer).additive

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, additive={self.additive}"


class SplineCoupling(_Coupling):
    r"""Rational-quadratic spline coupling layer (neural spline flow, coupling variant).

    .. math::
        y_a = x_a, \qquad y_{b,i} = g_{\theta_i}(x_{b,i}), \qquad
        \log|\det J| = \textstyle\sum_i \log g'_{\theta_i}(x_{b,i}),

    where :math:`g_\theta` is the monotonic rational-quadratic spline of
    :func:`flowtorch.ops.rational_quadratic_spline` with ``count_bins`` bins on
    :math:`[-B, B]` (``bound``) and identity (linear) tails outside, and
    :math:`\theta_i = \theta(x_a, c)_i` are the conditioner's unnormalised widths (``K``),
    heights (``K``) and interior derivatives (``K - 1``) of element :math:`i`. The derivatives
    are offset so that all-zero parameters give the identity map:
    :math:`\delta = \delta_{\min} + \mathrm{softplus}(u + u^\star)` with
    :math:`u^\star` from :func:`flowtorch.ops.identity_derivative`. Both directions are one
    parallel pass; the inverse solves the spline's quadratic in its stable form.

    Reference: Durkan et al., "Neural Spline Flows", 2019.

    Args:
        params_fn: conditioner plan; default ``flowtorch.parameters.DenseCoupling()``.
        mask: as for :class:`AffineCoupling`.
        flip: swap the identity and transformed parts.
        count_bins: number of bins :math:`K` (at least 2).
        bound: half-width :math:`B` of the interval the spline covers.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.SplineCoupling(count_bins=4)(shape=torch.Size([3]), context_shape=torch.Size([2]))
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> torch.allclose(b.inverse(b.forward(x, c), c), x, atol=1e-5)
        True
    """

    costs = Costs(
        "analytic",
        "1 parallel pass of the conditioner, O(D log K)",
        "1 parallel pass of the conditioner, O(D log K)",
        "O(D), with the pass",
        reference="Durkan et al. 2019",
    )

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        mask: str | torch.Tensor = "alternate",
        flip: bool = False,
        count_bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        if int(count_bins) != count_bins or int(count_bins) < 2:
            raise ValueError(
                f"SplineCoupling: count_bins must be an integer of at least 2 (one bin with identity "
                f"tails is the identity map), got {count_bins}"
            )
        if not bound > 0:
            raise ValueError(f"SplineCoupling: bound must be positive, got {bound}")
        self.transformer = SplineTransformer(count_bins, bound)
        super().__init__(params_fn, shape=shape, context_shape=context_shape, mask=mask, flip=flip)

    @property
    def count_bins(self) -> int:
        """:math:`K`, the number of bins."""
        return cast(SplineTransformer, self.transformer).count_bins

    @property
    def bound(self) -> float:
        """The half-width of the interval the spline covers."""
        return cast(SplineTransformer, self.transformer).bound

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, count_bins={self.count_bins}, bound={self.bound}"
