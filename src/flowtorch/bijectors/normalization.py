"""Normalisation bijectors: per-feature affine maps set from data (ActNorm) or batch statistics
(BatchNorm).

Both act on one *feature dim* of the event, chosen by ``dim`` (``-1``: the last dim, as for
vector events; ``-3``: the channel dim of a ``(C, H, W)`` event). Each feature has its own scale
and shift, shared by every position of the other event dims; statistics are taken per feature
over the batch and over those other event dims. Both keep their parameters on the bijector
itself and take no conditioner, so they take no context.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Conditioner, Costs, Params

__all__ = ["ActNorm", "BatchNorm"]

# Negative "state versions" that are never equal to a real one (a sum of version counters) nor
# to each other: returned while a bijector's map is not fixed, so the BijectiveMode cache misses.


class _FeatureWise(Bijector):
    """Shared plumbing: the feature dim, per-feature statistics, and broadcasting parameters."""

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        params_fn: Conditioner | None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None,
        dim: int,
    ) -> None:
        name = type(self).__name__
        if params_fn is not None:
            raise TypeError(
                f"{name} keeps its learnable parameters on itself and takes no conditioner "
                f"(params_fn), got {params_fn!r}; it is unconditional and takes no context"
            )
        super().__init__(None, shape=shape, context_shape=context_shape)
        k = len(self.shape)
        if isinstance(dim, bool) or not isinstance(dim, int) or not -k <= dim < k:
            raise ValueError(
                f"{name}: dim={dim!r} is not a dim of the event shape {tuple(self.shape)} "
                f"(use -1 for the last dim, -3 for the channel dim of a (C, H, W) event)"
            )
        #: the feature dim, counted from the end of the event (negative)
        self.dim = dim - k if dim >= 0 else dim
        #: the number of features
        self.features = self.shape[self.dim]
        self._view = (self.features,) + (1,) * (-self.dim - 1)
        #: how many event positions share each feature's scale
        self._repeats = self.shape.numel() // self.features if self.features else 0

    def _raw_event_dim(self) -> int:
        return len(self.shape)  # log|det J| is one number per batch element

    def _expand(self, p: torch.Tensor) -> torch.Tensor:
        """A per-feature tensor ``(n,)`` shaped to broadcast against the event."""
        return p.view(self._view)

    def _log_det(self, log_scale: torch.Tensor) -> torch.Tensor:
        ladj = log_scale.sum()
        return ladj * self._repeats if self._repeats != 1 else ladj

    def _stats(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-feature mean and biased variance of ``t`` over every other dim, and the count."""
        fdim = t.dim() + self.dim
        count = t.numel() // self.features
        if count < 2:
            raise ValueError(
                f"{type(self).__name__} needs more than one value per feature to compute statistics "
                f"in training mode, got an input of shape {tuple(t.shape)} (one value per feature "
                f"along dim {self.dim}); pass a batch, or call .eval()"
            )
        dims = [d for d in range(t.dim()) if d != fdim]
        var, mean = torch.var_mean(t, dim=dims, correction=0)
        return mean, var, count

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"


