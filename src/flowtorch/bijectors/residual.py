"""Residual flows: :math:`y = x + g(x)` with a contractive network :math:`g`.

Invertible ResNets (Behrmann et al. 2019) and Residual Flows (Chen et al. 2019) keep the
Lipschitz constant of :math:`g` below one by spectral normalisation of its linear layers. Then

* the inverse is the fixed point of :math:`x \\mapsto y - g(x)` (Banach iteration);
* :math:`\\log|\\det(I + J_g)| = \\sum_{k \\ge 1} \\frac{(-1)^{k+1}}{k} \\operatorname{tr}(J_g^k)`,
  estimated with vector-Jacobian products, or computed exactly from the full Jacobian when the
  event is small.

The log-det is the expensive part of a forward pass, which makes these flows the place where
``BijectiveMode(requires_ladj=False)`` pays: the forward records the normalised weights and
leaves the log-det to a later ``log_abs_det_jacobian`` call (or to none).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params
from flowtorch.core.shapes import broadcast_shapes
from flowtorch.core.validation import integer_at_least, vector_event
from flowtorch.nn.spectral import SpectralNormLinear

__all__ = ["FixedPointWarning", "InvertibleResNet", "ResidualFlow"]

ESTIMATORS = ("auto", "exact", "series", "roulette")


class FixedPointWarning(UserWarning):
    r"""A fixed-point iteration of a residual flow stopped at ``max_iter`` before reaching ``tol``.

    The inverse of :math:`y = x + g(x)` iterates :math:`x_{k+1} = y - g(x_k)` from
    :math:`x_0 = y` (and the backward pass of the inverse iterates
    :math:`w_{k+1} = \bar x - J_g^\top w_k` alike, :math:`\bar x` the incoming gradient), stopping
    once every element satisfies

    .. math::
        |x_{k+1} - x_k| \le \mathrm{tol}\,(1 + |x_{k+1}|).

    When ``max_iter`` iterations pass first, the last iterate is returned and this warning is
    given; raising ``max_iter`` or ``tol``, or lowering ``coefficient`` (hence
    :math:`\mathrm{Lip}(g)`, the rate of convergence), helps.

    Reference: Behrmann et al., "Invertible Residual Networks", 2019 (the inverse by fixed-point
    iteration, which converges since :math:`\mathrm{Lip}(g) < 1`).

    Example:
        >>> import warnings, torch
        >>> from flowtorch.bijectors.residual import FixedPointWarning, ResidualFlow
        >>> _ = torch.manual_seed(0)
        >>> b = ResidualFlow(hidden_dims=(8,), max_iter=2)(shape=torch.Size([2]))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = b.inverse(torch.randn(3, 2))
        >>> [w.category is FixedPointWarning for w in caught]
        [True]
    """


def _lipswish(x: torch.Tensor) -> torch.Tensor:
    # x sigmoid(x) has Lipschitz constant 1.0998; dividing by 1.1 makes it 1-Lipschitz
    return x * torch.sigmoid(x) / 1.1


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "lipswish": _lipswish,
    "elu": F.elu,
    "tanh": torch.tanh,
}


def _default_tol(dtype: torch.dtype) -> float:
    """Relative tolerance of the fixed-point iterations: 1e-12 in float64, 6e-6 in float32."""
    return max(1e-12, 50.0 * torch.finfo(dtype).eps)


def _vjp(out: torch.Tensor, input: torch.Tensor, v: torch.Tensor, create: bool) -> torch.Tensor:
    """``v^T d out / d input`` for every batch element (``v`` broadcasts against ``out``).

    For a constant ``v`` this is the gradient of the scalar ``(out * v).sum()``, which spares
    the first call of ``torch.autograd.grad`` with ``grad_outputs`` its import of sympy (over a
    second). A ``v`` with a graph (a previous product, under ``create_graph``) must be passed as
    ``grad_outputs``: the scalar form would differentiate ``v`` too.
    """
    if v.requires_grad:
        grad_outputs = v.expand_as(out)
        return torch.autograd.grad(out, input, grad_outputs, retain_graph=True, create_graph=create)[0]
    return torch.autograd.grad((out * v).sum(), input, retain_graph=True, create_graph=create)[0]


class _ImplicitInverse(torch.autograd.Function):
    """Returns the fixed point ``x* = y - g(x*)`` (computed beforehand) with its implicit
    gradients: ``(I + J_g)^T w = dL/dx`` is solved by the same Banach iteration, then
    ``dL/dy = w`` and ``dL/dtheta = -(dg/dtheta)^T w``."""

    @staticmethod
    def forward(
        ctx: Any, flow: ResidualFlow, x_star: torch.Tensor, y: torch.Tensor, *params: torch.Tensor
    ) -> Any:
        ctx.flow = flow
        ctx.save_for_backward(x_star, *params)
        return x_star.clone()

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor) -> Any:
        if torch.is_grad_enabled():  # create_graph=True: a gradient that is to be differentiated
            raise RuntimeError(
                f"{type(ctx.flow).__name__}: second derivatives through the numerical inverse are not "
                "available (its implicit gradient is first order), but a backward pass with "
                "create_graph=True reached it. Inside flowtorch.BijectiveMode() a flow's own samples "
                "are inverted from the cache, without it (y = flow.rsample(...), then "
                "flow.log_prob(y)); or differentiate without create_graph"
            )
        flow: ResidualFlow = ctx.flow
        x_star, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        with torch.enable_grad():
            xs = x_star.detach().requires_grad_()
            ps = [p.detach().requires_grad_(bool(n)) for p, n in zip(params, needs[3:])]
            gx = flow._g(xs, ps)

            def step(w: torch.Tensor) -> torch.Tensor:
                return grad_x - _vjp(gx, xs, w, False)

            w = flow._fixed_point(step, grad_x, "the backward pass of inverse")
            wanted = [p for p in ps if p.requires_grad]
            grads = iter(
                torch.autograd.grad((gx * w).sum().neg(), wanted, allow_unused=True) if wanted else ()
            )
        return (None, None, w if needs[2] else None, *(next(grads) if p.requires_grad else None for p in ps))


class ResidualFlow(Bijector):
    r"""A residual block :math:`y = x + g(x)` with :math:`\mathrm{Lip}(g) < 1`, on a vector event.

    :math:`g` is an MLP ``D -> hidden_dims -> D`` whose linear layers are spectrally normalised
    to norm at most :math:`c` = ``coefficient`` (:class:`SpectralNormLinear`) with 1-Lipschitz
    activations, so :math:`\mathrm{Lip}(g) \le c^{L}` for :math:`L` layers. A context, if any,
    enters the first layer through an unconstrained linear map (it is not an input of the
    bijection, so it needs no constraint).

    **Inverse**: the Banach iteration :math:`x_{k+1} = y - g(x_k)` from :math:`x_0 = y`, batched,
    until every element moves less than ``tol * (1 + |x|)`` (default: 1e-12 in float64, 6e-6 in
    float32; the error is then at most :math:`\mathrm{Lip}(g)/(1 - \mathrm{Lip}(g))` times
    that), or ``max_iter`` steps, after which a :class:`FixedPointWarning` says so. Gradients
    through the inverse are the implicit ones (a second fixed-point solve in the backward pass).

    **log|det J|** (``estimator``):

    * ``"exact"``: :math:`\log|\det(I + J_g)|` from the full Jacobian (``D`` batched
      vector-Jacobian products and a ``slogdet``), deterministic; for small ``D``;
    * ``"series"``: the power series truncated after ``n_terms`` terms, each trace by
      Hutchinson's estimator with ``n_samples`` Rademacher vectors (Behrmann et al.):
      :math:`\sum_{k=1}^{n} \frac{(-1)^{k+1}}{k} v^\top J_g^k v`; biased by the truncation,
      which is at most :math:`D \sum_{k>n} \mathrm{Lip}(g)^k / k`;
    * ``"roulette"``: the unbiased Russian-roulette estimator (Chen et al.): the first
      ``n_exact_terms`` terms always, then term :math:`k` with probability
      :math:`(1-p)^{k - n_{exact}}` (``p = p_stop``), reweighted by its inverse; one draw of the
      number of terms per call (at most ``max_terms``);
    * ``"auto"`` (default): ``"exact"`` for ``D <= 4``, else ``"roulette"``.

    The stochastic estimators draw from torch's global generator; under ``torch.no_grad`` they
    build no graph. Gradients of the log-det come from differentiating the estimate
    (``create_graph``), which is unbiased for ``"roulette"``.

    Inside ``BijectiveMode(requires_ladj=False)`` a forward pass runs :math:`g` once and records
    the normalised weights; ``log_abs_det_jacobian`` on the recorded pair computes the log-det
    from them later, without normalising the weights again.

    References: Behrmann et al., "Invertible Residual Networks", 2019; Chen et al., "Residual
    Flows for Invertible Generative Modeling", 2019.

    Args:
        hidden_dims: hidden layer sizes of :math:`g` (at least one).
        activation: ``"lipswish"`` (:math:`x\,\sigma(x)/1.1`, Chen et al.), ``"elu"`` (Behrmann et
            al.) or ``"tanh"``.
        coefficient: :math:`c \in (0, 1)`, the bound on each layer's spectral norm.
        estimator: ``"auto"``, ``"exact"``, ``"series"`` or ``"roulette"``.
        n_terms: terms of the truncated series.
        n_samples: Hutchinson vectors per call (``"series"`` and ``"roulette"``).
        n_exact_terms: terms the roulette estimator always includes.
        p_stop: the roulette's geometric stopping probability.
        max_terms: cap on the roulette's number of terms.
        tol: relative tolerance of the fixed-point inverse (default by dtype, see above).
        max_iter: iteration cap of the fixed-point inverse.
        spectral: ``"power"`` (power iteration, see :class:`SpectralNormLinear`) or ``"exact"``
            (singular values: a guaranteed bound, slower for large layers).
        power_tol: relative tolerance of the power iterations (default ``100 eps``).

    Shapes: ``x`` is ``sample + batch + (D,)``; a context ``context_batch + context_shape``
    broadcasts against ``sample + batch``.

    Example:
        >>> import torch, flowtorch
        >>> from flowtorch.bijectors.residual import ResidualFlow
        >>> b = ResidualFlow(hidden_dims=(16,))(shape=torch.Size([2]))
        >>> x = torch.randn(5, 2)
        >>> y, ladj = b.forward_and_ladj(x)
        >>> torch.allclose(b.inverse(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([5]))
        >>> with flowtorch.BijectiveMode():
        ...     b.inverse(b.forward(x)) is x
        True
    """

    costs = Costs(
        "numerical (fixed-point iteration)",
        "1 pass of g",
        "a pass of g per iteration",
        "exact: D VJPs + slogdet; series/roulette: stochastic, a VJP per term",
        reference="Chen et al. 2019 (residual flows); Behrmann et al. 2019",
    )

    domain = constraints.real_vector
    codomain = constraints.real_vector
    _act: Callable[[torch.Tensor], torch.Tensor]

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        activation: str = "lipswish",
        coefficient: float = 0.9,
        estimator: str = "auto",
        n_terms: int = 8,
        n_samples: int = 1,
        n_exact_terms: int = 2,
        p_stop: float = 0.5,
        max_terms: int = 64,
        tol: float | None = None,
        max_iter: int = 500,
        spectral: str = "power",
        power_tol: float | None = None,
    ) -> None:
        name = type(self).__name__
        if params_fn is not None:
            raise TypeError(
                f"{name} keeps its network on itself and takes no conditioner (params_fn), got "
                f"{params_fn!r}; a context_shape makes it conditional"
            )
        shape = vector_event(name, shape)
        hidden = tuple(int(h) for h in hidden_dims)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(
                f"{name}: hidden_dims must be one or more positive sizes, got {tuple(hidden_dims)}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 < coefficient < 1.0:
            raise ValueError(
                f"{name}: coefficient must be in (0, 1) for an invertible block, got {coefficient}"
            )
        if spectral not in ("power", "exact"):
            raise ValueError(f"{name}: spectral must be 'power' or 'exact', got {spectral!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"{name}: estimator must be one of {ESTIMATORS}, got {estimator!r}")
        for arg, value, low in (
            ("n_terms", n_terms, 1),
            ("n_samples", n_samples, 1),
            ("n_exact_terms", n_exact_terms, 0),
            ("max_iter", max_iter, 1),
        ):
            integer_at_least(value, f"{name}: {arg}", low)
        if not 0.0 < p_stop < 1.0:
            raise ValueError(f"{name}: p_stop must be in (0, 1), got {p_stop}")
        if isinstance(max_terms, bool) or not isinstance(max_terms, int) or max_terms < max(n_exact_terms, 1):
            raise ValueError(
                f"{name}: max_terms must be an integer >= max(n_exact_terms, 1), got {max_terms!r}"
            )
        if tol is not None and not tol > 0:
            raise ValueError(f"{name}: tol must be positive, got {tol}")
        self.hidden_dims = hidden
        self.activation = activation
        self.coefficient = float(coefficient)
        d = shape[0]
        self.estimator = ("exact" if d <= 4 else "roulette") if estimator == "auto" else estimator
        self.n_terms, self.n_samples = n_terms, n_samples
        self.n_exact_terms, self.p_stop, self.max_terms = n_exact_terms, float(p_stop), max_terms
        self.tol, self.max_iter = tol, max_iter
        self.spectral = spectral
        super().__init__(None, shape=shape)
        dims = (d, *hidden, d)
        self.layers = nn.ModuleList(
            SpectralNormLinear(i, o, coefficient, power_tol=power_tol, exact=spectral == "exact")
            for i, o in zip(dims[:-1], dims[1:])
        )
        self.context_shape = None if context_shape is None else torch.Size(context_shape)
        self.context_layer = (
            nn.Linear(self.context_shape.numel(), hidden[0], bias=False)
            if self.context_shape is not None
            else None
        )
        self._act = ACTIVATIONS[activation]

    # ------------------------------------------------------------------ the network
    def _params(self, input: torch.Tensor | None, context: torch.Tensor | None) -> Params:
        """The normalised weights, then the biases (the first with the context's term)."""
        weights = [layer.normalized_weight() for layer in self._linears()]
        biases = [layer.bias for layer in self._linears()]
        if self.context_layer is not None and context is not None:
            assert self.context_shape is not None
            batch = context.shape[: context.dim() - len(self.context_shape)]
            biases[0] = biases[0] + self.context_layer(context.reshape(*batch, -1))
        return (*weights, *biases)

    def _linears(self) -> list[SpectralNormLinear]:
        return [cast(SpectralNormLinear, layer) for layer in self.layers]

    def _g(self, x: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        n = len(self.layers)
        h = x
        for i in range(n):
            h = F.linear(h, params[i]) + params[n + i]
            if i < n - 1:
                h = self._act(h)
        return h

    def _batch(self, x: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Size:
        """The broadcast batch shape of ``x`` and the context's term."""
        return broadcast_shapes(x.shape[:-1], params[len(self.layers)].shape[:-1])

    # ------------------------------------------------------------------ log|det J|
    def _g_and_logdet(
        self, x: torch.Tensor, params: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``g(x)`` and ``log|det(I + J_g(x))|``, differentiable when gradients are on."""
        create = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
        if not create:
            params = [p.detach() for p in params]
            x = x.detach()
        inference = torch.is_inference_mode_enabled()
        off = torch.inference_mode(False) if inference else contextlib.nullcontext()
        with off, torch.enable_grad():
            if inference:  # inference tensors cannot enter an autograd graph
                x, params = x.clone(), [p.clone() for p in params]
            xe = x.expand(*self._batch(x, params), x.shape[-1])
            if not xe.requires_grad:
                xe = xe.detach().requires_grad_()
            gx = self._g(xe, params)
            logdet = self._logdet(gx, xe, create)
        if not create:
            gx, logdet = gx.detach(), logdet.detach()
        return gx, logdet

    def _logdet(self, gx: torch.Tensor, xe: torch.Tensor, create: bool) -> torch.Tensor:
        if self.estimator == "exact":
            return self._exact_logdet(gx, xe, create)
        if self.estimator == "series":
            weights = [(-1.0) ** (k + 1) / k for k in range(1, self.n_terms + 1)]
        else:
            n = self.n_exact_terms + int(torch.empty(()).geometric_(self.p_stop).item()) - 1
            n = min(n, self.max_terms)
            weights = [
                (-1.0) ** (k + 1) / k / (1.0 - self.p_stop) ** max(0, k - self.n_exact_terms)
                for k in range(1, n + 1)
            ]
        return self._series_logdet(gx, xe, weights, create)

    @staticmethod
    def _exact_logdet(gx: torch.Tensor, xe: torch.Tensor, create: bool) -> torch.Tensor:
        d = gx.shape[-1]
        eye = torch.eye(d, dtype=gx.dtype, device=gx.device)
        # row i of J_g is e_i^T J_g: one backward pass each
        rows = [_vjp(gx, xe, eye[i], create) for i in range(d)]
        logabsdet: torch.Tensor = torch.linalg.slogdet(eye + torch.stack(rows, dim=-2))[1]
        return logabsdet

    def _series_logdet(
        self, gx: torch.Tensor, xe: torch.Tensor, weights: Sequence[float], create: bool
    ) -> torch.Tensor:
        """``sum_k weights[k-1] * v^T J_g^k v``, averaged over ``n_samples`` Rademacher ``v``."""
        total = gx.new_zeros(gx.shape[:-1])
        for _ in range(self.n_samples):
            v = torch.randint(0, 2, gx.shape, dtype=gx.dtype, device=gx.device) * 2.0 - 1.0
            w = v
            for c in weights:
                w = _vjp(gx, xe, w, create)
                total = total + c * (w * v).sum(-1)
        return total / self.n_samples

    # ------------------------------------------------------------------ the inverse
    def _fixed_point(
        self, step: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, what: str
    ) -> torch.Tensor:
        """Iterates ``x <- step(x)`` from ``start`` until every element moves less than
        ``tol * (1 + |x|)``; warns after ``max_iter`` steps."""
        tol = self.tol if self.tol is not None else _default_tol(start.dtype)
        x = start
        change = math.inf
        for _ in range(self.max_iter):
            new = step(x)
            moved = (new - x).abs()
            x = new
            if bool((moved <= tol * (1.0 + x.abs())).all()):
                return x
            change = float(moved.max())
        warnings.warn(
            f"{type(self).__name__}: {what} did not converge to tol={tol:g} in max_iter={self.max_iter} "
            f"iterations (largest change in the last one: {change:.3g}); raise max_iter or tol, or lower "
            f"coefficient={self.coefficient}. Inside flowtorch.BijectiveMode() a flow's own samples are "
            "inverted from the cache, and Flow.rsample_and_log_prob needs no inverse",
            FixedPointWarning,
            stacklevel=4,
        )
        return x

    def _solve(self, y: torch.Tensor, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x*, y expanded to the batch)``: the fixed point, without gradients."""
        ye = y.expand(*self._batch(y, params), y.shape[-1])
        with torch.no_grad():
            fixed = [p.detach() for p in params]
            yd = ye.detach()
            x = self._fixed_point(lambda x: yd - self._g(x, fixed), yd, "inverse")
        return x, ye

    def _differentiable(self, y: torch.Tensor, params: Sequence[torch.Tensor]) -> bool:
        return torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in params))

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        x, ye = self._solve(y, params)
        if self._differentiable(y, params):
            x = _ImplicitInverse.apply(self, x, ye, *params)
        return x

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x_star, ye = self._solve(y, params)
        if self._differentiable(y, params):
            x = _ImplicitInverse.apply(self, x_star, ye, *params)
            # a second node for the log-det, so that its graph does not hold the returned x
            x_in = _ImplicitInverse.apply(self, x_star, ye, *params)
        else:
            x, x_in = x_star, x_star.detach()
        return x, self._g_and_logdet(x_in, params)[1]

    # ------------------------------------------------------------------ forward
    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x + self._g(x, params)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        gx, logdet = self._g_and_logdet(x, params)
        return x + gx, logdet

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._g_and_logdet(x, params)[1]

    def lipschitz_bound(self) -> float:
        """An upper bound on :math:`\\mathrm{Lip}(g)`: the product of the layers' spectral norms."""
        with torch.no_grad():
            bound = 1.0
            for layer in self._linears():
                bound *= float(torch.linalg.matrix_norm(layer.normalized_weight(), 2))
            return bound

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_dims={self.hidden_dims}, activation={self.activation!r}, "
            f"coefficient={self.coefficient}, estimator={self.estimator!r}"
        )


class InvertibleResNet(ResidualFlow):
    r"""The invertible residual block of Behrmann et al.: a :class:`ResidualFlow` whose defaults are
    theirs, ELU activations and the truncated power series of the log-det,

    .. math::
        \log|\det(I + J_g)| \approx \sum_{k=1}^{n} \frac{(-1)^{k+1}}{k}\, v^\top J_g^k v,
        \qquad v \sim \mathrm{Rademacher},

    a biased estimator (the bias shrinks as :math:`\mathrm{Lip}(g)^{n}`); ``ResidualFlow``'s
    defaults are Chen et al.'s (LipSwish, an exact or unbiased log-det). Every argument of
    :class:`ResidualFlow` is accepted.

    Reference: Behrmann et al., "Invertible Residual Networks", ICML 2019.

    Args:
        params_fn: as for :class:`ResidualFlow` (``None``, or a plan for the context embedding).
        activation: ``"elu"`` by default.
        estimator: ``"series"`` by default.
        **kwargs: any other argument of :class:`ResidualFlow`.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.residual import InvertibleResNet
        >>> b = InvertibleResNet(hidden_dims=(8,))(shape=torch.Size([3]))
        >>> b.activation, b.estimator
        ('elu', 'series')
    """

    costs = Costs(
        "numerical (fixed-point iteration)",
        "1 pass of g",
        "a pass of g per iteration",
        "series (default): stochastic and biased, a VJP per term",
        reference="Behrmann et al. 2019 (i-ResNet)",
    )

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        activation: str = "elu",
        estimator: str = "series",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params_fn,
            shape=shape,
            context_shape=context_shape,
            activation=activation,
            estimator=estimator,
            **kwargs,
        )
