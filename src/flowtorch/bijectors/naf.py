r"""Neural autoregressive flows: the deep sigmoidal flow (NAF) and block neural autoregressive flow.

Both are monotone neural networks evaluated in closed form in the *density* direction (data
:math:`y` to base :math:`x`, as in the papers): ``inverse`` and ``log_prob`` cost one parallel
pass, ``forward`` (sampling) inverts numerically with the safeguarded Newton solver of
:mod:`flowtorch.ops.numerical` and carries implicit-function gradients. ``Invert(...)`` swaps the
costs. Round trips are tested to ``1e-9`` in float64 and ``1e-4`` in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowtorch.bijectors.monotonic import MonotoneBijector
from flowtorch.core.bijector import Bijector, Conditioner, Costs, Later, Params
from flowtorch.core.compat import is_compiling
from flowtorch.core.lazy import Plan
from flowtorch.core.validation import integer_at_least, nonscalar_event
from flowtorch.ops.numerical import bisect_monotone, newton_monotone, refuse_second_order
from flowtorch.parameters import DenseAutoregressive, Tensor
from flowtorch.transformers import SOLVERS, DeepSigmoidTransformer

__all__ = ["BlockNeuralAutoregressive", "NeuralAutoregressive"]

_LOG2 = math.log(2.0)


class NeuralAutoregressive(MonotoneBijector):
    r"""Neural autoregressive flow with a deep sigmoidal (DSF) transformer.

    For each dim, pseudo-parameters :math:`(\tilde a, b, \tilde w) \in \mathbb{R}^{3K}` of
    :math:`y_{<i}` (and the context) come from a MADE conditioner, and

    .. math::

        x = T(y) = \sigma^{-1}\Big(\sum_k w_k \sigma(a_k y + b_k)\Big),

    with :math:`a_k > 0` and :math:`w = \operatorname{softmax}(\tilde w)`: the map, its stable
    log-derivative and the floor on the slopes that keeps it invertible at extreme inputs are those
    of :class:`~flowtorch.transformers.DeepSigmoidTransformer`, which this bijector applies.
    :math:`T` is strictly increasing and onto :math:`\mathbb{R}`; with zero pseudo-parameters it
    is the identity.

    Direction: the conditioner reads the data side (MAF direction,
    ``conditioned_on_output = True``), so ``inverse`` / ``log_prob`` is one parallel pass in
    closed form, which is what maximum-likelihood training needs, and ``forward`` (sampling)
    takes :math:`D` conditioner passes, each with a numerical elementwise inverse of :math:`T`.
    ``Invert(NeuralAutoregressive())`` is the IAF-direction flow of the paper's variational
    experiments (closed-form sampling, numerical density).

    Reference: Huang, Krueger, Lacoste, Courville, "Neural Autoregressive Flows", ICML 2018.

    Args:
        params_fn: autoregressive conditioner plan; default
            ``flowtorch.parameters.DenseAutoregressive()``.
        hidden_units: :math:`K`, the number of sigmoids per dim.
        solver: ``"newton"`` or ``"bisection"`` for ``forward``.
        tol: tolerance of the numerical inverse (default: 16 machine epsilons).
        max_iter: iterations of the numerical inverse.

    Example:
        >>> import torch
        >>> import flowtorch.parameters as params
        >>> from flowtorch.bijectors.naf import NeuralAutoregressive
        >>> b = NeuralAutoregressive(params.DenseAutoregressive(hidden_dims=(16,)))(shape=torch.Size([3]))
        >>> y = torch.randn(4, 3)
        >>> x, ladj = b.inverse_and_ladj(y)  # density direction: closed form
        >>> torch.allclose(b.forward(x), y, atol=1e-4)  # sampling direction: numerical
        True
    """

    costs = Costs(
        "numerical, sequential",
        "D sequential passes, each an elementwise root solve",
        "1 parallel pass of the conditioner, O(D·K)",
        "O(D·K), closed form",
        reference="Huang et al. 2018",
    )

    conditioned_on_output = True
    transformer: DeepSigmoidTransformer

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        hidden_units: int = 16,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        nonscalar_event("NeuralAutoregressive", shape)
        self.transformer = DeepSigmoidTransformer(hidden_units, solver, tol, max_iter, "NeuralAutoregressive")
        super().__init__(
            Plan(DenseAutoregressive) if params_fn is None else params_fn,
            shape=shape,
            context_shape=context_shape,
        )

    @property
    def hidden_units(self) -> int:
        """:math:`K`, the number of sigmoids per dim."""
        return self.transformer.hidden_units


class BlockNeuralAutoregressive(Bijector):
    r"""Block neural autoregressive flow (BNAF): one monotone, block-triangular network.

    On the flattened event :math:`y \in \mathbb{R}^D`, layer :math:`l` maps
    :math:`\mathbb{R}^{D a_{l-1}} \to \mathbb{R}^{D a_l}` (:math:`a_0 = a_L = 1`,
    :math:`a_l` = ``hidden_units``) with a weight of :math:`D \times D` blocks
    :math:`B_{ij} \in \mathbb{R}^{a_l \times a_{l-1}}`: zero above the diagonal, free below it,
    :math:`\exp(V_{ii})` on it, then weight-normalised row by row,
    :math:`W = e^{g} \odot \tilde W / \lVert \tilde W_{r,:} \rVert` (De Cao et al., eq. 9-10).
    Hidden layers apply :math:`\phi(v) = \tanh v + \alpha v` (``slope`` :math:`\alpha`), so the map
    :math:`x = T(y)` is triangular with :math:`\partial x_i / \partial y_i > 0`, and, for
    :math:`\alpha > 0`, onto :math:`\mathbb{R}^D` (with :math:`\alpha = 0`, De Cao's ``tanh``, it
    is a bijection onto its image only, and ``forward`` fails on points outside it). The log-det is
    accumulated through the layers from the diagonal blocks alone, in log space:

    .. math::

        \log J^{(l)}_i = \operatorname{LSE}\big(\log W^{(l)}_{ii} + \log J^{(l-1)}_i\big)
                         + \log \phi'\big(v^{(l)}_i\big), \qquad
        \log \frac{\partial x_i}{\partial y_i} = \log J^{(L)}_i,

    (a matrix-vector product in log space; :math:`\log\phi' =
    \operatorname{logaddexp}(\log\operatorname{sech}^2 v, \log\alpha)`). The biases come from the
    conditioner (free parameters by default, an affine function of the context when one is
    given).

    Direction: :math:`T` is the density direction (``inverse``, ``log_prob``: one pass).
    ``forward`` (sampling) solves :math:`T(y) = x` dim by dim in the autoregressive order, each dim a
    batched safeguarded Newton solve, then one pass of forward substitution carries the
    implicit-function gradient.

    Reference: De Cao, Aziz, Titov, "Block Neural Autoregressive Flow", UAI 2019.

    Args:
        params_fn: conditioner plan for the biases; default ``flowtorch.parameters.Tensor()``.
        hidden_units: :math:`a_l`, hidden units per dim in every hidden layer.
        hidden_layers: number of hidden layers (the network has ``hidden_layers + 1`` linear maps).
        slope: :math:`\alpha \ge 0`, the linear part of the activation.
        solver: ``"newton"`` or ``"bisection"`` for ``forward``.
        tol: tolerance of the numerical inverse (default: 16 machine epsilons).
        max_iter: iterations of the numerical inverse per dim.

    Example:
        >>> import torch
        >>> from flowtorch.bijectors.naf import BlockNeuralAutoregressive
        >>> b = BlockNeuralAutoregressive(hidden_units=4)(shape=torch.Size([3]))
        >>> y = torch.randn(5, 3)
        >>> x, ladj = b.inverse_and_ladj(y)
        >>> torch.allclose(b.forward(x), y, atol=1e-4)
        True
    """

    costs = Costs(
        "numerical, sequential",
        "D sequential Newton solves",
        "1 pass of the block network",
        "O(D·a²) per layer, from the diagonal blocks",
        reference="De Cao et al. 2019",
    )

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        hidden_units: int = 8,
        hidden_layers: int = 1,
        slope: float = 0.1,
        solver: str = "newton",
        tol: float | None = None,
        max_iter: int = 100,
    ) -> None:
        name = "BlockNeuralAutoregressive"
        nonscalar_event(name, shape)
        self.hidden_units = integer_at_least(hidden_units, f"{name}: hidden_units")
        self.hidden_layers = integer_at_least(hidden_layers, f"{name}: hidden_layers", 0)
        if not slope >= 0:
            raise ValueError(f"{name}: slope must be non-negative, got {slope}")
        if solver not in SOLVERS:
            raise ValueError(f"{name}: solver must be one of {SOLVERS}, got {solver!r}")
        if tol is not None and not tol > 0:
            raise ValueError(f"{name}: tol must be positive, got {tol}")
        self.slope = float(slope)
        self.solver = solver
        self.tol = None if tol is None else float(tol)
        self.max_iter = integer_at_least(max_iter, f"{name}: max_iter")
        self.dim = int(torch.Size(shape).numel())
        self.widths = (1, *([self.hidden_units] * self.hidden_layers), 1)
        super().__init__(
            Plan(Tensor) if params_fn is None else params_fn, shape=shape, context_shape=context_shape
        )
        d = self.dim
        self.weights = nn.ParameterList()
        self.log_scales = nn.ParameterList()
        for a_in, a_out in zip(self.widths[:-1], self.widths[1:]):
            bound = 1.0 / math.sqrt(d * a_in)
            self.weights.append(nn.Parameter(torch.empty(d * a_out, d * a_in).uniform_(-bound, bound)))
            self.log_scales.append(nn.Parameter(torch.zeros(d * a_out)))
        # the block structure of each layer: 1 on the diagonal blocks, 1 below them
        dtype = torch.get_default_dtype()
        for layer, (a_in, a_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            rows = torch.arange(d).repeat_interleave(a_out)[:, None]
            cols = torch.arange(d).repeat_interleave(a_in)[None, :]
            self.register_buffer(f"_diagonal{layer}", (rows == cols).to(dtype), persistent=False)
            self.register_buffer(f"_below{layer}", (rows > cols).to(dtype), persistent=False)

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return tuple(torch.Size([self.dim * a]) for a in self.widths[1:])

    # ------------------------------------------------------------------ the network
    def _masks(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The 0/1 masks of ``layer``'s diagonal blocks and of the blocks below them."""
        diagonal: torch.Tensor = getattr(self, f"_diagonal{layer}")
        below: torch.Tensor = getattr(self, f"_below{layer}")
        return diagonal, below

    def _network(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T(y), log dT_i/dy_i)`` for a flat ``y`` of shape ``batch + (D,)``."""
        d = self.dim
        h = y
        log_j = torch.zeros(d, 1, dtype=y.dtype, device=y.device)  # log dh_{i,k} / dy_i
        last = len(self.widths) - 2
        for layer, (a_in, a_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            v, log_g = self.weights[layer], self.log_scales[layer]
            diagonal, below = self._masks(layer)
            w = v * below + (v * diagonal).exp() * diagonal
            log_scale = log_g - 0.5 * w.square().sum(-1).log()  # weight normalisation
            h = h @ (log_scale.exp()[:, None] * w).T + params[layer]
            log_blocks = (v + log_scale[:, None]).view(d, a_out, d, a_in).diagonal(dim1=0, dim2=2)
            log_j = torch.logsumexp(log_blocks.permute(2, 0, 1) + log_j[..., None, :], dim=-1)
            if layer < last:
                log_j = log_j + self._log_activation_slope(h).view(*h.shape[:-1], d, a_out)
                h = torch.tanh(h) + self.slope * h
        return h, log_j[..., 0].expand(h.shape)

    def _log_activation_slope(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`\log(\operatorname{sech}^2 v + \alpha)`, stable for large :math:`|v|`."""
        a = v.abs()
        log_sech2 = 2.0 * (_LOG2 - a - F.softplus(-2.0 * a))
        if self.slope == 0.0:
            return log_sech2
        return torch.logaddexp(log_sech2, torch.full_like(v, math.log(self.slope)))

    def _flat(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(*value.shape[: value.dim() - len(self.shape)], self.dim)

    def _unflat(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(*value.shape[:-1], *self.shape)

    # ------------------------------------------------------------------ the maths
    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._unflat(self._network(self._flat(y), params)[0])

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_slope = self._network(self._flat(y), params)
        return self._unflat(x), -self._unflat(log_slope)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return -self._unflat(self._network(self._flat(y), params)[1])

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later]:
        # the network gives its log-slope with its value: keep it
        x, log_slope = self._network(self._flat(y), params)
        return self._unflat(x), lambda: -self._unflat(log_slope)

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        target = self._flat(x)
        with torch.no_grad():
            start = target.detach()
            out, _ = self._network(start, params)
            root = start.expand(out.shape).clone()
            for i in range(self.dim):
                root[..., i] = self._solve_dim(
                    root, i, target[..., i].detach().expand(out.shape[:-1]), params
                )
        # forward substitution: y_i = y*_i - (T_i(y_{<i}, y*_i) - x_i) / sg[dT_i/dy_i]; its gradients
        # solve the triangular system J dy = dx - (dT/dtheta) dtheta of the implicit function.
        columns: list[torch.Tensor] = []
        for i in range(self.dim):
            point = torch.cat([*columns, root[..., i:]], dim=-1) if columns else root
            value, log_slope = self._network(point, params)
            columns.append(
                root[..., i : i + 1]
                - (value[..., i : i + 1] - target[..., i : i + 1]) / log_slope[..., i : i + 1].detach().exp()
            )
        out = torch.cat(columns, dim=-1)
        if out.requires_grad and value.requires_grad and not is_compiling():
            refuse_second_order(out, value, f"{type(self).__name__}'s numerical forward")
        return self._unflat(out)

    def _solve_dim(self, root: torch.Tensor, i: int, target: torch.Tensor, params: Params) -> torch.Tensor:
        """Solves ``T_i(root_{<i}, v) = target`` for ``v`` (no gradient)."""

        def value_and_slope(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            point = root.clone()
            point[..., i] = v
            value, log_slope = self._network(point, params)
            return value[..., i], log_slope[..., i].exp()

        lower, upper = target - 1.0, target + 1.0
        if self.solver == "bisection":
            return bisect_monotone(
                lambda v: value_and_slope(v)[0],
                target,
                lower,
                upper,
                atol=self.tol,
                rtol=self.tol,
                max_iter=self.max_iter,
            )
        return newton_monotone(
            value_and_slope,
            target,
            lower,
            upper,
            initial=root[..., i],
            atol=self.tol,
            rtol=self.tol,
            max_iter=self.max_iter,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden_units={self.hidden_units}, hidden_layers={self.hidden_layers}, "
            f"slope={self.slope}"
        )