class ActNorm(_FeatureWise):
    r"""Activation normalisation: a per-feature affine map initialised from the first batch.

    .. math::
        y = (x - \mu) \odot e^{-s}, \qquad \log|\det J| = -R \sum_{i=1}^{n} s_i,

    with learnable ``loc`` :math:`\mu` and ``log_scale`` :math:`s` of shape ``(n,)`` (one per
    feature of the feature dim ``dim``) and :math:`R` the number of event positions sharing them
    (:math:`H W` for the channel dim of a ``(C, H, W)`` event).

    **Data-dependent initialisation.** The first call in training mode sets :math:`\mu` and
    :math:`s` from its input so that *that call's output* has zero mean and unit variance per
    feature (statistics over the batch and the other event dims; variance floor ``eps``):

    * ``forward(x)``: :math:`\mu = \mathrm{mean}(x)`, :math:`s = \tfrac12\log(\mathrm{var}(x) + \epsilon)`;
    * ``inverse(y)`` (what ``Flow.log_prob`` calls first when the data side is :math:`y`):
      :math:`s = -\tfrac12\log(\mathrm{var}(y) + \epsilon)`, :math:`\mu = -\mathrm{mean}(y)\, e^{s}`,
      so that :math:`x = y\, e^{s} + \mu` is standardised.

    The buffer ``initialized`` records that this happened; it is saved in the ``state_dict`` and
    by ``torch.save``, so a loaded ActNorm is not initialised again. In eval mode nothing is
    initialised (an uninitialised ActNorm is the identity map there). While uninitialised, calls
    are never served from the ``BijectiveMode`` cache, since the next training-mode call
    changes the map. Initialisation needs more than one value per feature.

    Reference: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        dim: the feature dim of the event (default ``-1``; ``-3`` for the channels of
            ``(C, H, W)``).
        eps: variance floor of the initialisation.

    Shapes: ``x`` is ``sample + batch + shape``; log|det J| is ``sample + batch``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.ActNorm()(shape=torch.Size([2]))
        >>> y = b.forward(3.0 + 2.0 * torch.randn(100, 2))  # initialises from this batch
        >>> bool(b.initialized), y.mean(0).abs().max() < 1e-5, (y.std(0, correction=0) - 1).abs().max() < 1e-4
        (True, tensor(True), tensor(True))
    """

    costs = Costs(
        "analytic", "O(D) elementwise", "O(D) elementwise", "O(C)", reference="Kingma & Dhariwal 2018"
    )

    initialized: torch.Tensor

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        dim: int = -1,
        eps: float = 1e-6,
    ) -> None:
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"ActNorm: eps must be a positive number, got {eps}")
        self.eps = float(eps)
        super().__init__(params_fn, shape=shape, context_shape=context_shape, dim=dim)
        self.loc = nn.Parameter(torch.zeros(self.features))
        self.log_scale = nn.Parameter(torch.zeros(self.features))
        self.register_buffer("initialized", torch.tensor(False))
        # A host-side copy of ``initialized``, re-read when the buffer's version or storage moves
        # (so a training step does not synchronise with an accelerator to read the flag).
        self._init_seen: tuple[tuple[int, int], bool] | None = None

    def is_initialized(self) -> bool:
        """Whether the data-dependent initialisation has happened (the ``initialized`` buffer)."""
        flag = self.initialized
        key = (flag._version, flag.data_ptr())
        seen = self._init_seen
        if seen is None or seen[0] != key:
            seen = (key, bool(flag))
            self._init_seen = seen
        return seen[1]

    def _maybe_initialize(self, t: torch.Tensor, forward: bool) -> None:
        if not self.training or self.is_initialized():
            return
        with torch.no_grad():
            mean, var, _ = self._stats(t.detach())
            log_std = 0.5 * torch.log(var + self.eps)
            if forward:
                loc, log_scale = mean, log_std
            else:
                loc, log_scale = -mean * torch.exp(-log_std), -log_std
            self.loc.copy_(loc)
            self.log_scale.copy_(log_scale)
            self.initialized.fill_(True)

    def _cacheable(self) -> bool:
        return self.is_initialized()  # the first call still changes the map

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        self._maybe_initialize(x, True)
        return (x - self._expand(self.loc)) * self._expand(torch.exp(-self.log_scale))

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        self._maybe_initialize(y, False)
        return y * self._expand(torch.exp(self.log_scale)) + self._expand(self.loc)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return -self._log_det(self.log_scale)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        y = self._forward(x, params)
        return y, -self._log_det(self.log_scale)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._inverse(y, params)
        return x, -self._log_det(self.log_scale)


