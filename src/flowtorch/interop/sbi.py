r"""flowtorch's conditional flows as density estimators of the ``sbi`` package.

``sbi``'s neural posterior estimation (NPE) fits a conditional density :math:`q(\theta \mid x)` to
simulations :math:`(\theta_i, x_i)` by maximum likelihood; its likelihood estimation (NLE) fits
:math:`q(x \mid \theta)`. Both take a *builder*: a function of the simulations that returns a
density estimator. :func:`posterior_nn` and :func:`likelihood_nn` return such builders, named and
parametrised like ``sbi``'s own, whose estimator is a flowtorch :class:`~flowtorch.distributions.Flow`
(a recipe by name, ``"nsf"``, ``"nsf_coupling"`` or ``"maf"``, or any plan):

.. math::
    q(\theta \mid x) = q_0\big(z \mid h(x)\big) \prod_j \frac{1}{\sigma_j}, \qquad
    z = \frac{\theta - \mu}{\sigma}, \qquad h(x) = e\Big(\frac{x - m}{s}\Big),

with :math:`q_0` the flow on the z-scored input, :math:`e` an optional embedding network and
:math:`(\mu, \sigma)`, :math:`(m, s)` the z-scoring statistics computed from the batch the builder
receives, as ``sbi`` computes them (``"independent"``: per dimension; ``"structured"``: one mean and
one spread for all dimensions; ``"none"``). The flow is trained, sampled and scored by ``sbi``
itself (``NPE.train``, ``build_posterior``, ``DirectPosterior.sample``/``log_prob``/``map``); the
estimator's ``state_dict`` holds the z-scoring statistics, so a freshly built estimator loads a
trained one exactly.

Use with ``sbi`` (0.27)::

    from sbi.inference import NPE
    from flowtorch.interop.sbi import posterior_nn

    inference = NPE(prior, density_estimator=posterior_nn(model="nsf", hidden_features=50))
    estimator = inference.append_simulations(theta, x).train()
    posterior = inference.build_posterior(estimator)
    samples = posterior.sample((1000,), x=x_o)

``sbi`` is optional. This module imports it when it is installed, and then the estimator is a
subclass of ``sbi``'s ``ConditionalDensityEstimator`` (which ``sbi``'s trainers check); without
``sbi`` the estimator is a plain ``nn.Module`` with the same methods, so it can be built and used
on its own. ``import flowtorch`` and ``import flowtorch.interop`` never import ``sbi``.

References: Papamakarios & Murray, "Fast epsilon-free Inference of Simulation Models with Bayesian
Conditional Density Estimation", 2016; Greenberg et al., "Automatic Posterior Transformation for
Likelihood-Free Inference", 2019; Tejero-Cantero et al., "sbi: A toolkit for simulation-based
inference", JOSS 2020.

Example:
    >>> import torch
    >>> from flowtorch.interop.sbi import posterior_nn
    >>> theta, x = torch.randn(500, 2), torch.randn(500, 3)
    >>> estimator = posterior_nn(model="maf", num_transforms=2)(theta, x)
    >>> estimator.log_prob(theta[:4], x[:4]).shape  # (sample, batch)
    torch.Size([1, 4])
    >>> estimator.sample((7,), x[:2]).shape
    torch.Size([7, 2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
from torch import nn

from flowtorch.bijectors.affine import Affine
from flowtorch.bijectors.compose import Compose
from flowtorch.bijectors.coupling import SplineCoupling
from flowtorch.bijectors.linear import LULinear
from flowtorch.bijectors.spline import Spline
from flowtorch.distributions.flow import Flow
from flowtorch.lazy import Plan
from flowtorch.parameters.coupling import DenseCoupling
from flowtorch.parameters.tensor import Tensor as ContextOnly
from flowtorch.recipes import MAF, NSF

if TYPE_CHECKING:
    # The seam with sbi, as this module uses it: what the estimator inherits is an nn.Module
    # whose every method sbi calls is defined below.
    _EstimatorBase = nn.Module
else:
    try:
        from sbi.neural_nets.estimators.base import ConditionalDensityEstimator as _EstimatorBase
    except ModuleNotFoundError as error:  # sbi is optional; anything else broken in it is not hidden
        if error.name is None or error.name.split(".")[0] != "sbi":
            raise
        _EstimatorBase = nn.Module

__all__ = ["FlowDensityEstimator", "build_estimator", "likelihood_nn", "posterior_nn"]

ZScore = Literal["independent", "structured", "none"]
Model = Union[str, Plan[Any]]
Builder = Callable[[torch.Tensor, torch.Tensor], "FlowDensityEstimator"]

#: the smallest spread z-scoring divides by (a constant dimension is shifted, not blown up)
MIN_STD = 1e-7

_MODELS = ("nsf", "maf", "nsf_coupling")


def _z_score_statistics(batch: torch.Tensor, how: ZScore | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread of ``batch`` over its first dimension, of shape ``batch.shape[1:]``.

    Rows with a NaN or an infinity are left out (sbi drops them before training too)."""
    event = batch.shape[1:]
    if how is None or how == "none":
        return torch.zeros(event, dtype=batch.dtype), torch.ones(event, dtype=batch.dtype)
    if how not in ("independent", "structured"):
        raise ValueError(f"z-scoring must be 'independent', 'structured' or 'none', got {how!r}")
    rows = batch.detach().reshape(batch.shape[0], -1)
    rows = rows[torch.isfinite(rows).all(dim=1)]
    if rows.shape[0] < 2:
        raise ValueError(f"z-scoring needs at least two finite rows in the batch, got {rows.shape[0]}")
    if how == "independent":
        mean, std = rows.mean(dim=0), rows.std(dim=0).clamp(min=MIN_STD)
    else:  # one mean over all entries, and the mean over rows of each row's spread
        mean, std = rows.mean(), rows.std(dim=1).clamp(min=MIN_STD).mean()
    return mean.expand(rows.shape[1]).reshape(event).clone(), std.expand(rows.shape[1]).reshape(event).clone()


class _Standardize(nn.Module):
    """``(c - mean) / std``, with the statistics as buffers (saved in the ``state_dict``)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (c - self.mean) / self.std


def _plan(
    model: Model, dim: int, hidden_features: int, num_transforms: int, num_bins: int, tail_bound: float
) -> Any:
    """The flow's plan: a recipe by name, or the plan given.

    A one-dimensional input has nothing to be autoregressive on: its layers take their parameters
    from the context alone (a ``Tensor`` conditioner with an MLP on the context)."""
    if not isinstance(model, str):
        return model
    hidden = (hidden_features, hidden_features)
    from_context = Plan(ContextOnly, hidden_dims=hidden)
    if model in ("nsf", "nsf_coupling"):
        if dim == 1:
            spline = Plan(Spline, from_context, count_bins=num_bins, bound=tail_bound)
            return Plan(Compose, [spline] * num_transforms)
        if model == "nsf":
            return NSF(layers=num_transforms, bins=num_bins, bound=tail_bound, hidden_dims=hidden)
        # sbi's own "nsf" layout: a spline coupling on alternating halves, then an LU layer that
        # starts as the identity (no permutation), in every layer
        layers: list[Plan[Any]] = []
        for i in range(num_transforms):
            net = Plan(DenseCoupling, hidden_dims=hidden)
            layers.append(Plan(SplineCoupling, net, flip=i % 2 == 1, count_bins=num_bins, bound=tail_bound))
            layers.append(Plan(LULinear, permutation="identity", identity_init=True))
        return Plan(Compose, layers)
    if model == "maf":
        if dim == 1:
            return Plan(Compose, [Plan(Affine, from_context)] * num_transforms)
        return MAF(layers=num_transforms, hidden_dims=hidden)
    raise ValueError(f"model must be one of {_MODELS} or a flowtorch plan, got {model!r}")


class FlowDensityEstimator(_EstimatorBase):
    r"""A flowtorch conditional flow as an ``sbi`` ``ConditionalDensityEstimator``.

    .. math::
        \log q(\text{input} \mid \text{condition})
        = \log q_0\Big(\frac{\text{input} - \mu}{\sigma} \,\Big|\, h(\text{condition})\Big)
        - \sum_j \log \sigma_j

    where ``flow`` is :math:`q_0` (over the z-scored input, conditioned on the embedded
    condition), ``(input_shift, input_scale)`` are :math:`(\mu, \sigma)` and ``embedding`` is
    :math:`h` (z-scoring of the condition included). Usually built by :func:`posterior_nn`,
    :func:`likelihood_nn` or :func:`build_estimator` rather than by hand.

    Shapes, as ``sbi`` expects them: ``log_prob(input, condition)`` takes an input of shape
    ``(sample, batch, *input_shape)`` or ``(batch, *input_shape)`` and a condition of shape
    ``(batch, *condition_shape)`` or ``(sample, batch, *condition_shape)`` (batch sizes broadcast)
    and returns ``(sample, batch)``; ``sample(sample_shape, condition)`` returns
    ``(*sample_shape, batch, *input_shape)``; ``loss(input, condition)`` takes ``(batch, ...)``
    pairs and returns ``(batch,)``.

    Reference: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and
    Inference", JMLR 2021.

    Args:
        flow: a conditional :class:`~flowtorch.distributions.Flow` whose event shape is
            ``input_shape`` and whose context is the embedding's output.
        embedding: maps conditions ``(n, *condition_shape)`` to the flow's context ``(n, ...)``.
        input_shape: event shape of the input (of samples).
        condition_shape: event shape of the condition.
        input_shift: :math:`\mu`, of shape ``input_shape``.
        input_scale: :math:`\sigma`, of shape ``input_shape``.

    Example:
        >>> import torch
        >>> import flowtorch.distributions as dist
        >>> from flowtorch.recipes import MAF
        >>> base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), 1.0), 1)
        >>> flow = dist.Flow(base, MAF(layers=2, hidden_dims=(8,)), context_shape=(3,))
        >>> est = FlowDensityEstimator(flow, torch.nn.Identity(), (2,), (3,), torch.zeros(2), torch.ones(2))
        >>> est.loss(torch.randn(5, 2), torch.randn(5, 3)).shape
        torch.Size([5])
    """

    input_shift: torch.Tensor
    input_scale: torch.Tensor

    def __init__(
        self,
        flow: Flow,
        embedding: nn.Module,
        input_shape: torch.Size | tuple[int, ...],
        condition_shape: torch.Size | tuple[int, ...],
        input_shift: torch.Tensor,
        input_scale: torch.Tensor,
    ) -> None:
        # sbi's base __init__ only stores the shapes and the net, which this does for either base
        nn.Module.__init__(self)
        self._input_shape = torch.Size(input_shape)
        self._condition_shape = torch.Size(condition_shape)
        if flow.context_shape is None:
            raise ValueError("FlowDensityEstimator: the flow must be conditional (give it a context_shape)")
        if flow.event_shape != self._input_shape:
            raise ValueError(
                f"FlowDensityEstimator: the flow's event shape {tuple(flow.event_shape)} is not the "
                f"input shape {tuple(self._input_shape)}"
            )
        self.net = flow
        self.embedding = embedding
        self.register_buffer("input_shift", input_shift.detach().clone().reshape(self._input_shape))
        self.register_buffer("input_scale", input_scale.detach().clone().reshape(self._input_shape))

    @property
    def flow(self) -> Flow:
        """The flowtorch flow over the z-scored input."""
        net = self.net
        assert isinstance(net, Flow)
        return net

    @property
    def input_shape(self) -> torch.Size:
        """Event shape of the input (and of samples)."""
        return self._input_shape

    @property
    def condition_shape(self) -> torch.Size:
        """Event shape of the condition."""
        return self._condition_shape

    @property
    def embedding_net(self) -> nn.Module:
        """The map from conditions to the flow's context (z-scoring of the condition included)."""
        return self.embedding

    def _check(self, name: str, tensor: torch.Tensor, shape: torch.Size) -> None:
        if tensor.dim() < len(shape) or tensor.shape[tensor.dim() - len(shape) :] != shape:
            raise ValueError(
                f"FlowDensityEstimator: {name} has shape {tuple(tensor.shape)}, but its trailing dims "
                f"must be {tuple(shape)}"
            )

    def _context(self, condition: torch.Tensor) -> torch.Tensor:
        """The flow's context for conditions of shape ``(*batch, *condition_shape)``."""
        self._check("condition", condition, self._condition_shape)
        batch = condition.shape[: condition.dim() - len(self._condition_shape)]
        embedded: torch.Tensor = self.embedding(condition.reshape(-1, *self._condition_shape))
        context_shape = self.flow.context_shape
        assert context_shape is not None
        return embedded.reshape(*batch, *context_shape)

    def _log_scale(self) -> torch.Tensor:
        return self.input_scale.log().sum()

    def log_prob(self, input: torch.Tensor, condition: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Log-density of ``input`` given ``condition``, of shape ``(sample, batch)``.

        Args:
            input: ``(sample, batch, *input_shape)`` or ``(batch, *input_shape)``.
            condition: ``(batch, *condition_shape)`` or ``(sample, batch, *condition_shape)``.
            kwargs: ignored (``sbi`` passes estimator-specific options to some estimators).

        Example:
            >>> import torch
            >>> est = build_estimator(torch.randn(100, 2), torch.randn(100, 1), model="maf", num_transforms=1)
            >>> est.log_prob(torch.randn(6, 4, 2), torch.randn(4, 1)).shape
            torch.Size([6, 4])
        """
        self._check("input", input, self._input_shape)
        self._check("condition", condition, self._condition_shape)
        n_in, n_cond = len(self._input_shape), len(self._condition_shape)
        if input.dim() == n_in + 1:
            input = input.unsqueeze(0)
        if input.dim() != n_in + 2:
            raise ValueError(
                "FlowDensityEstimator.log_prob: input must have shape (sample, batch, *input_shape) or "
                f"(batch, *input_shape), got {tuple(input.shape)}"
            )
        if condition.dim() not in (n_cond + 1, n_cond + 2):
            raise ValueError(
                "FlowDensityEstimator.log_prob: condition must have shape (batch, *condition_shape) or "
                f"(sample, batch, *condition_shape), got {tuple(condition.shape)}"
            )
        context = self._context(condition)  # (batch, E) or (sample, batch, E)
        c_batch = context.shape[-2]
        try:
            batch = torch.broadcast_shapes((input.shape[1],), (c_batch,))[0]
        except RuntimeError as error:
            raise RuntimeError(
                "FlowDensityEstimator.log_prob: the batch sizes of input and condition must match or one "
                f"of them be 1, got {input.shape[1]} and {c_batch}"
            ) from error
        input = input.expand(input.shape[0], batch, *self._input_shape)
        context = context.expand(*context.shape[:-2], batch, context.shape[-1])
        z = (input - self.input_shift) / self.input_scale
        return self.flow.log_prob(z, context=context) - self._log_scale()

    def loss(self, input: torch.Tensor, condition: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Negative log-density of each ``(input, condition)`` pair, of shape ``(batch,)``: what
        ``sbi``'s trainers minimise.

        Args:
            input: ``(batch, *input_shape)``.
            condition: ``(batch, *condition_shape)``.
            kwargs: ignored.

        Example:
            >>> import torch
            >>> est = build_estimator(torch.randn(100, 2), torch.randn(100, 1), model="maf", num_transforms=1)
            >>> est.loss(torch.randn(5, 2), torch.randn(5, 1)).shape
            torch.Size([5])
        """
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(
        self, sample_shape: torch.Size | tuple[int, ...], condition: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """Samples of shape ``(*sample_shape, batch, *input_shape)``, without gradients.

        Args:
            sample_shape: leading shape of the samples.
            condition: ``(batch, *condition_shape)``.
            kwargs: ignored.

        Example:
            >>> import torch
            >>> est = build_estimator(torch.randn(100, 2), torch.randn(100, 1), model="maf", num_transforms=1)
            >>> est.sample((5,), torch.randn(3, 1)).shape
            torch.Size([5, 3, 2])
        """
        with torch.no_grad():
            z = self.flow.sample(torch.Size(sample_shape), context=self._context(condition))
            return self.input_shift + self.input_scale * z

    def sample_and_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...], condition: torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparametrised samples and their log-density in one pass (no inverse), of shapes
        ``(*sample_shape, batch, *input_shape)`` and ``(*sample_shape, batch)``.

        Args:
            sample_shape: leading shape of the samples.
            condition: ``(batch, *condition_shape)``.
            kwargs: ignored.

        Example:
            >>> import torch
            >>> est = build_estimator(torch.randn(100, 2), torch.randn(100, 1), model="maf", num_transforms=1)
            >>> theta, log_q = est.sample_and_log_prob((5,), torch.randn(3, 1))
            >>> theta.shape, log_q.shape
            (torch.Size([5, 3, 2]), torch.Size([5, 3]))
        """
        z, log_q = self.flow.rsample_and_log_prob(torch.Size(sample_shape), context=self._context(condition))
        return self.input_shift + self.input_scale * z, log_q - self._log_scale()


def build_estimator(
    batch_input: torch.Tensor,
    batch_condition: torch.Tensor,
    model: Model = "nsf",
    z_score_input: ZScore | None = "independent",
    z_score_condition: ZScore | None = "independent",
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    tail_bound: float = 3.0,
    embedding_net: nn.Module | None = None,
) -> FlowDensityEstimator:
    r"""A :class:`FlowDensityEstimator` of ``input`` given ``condition``, shaped and z-scored from
    the batches (what :func:`posterior_nn` and :func:`likelihood_nn` call).

    .. math::
        \mu, \sigma = \text{mean}, \text{std of } \texttt{batch\_input};\quad
        m, s = \text{mean}, \text{std of } \texttt{batch\_condition}

    per dimension (``"independent"``), one for all dimensions (``"structured"``) or
    :math:`(0, 1)` (``"none"``); rows with a NaN or infinity are left out, and spreads below
    ``MIN_STD`` are raised to it. The flow's context shape is the embedding's output for one
    condition, flattened.

    Reference: Tejero-Cantero et al., "sbi: A toolkit for simulation-based inference", JOSS 2020
    (the builder protocol and the z-scoring options).

    Args:
        batch_input: ``(n, d)`` inputs (:math:`\theta` for a posterior): the input shape and
            :math:`(\mu, \sigma)` come from them.
        batch_condition: ``(n, *condition_shape)`` conditions (:math:`x` for a posterior).
        model: ``"nsf"`` (the :func:`~flowtorch.recipes.NSF` recipe, autoregressive,
            ``num_bins`` bins on ``[-tail_bound, tail_bound]``), ``"nsf_coupling"`` (the layout
            of ``sbi``'s own ``"nsf"``: in each layer a
            :class:`~flowtorch.bijectors.SplineCoupling` on alternating halves, then an
            :class:`~flowtorch.bijectors.LULinear` that starts as the identity; one pass in both
            directions), ``"maf"`` (the :func:`~flowtorch.recipes.MAF` recipe), or any flowtorch
            plan (a recipe's result, a ``Compose`` of bijector plans); it is built for the input
            shape and the context shape. A one-dimensional input gets layers whose parameters
            come from the context alone.
        z_score_input: ``"independent"``, ``"structured"`` or ``"none"`` (or ``None``).
        z_score_condition: the same, for the condition (before the embedding net).
        hidden_features: width of the two hidden layers of each conditioner (named recipes).
        num_transforms: number of layers (named recipes).
        num_bins: spline bins of ``"nsf"`` and ``"nsf_coupling"``.
        tail_bound: half-width of the interval the splines cover (in z-scored units).
        embedding_net: module applied to the z-scored condition, e.g. to summarise a
            high-dimensional ``x``; identity if ``None``.

    Example:
        >>> import torch
        >>> theta, x = torch.randn(200, 3) * 5 + 1, torch.randn(200, 4)
        >>> est = build_estimator(theta, x, model="nsf", num_transforms=2, z_score_input="structured")
        >>> est.input_scale.shape, est.log_prob(theta[:3], x[:3]).shape
        (torch.Size([3]), torch.Size([1, 3]))
    """
    if batch_input.dim() != 2:
        raise ValueError(
            "build_estimator: the inputs must be a batch of vectors (n, d), got shape "
            f"{tuple(batch_input.shape)}"
        )
    if batch_condition.dim() < 2 or batch_condition.shape[0] != batch_input.shape[0]:
        raise ValueError(
            "build_estimator: the conditions must have shape (n, *condition_shape) with the inputs' n, got "
            f"{tuple(batch_condition.shape)} for inputs {tuple(batch_input.shape)}"
        )
    input_shape, condition_shape = batch_input.shape[1:], batch_condition.shape[1:]
    shift, scale = _z_score_statistics(batch_input, z_score_input)
    mean, std = _z_score_statistics(batch_condition, z_score_condition)
    embedding = nn.Sequential(
        _Standardize(mean, std), embedding_net if embedding_net is not None else nn.Identity()
    )
    embedding = embedding.to(batch_condition.device)
    with torch.no_grad():  # the context shape: the embedding of one condition, flattened
        was_training = embedding.training
        embedding.eval()
        probe = embedding(batch_condition[:1])
        embedding.train(was_training)
    context_shape = torch.Size([math.prod(probe.shape[1:])])
    if len(probe.shape[1:]) != 1:
        embedding = nn.Sequential(embedding, nn.Flatten())
    base = torch.distributions.Independent(
        torch.distributions.Normal(
            torch.zeros(input_shape, device=batch_input.device),
            torch.ones(input_shape, device=batch_input.device),
        ),
        1,
    )
    plan = _plan(model, input_shape.numel(), hidden_features, num_transforms, num_bins, tail_bound)
    flow = Flow(base, plan, context_shape=context_shape, validate_args=False).to(batch_input.device)
    return FlowDensityEstimator(flow, embedding, input_shape, condition_shape, shift, scale)


def posterior_nn(
    model: Model = "nsf",
    z_score_theta: ZScore | None = "independent",
    z_score_x: ZScore | None = "independent",
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    tail_bound: float = 3.0,
    embedding_net: nn.Module | None = None,
) -> Builder:
    r"""A builder of flowtorch posterior estimators :math:`q(\theta \mid x)` for ``sbi``'s NPE:
    ``NPE(prior, density_estimator=posterior_nn(...))``.

    .. math:: \texttt{build\_fn}(\theta_{1:n}, x_{1:n}) \mapsto q(\theta \mid x)

    ``sbi`` calls the builder with the first training batch; z-scoring statistics come from it.
    The arguments are ``sbi``'s (``sbi.neural_nets.posterior_nn``), with flowtorch's recipes.

    Reference: Greenberg et al., "Automatic Posterior Transformation for Likelihood-Free
    Inference", ICML 2019 (NPE-C, sbi's ``NPE``).

    Args:
        model: ``"nsf"``, ``"nsf_coupling"``, ``"maf"`` or a flowtorch plan (see
            :func:`build_estimator`).
        z_score_theta: z-scoring of :math:`\theta`: ``"independent"``, ``"structured"`` or ``"none"``.
        z_score_x: z-scoring of :math:`x`, before the embedding net.
        hidden_features: width of the conditioners' two hidden layers.
        num_transforms: number of flow layers.
        num_bins: spline bins (``"nsf"``, ``"nsf_coupling"``).
        tail_bound: spline interval half-width, in z-scored units (``"nsf"``, ``"nsf_coupling"``).
        embedding_net: optional module that summarises the z-scored :math:`x`.

    Example:
        >>> import torch
        >>> build_fn = posterior_nn(model="nsf", hidden_features=16, num_transforms=2)
        >>> estimator = build_fn(torch.randn(100, 2), torch.randn(100, 5))  # (theta, x)
        >>> estimator.input_shape, estimator.condition_shape
        (torch.Size([2]), torch.Size([5]))
    """

    return _builder(
        False,
        model=model,
        z_score_input=z_score_theta,
        z_score_condition=z_score_x,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        num_bins=num_bins,
        tail_bound=tail_bound,
        embedding_net=embedding_net,
    )


def likelihood_nn(
    model: Model = "nsf",
    z_score_theta: ZScore | None = "independent",
    z_score_x: ZScore | None = "independent",
    hidden_features: int = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    tail_bound: float = 3.0,
    embedding_net: nn.Module | None = None,
) -> Builder:
    r"""A builder of flowtorch likelihood estimators :math:`q(x \mid \theta)` for ``sbi``'s NLE:
    ``NLE(prior, density_estimator=likelihood_nn(...))``.

    .. math:: \texttt{build\_fn}(\theta_{1:n}, x_{1:n}) \mapsto q(x \mid \theta)

    The roles of :func:`posterior_nn` swapped: :math:`x` (a batch of vectors) is the input,
    :math:`\theta` the condition, and ``embedding_net`` applies to :math:`\theta`.

    Reference: Papamakarios et al., "Sequential Neural Likelihood", AISTATS 2019.

    Args:
        model: ``"nsf"``, ``"nsf_coupling"``, ``"maf"`` or a flowtorch plan (see
            :func:`build_estimator`).
        z_score_theta: z-scoring of :math:`\theta` (the condition).
        z_score_x: z-scoring of :math:`x` (the input).
        hidden_features: width of the conditioners' two hidden layers.
        num_transforms: number of flow layers.
        num_bins: spline bins (``"nsf"``, ``"nsf_coupling"``).
        tail_bound: spline interval half-width, in z-scored units (``"nsf"``, ``"nsf_coupling"``).
        embedding_net: optional module applied to the z-scored :math:`\theta`.

    Example:
        >>> import torch
        >>> estimator = likelihood_nn(model="maf", num_transforms=2)(torch.randn(100, 2), torch.randn(100, 5))
        >>> estimator.input_shape, estimator.condition_shape  # x given theta
        (torch.Size([5]), torch.Size([2]))
    """

    return _builder(
        True,
        model=model,
        z_score_input=z_score_x,
        z_score_condition=z_score_theta,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        num_bins=num_bins,
        tail_bound=tail_bound,
        embedding_net=embedding_net,
    )


def _builder(swap: bool, **options: Any) -> Builder:
    """sbi's ``build_fn(batch_theta, batch_x)``: the estimator of theta given x, or with ``swap``
    of x given theta (NLE)."""

    def build_fn(batch_theta: torch.Tensor, batch_x: torch.Tensor) -> FlowDensityEstimator:
        if swap:
            return build_estimator(batch_x, batch_theta, **options)
        return build_estimator(batch_theta, batch_x, **options)

    return build_fn