class BatchNorm(_FeatureWise):
    r"""Batch normalisation as a bijector (Dinh et al. 2017; Papamakarios et al. 2017).

    .. math::
        y = e^{\gamma} \odot \frac{x - m}{\sqrt{v + \epsilon}} + \beta, \qquad
        \log|\det J| = R \sum_{i=1}^{n} \Big(\gamma_i - \tfrac12 \log(v_i + \epsilon)\Big),

    with learnable ``log_gamma`` :math:`\gamma` and ``beta`` :math:`\beta` of shape ``(n,)`` (one
    per feature of the feature dim ``dim``) and :math:`R` the number of event positions sharing
    them. ``forward`` is the normalising direction (MAF's data-to-noise map); in a ``Flow``
    trained with ``log_prob``, which runs inverse passes on the data, use
    ``Invert(BatchNorm())`` so that the data side is normalised.

    * **Training mode**: ``forward(x)`` takes :math:`m, v` from its own batch (mean and biased
      variance per feature over the batch and the other event dims; gradients flow through them,
      as in ordinary batch norm), updates ``running_mean``/``running_var`` with ``momentum``
      (unbiased variance, as ``torch.nn.BatchNorm1d``), and stores the batch statistics in
      ``batch_mean``/``batch_var``. ``inverse`` and ``inverse_and_ladj`` apply the inverse of the
      map the *last* training-mode forward applied (those stored statistics; mean 0 and
      variance 1 before any), so ``inverse(forward(x))`` returns ``x``. The log-det is that of
      the batch-statistic map **treating the statistics as constants**, as in the MAF paper;
      it is not the Jacobian of the whole batch-to-batch map. ``log_abs_det_jacobian(x, y)`` is
      that of the map ``forward(x)`` applies (statistics of ``x``'s batch).
    * **Eval mode**: :math:`m, v` are the running averages; the map is a fixed affine bijection
      and the log-det its exact Jacobian.

    ``BijectiveMode``: a training-mode forward redefines the map from its batch and updates the
    buffers in place, so in training mode nothing is served from the cache: inside a mode,
    ``b.inverse(b.forward(x))`` is a miss that recomputes ``x`` from the stored batch
    statistics (equal to ``x``, not the object ``x``), and ``b.forward`` of an inverse's output
    normalises that batch afresh, exactly as outside the mode. In eval mode calls are cached as
    usual; switching mode never serves an entry recorded in the other one.

    References: Dinh et al., "Density estimation using Real NVP", 2017; Papamakarios et al.,
    "Masked Autoregressive Flow for Density Estimation", 2017 (appendix B).

    Args:
        dim: the feature dim of the event (default ``-1``; ``-3`` for the channels of
            ``(C, H, W)``).
        momentum: weight of the new batch in the running averages, in ``(0, 1]``.
        eps: added to the variance.

    Shapes: ``x`` is ``sample + batch + shape``; log|det J| is ``sample + batch``.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> b = bij.BatchNorm()(shape=torch.Size([2]))
        >>> x = 3.0 + 2.0 * torch.randn(100, 2)
        >>> y = b.forward(x)  # training mode: batch statistics
        >>> y.mean(0).abs().max() < 1e-5, torch.allclose(b.inverse(y), x, atol=1e-5)
        (tensor(True), True)
        >>> _ = b.eval()  # running averages from now on
    """

    costs = Costs(
        "analytic",
        "O(D) elementwise + batch statistics",
        "O(D) elementwise",
        "O(D)",
        reference="Dinh et al. 2017; Papamakarios et al. 2017",
    )

    running_mean: torch.Tensor
    running_var: torch.Tensor
    batch_mean: torch.Tensor
    batch_var: torch.Tensor

    def __init__(
        self,
        params_fn: Conditioner | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
        dim: int = -1,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        if not 0 < momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be in (0, 1], got {momentum}")
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"BatchNorm: eps must be a positive number, got {eps}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        super().__init__(params_fn, shape=shape, context_shape=context_shape, dim=dim)
        n = self.features
        self.log_gamma = nn.Parameter(torch.zeros(n))
        self.beta = nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("batch_mean", torch.zeros(n))
        self.register_buffer("batch_var", torch.ones(n))

    def _cacheable(self) -> bool:
        return not self.training  # the map depends on the batch: never cache a call

    def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (count / (count - 1)), alpha=m)
            self.batch_mean.copy_(mean)
            self.batch_var.copy_(var)

    def _log_scale(self, var: torch.Tensor) -> torch.Tensor:
        """Per feature, :math:`\\gamma - \\frac12 \\log(v + \\epsilon)`."""
        return self.log_gamma - 0.5 * torch.log(var + self.eps)

    def _stored(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics of the current map (last batch in training mode, running in eval)."""
        if self.training:
            return self.batch_mean, self.batch_var
        return self.running_mean, self.running_var

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            mean, var, count = self._stats(x)
            self._update(mean.detach(), var.detach(), count)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self._log_scale(var)
        y = (x - self._expand(mean)) * self._expand(log_scale.exp()) + self._expand(self.beta)
        return y, self._log_det(log_scale)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self._stored()
        log_scale = self._log_scale(var)
        x = (y - self._expand(self.beta)) * self._expand(torch.exp(-log_scale)) + self._expand(mean)
        return x, self._log_det(log_scale)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        var = self._stats(x)[1] if self.training else self.running_var
        return self._log_det(self._log_scale(var))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}, eps={self.eps}"
