r"""``AutoFlow``: a Pyro autoguide whose posterior is any flowtorch flow.

The guide follows Pyro's :class:`~pyro.infer.autoguide.AutoContinuous`: every latent site
:math:`\theta_k` of the model is mapped to the reals by ``biject_to(support_k).inv`` and the
pieces are concatenated into one vector :math:`u \in \mathbb{R}^D`. The posterior over
:math:`u` is a flowtorch :class:`~flowtorch.distributions.Flow` on a standard normal base,

.. math::
    u = f(\varepsilon), \quad \varepsilon \sim \mathcal N(0, I_D), \qquad
    \theta_k = T_k(u_k), \quad T_k = \texttt{biject\_to}(\text{support}_k),

so that the guide's density of the constrained values is

.. math::
    \log q(\theta) = \log \mathcal N(\varepsilon; 0, I_D) - \log|\det J_f(\varepsilon)|
    - \sum_k \log|\det J_{T_k}(u_k)|.

Pyro scores the guide's latent site by calling ``log_prob`` on what it sampled. The guide
samples and scores in one forward pass through the flow
(:meth:`~flowtorch.distributions.Flow.rsample_and_log_prob`) and serves that log-density when
Pyro asks for the density of the very sample it returned, provided nothing it depends on changed
in between (see :class:`AutoFlow`); any other value, or a changed flow, is scored by
``flow.log_prob``, which is always right. Pyro is needed only by this module:
``import flowtorch.interop`` does not import it.

References: Kucukelbir et al., "Automatic Differentiation Variational Inference", JMLR 2017
(the map to the reals); Kingma et al., "Improved Variational Inference with Inverse
Autoregressive Flow", 2016 (the default flow); Bingham et al., "Pyro: Deep Universal
Probabilistic Programming", JMLR 2019.

Example:
    >>> import torch, pyro
    >>> import pyro.distributions as pdist
    >>> from flowtorch.interop.autoguide import AutoFlow
    >>> def model():
    ...     pyro.sample("scale", pdist.HalfCauchy(1.0))
    >>> pyro.clear_param_store()  # names are global in Pyro: a guide's parameters live there
    >>> guide = AutoFlow(model)
    >>> sorted(guide())
    ['scale']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import pyro  # type: ignore[import-not-found]
import pyro.distributions as pdist  # type: ignore[import-not-found]
import torch
from pyro import poutine  # type: ignore[import-not-found]
from pyro.distributions.torch_distribution import TorchDistribution  # type: ignore[import-not-found]
from pyro.distributions.util import sum_rightmost  # type: ignore[import-not-found]
from pyro.infer.autoguide import AutoContinuous  # type: ignore[import-not-found]
from pyro.infer.autoguide.initialization import init_to_feasible  # type: ignore[import-not-found]
from torch.distributions import biject_to, constraints, kl

from flowtorch.distributions.flow import Flow
from flowtorch.interop import to_transform
from flowtorch.recipes import IAF

__all__ = ["AutoFlow", "default_flow"]


def default_flow(latent_dim: int) -> Any:
    r"""The plan ``AutoFlow`` uses when given none: an inverse autoregressive flow (IAF).

    Two :func:`~flowtorch.recipes.IAF` layers, each with a MADE of two hidden layers of
    :math:`\max(3D + 1, 32)` units (:math:`D` is the latent dimension; Pyro's
    ``AutoIAFNormal`` uses one layer of :math:`3D + 1`):

    .. math:: u_i = \big(x_i - \mu_i(x_{<i})\big)\, e^{-s_i(x_{<i})} \quad\text{in each layer.}

    Sampling and scoring the samples, what a guide does at every step, is one parallel pass
    per layer.

    Reference: Kingma et al., "Improved Variational Inference with Inverse Autoregressive
    Flow", 2016.

    Args:
        latent_dim: the number :math:`D` of unconstrained latent dimensions.

    Example:
        >>> import torch
        >>> from flowtorch.interop.autoguide import default_flow
        >>> flow = default_flow(4)(shape=torch.Size([4]))
        >>> [type(layer).__name__ for layer in flow.layers()]
        ['Invert', 'Invert']
    """
    hidden = max(3 * latent_dim + 1, 32)
    return IAF(layers=2, hidden_dims=(hidden, hidden))


# --------------------------------------------------------------------------- one draw's score
class _Draw:
    """A sample ``y`` of a flow and its log-density, with what that log-density depends on.

    The log-density of ``y`` is a function of the values of ``y`` and of the flow's parameters
    and buffers (and, for layers that behave differently in training, of the modules'
    ``training`` flags); its gradient also depends on which tensor objects those are. ``serve``
    hands it out only when all of that is as it was at the draw: the same objects with the same
    version counters and ``requires_grad``, and the same values, compared exactly, which also
    covers the writes that version counters do not show (a fused optimizer step, a write
    through ``.data``).
    """

    __slots__ = ("grad", "log_q", "objects", "state", "values", "y", "y_state", "y_value")

    def __init__(self, flow: Flow, y: torch.Tensor, log_q: torch.Tensor) -> None:
        self.y = y
        self.log_q = log_q
        self.grad = torch.is_grad_enabled()
        self.y_state = _tensor_state(y)
        self.y_value = y.detach().clone()
        self.objects, self.state = _module_state(flow)
        self.values = [t.detach().clone() for t in self.objects]

    def serve(self, flow: Flow, value: torch.Tensor) -> torch.Tensor | None:
        """The recorded log-density of ``value``, or ``None`` if it may no longer be right."""
        if value is not self.y or _tensor_state(value) != self.y_state:
            return None
        if torch.is_grad_enabled() and not self.grad and _needs_grad(flow, value):
            return None  # recorded without a graph, asked for one
        objects, state = _module_state(flow)
        if state != self.state or any(a is not b for a, b in zip(objects, self.objects)):
            return None
        if not _equal(value, self.y_value):
            return None
        if not all(_equal(t, v) for t, v in zip(objects, self.values)):
            return None
        log_q = self.log_q if torch.is_grad_enabled() else self.log_q.detach()
        return log_q.clone()  # the caller may write into what it gets


def _tensor_state(t: torch.Tensor) -> tuple[int, int, bool]:
    return (id(t.__dict__), t._version, t.requires_grad)


def _module_state(module: torch.nn.Module) -> tuple[list[torch.Tensor], list[Any]]:
    """The tensors a module computes with (parameters and buffers, every submodule's) and, for
    each module, its ``training`` flag and its tensors' ``__dict__`` ids, versions and
    ``requires_grad``; ``None`` slots count too."""
    tensors: list[torch.Tensor] = []
    state: list[Any] = []
    for m in module.modules():
        state.append(m.training)
        for slots in (m._parameters, m._buffers):
            for t in slots.values():
                if t is None:
                    state.append(None)
                    continue
                tensors.append(t)
                state.append(_tensor_state(t))
    return tensors, state


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _needs_grad(flow: Flow, value: torch.Tensor) -> bool:
    return value.requires_grad or any(p.requires_grad for p in flow.parameters())


# --------------------------------------------------------------------------- Pyro distributions
class _FlowPosterior(TorchDistribution):  # type: ignore[misc]
    r"""A flow over the guide's unconstrained latent vector, as a Pyro distribution.

    ``rsample`` draws with :meth:`~flowtorch.distributions.Flow.rsample_and_log_prob` (one forward
    pass) and keeps the log-density of that draw; ``log_prob`` of the very tensor returned serves
    it while it is still right (see ``_Draw``), and scores anything else with ``flow.log_prob``.
    ``pyro.plate`` expands it (vectorised particles, ``Predictive``); ``expand`` shares the flow.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012
    has_rsample = True

    def __init__(self, flow: Flow, batch_shape: torch.Size | None = None) -> None:
        self.flow = flow
        self._draw: _Draw | None = None
        super().__init__(torch.Size(batch_shape or ()), flow.event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return self.flow.support

    def expand(self, batch_shape: Any, _instance: Any = None) -> _FlowPosterior:
        return _FlowPosterior(self.flow, torch.Size(batch_shape))

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        y, log_q = self.flow.rsample_and_log_prob(torch.Size(sample_shape) + self.batch_shape)
        inference = torch.is_inference_mode_enabled() or y.is_inference()
        self._draw = None if inference else _Draw(self.flow, y, log_q)
        return y

    def sample(self, sample_shape: Any = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        draw = self._draw
        if draw is not None:
            served = draw.serve(self.flow, value)
            if served is not None:
                return served
        return self.flow.log_prob(value)

    def __repr__(self) -> str:
        return f"FlowPosterior(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)})"


class _SiteDelta(pdist.Delta):  # type: ignore[misc]
    """The point mass of a latent site at the value its unconstrained coordinates map to, with
    the log-density that the map contributes (``log_density``).

    Its own class so that the KL divergence below counts ``log_density``: the ELBO of a site
    is :math:`\\mathbb{E}_q[\\log q - \\log p]`, and Pyro's rule for ``Delta`` against a model
    distribution keeps only :math:`-\\log p(v)`, which for a constrained site leaves out the
    Jacobian of the map (``TraceMeanField_ELBO`` uses these KL rules).
    """


def _kl_site_delta(p: _SiteDelta, q: torch.distributions.Distribution) -> torch.Tensor:
    kl_pq: torch.Tensor = p.log_density - q.log_prob(p.v)
    return kl_pq


kl.register_kl(_SiteDelta, torch.distributions.Distribution)(_kl_site_delta)
kl.register_kl(_SiteDelta, pdist.Distribution)(_kl_site_delta)  # (Pyro's rule for Delta is against this)


# --------------------------------------------------------------------------- the guide
class AutoFlow(AutoContinuous):  # type: ignore[misc]
    r"""A Pyro autoguide whose posterior over all latent sites is a flowtorch flow.

    The analogue of Pyro's ``AutoIAFNormal`` and ``AutoNormalizingFlow`` for any flowtorch
    bijector, plan or recipe. As in Pyro's :class:`~pyro.infer.autoguide.AutoContinuous`, the
    latent sites are mapped to the reals and concatenated into one vector :math:`u` of
    dimension :math:`D`, whose posterior is ``Flow(N(0, I_D), bijector)``:

    .. math::
        \log q(\theta) = \log \mathcal N(\varepsilon; 0, I_D) - \log|\det J_f(\varepsilon)|
        - \sum_k \log|\det J_{T_k}(u_k)|, \qquad u = f(\varepsilon),\ \theta_k = T_k(u_k).

    Each guide call samples :math:`u` and its log-density in one forward pass through the flow
    (:meth:`~flowtorch.distributions.Flow.rsample_and_log_prob`), so an IAF-direction flow (the
    default, :func:`default_flow`) never runs its sequential inverse during training. Pyro
    scores the latent site (``Trace_ELBO``, ``TraceGraph_ELBO``, ``TraceMeanField_ELBO``,
    ``RenyiELBO``, importance sampling) by asking for the log-density of what it sampled; the
    guide serves the one it computed while sampling only for that very tensor, and only if the
    tensor, the flow's parameters and buffers (objects, version counters, ``requires_grad``,
    values) and the grad mode are as they were. Any other value (a replayed or conditioned
    trace, a sample written to, a flow changed by an optimizer step in between) is scored by
    ``flow.log_prob``. The constrained sites are point masses at :math:`T_k(u_k)` carrying
    :math:`-\log|\det J_{T_k}|`, counted under every ELBO, ``TraceMeanField_ELBO`` included.

    The flow is built on the first call (when the model's latent sites are known) as the
    submodule ``guide.flow``, on the device and dtype of the model's values. Its parameters are
    registered in Pyro's param store with ``pyro.module`` under ``"{name}.flow"`` at every call;
    where the store already holds values under those names (e.g. after
    ``pyro.get_param_store().load(...)``), the flow takes them. ``guide.state_dict()`` and
    ``torch.save(guide)`` save the guide; a state dict loads into a guide that has been called
    once.

    ``median`` and ``quantiles`` are the marginal quantiles of ``num_quantile_samples`` draws of
    :math:`u` (a flow has no closed form for them), from a fixed seed so that repeated calls
    agree, mapped to each site's support; ``sample_latent``, ``get_posterior``,
    ``get_base_dist`` and ``get_transform`` are Pyro's.

    Reference: Kucukelbir et al., "Automatic Differentiation Variational Inference", JMLR 2017;
    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", 2016.

    Args:
        model: the Pyro model.
        bijector: the flow's bijector: a plan (``bij.AffineAutoregressive(...)``,
            ``bij.Compose([...])``), a recipe (``flowtorch.recipes.IAF(...)``), a bijector class,
            a built bijector of shape ``(D,)``, or a function of :math:`D` that returns one of
            these. Default: :func:`default_flow`. A flow whose forward is sequential (a MAF)
            works but samples one dimension at a time; prefer the IAF direction.
        init_loc_fn: the initialisation of the model's values when the guide first traces the
            model, as for Pyro's ``AutoNormalizingFlow``; the flow starts where its own
            initialisation puts it (near :math:`\mathcal N(0, I_D)` for flowtorch's recipes,
            whose conditioners start near zero).
        num_quantile_samples: the number of draws behind ``median`` and ``quantiles``.

    Example:
        >>> import torch, pyro
        >>> import pyro.distributions as pdist
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> from flowtorch.interop.autoguide import AutoFlow
        >>> from flowtorch.recipes import IAF
        >>> def model(x):
        ...     loc = pyro.sample("loc", pdist.Normal(0.0, 10.0))
        ...     scale = pyro.sample("scale", pdist.HalfCauchy(5.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", pdist.Normal(loc, scale), obs=x)
        >>> pyro.clear_param_store()
        >>> _ = torch.manual_seed(0)
        >>> x = 3.0 + torch.randn(50)
        >>> guide = AutoFlow(model, IAF(layers=2, hidden_dims=(16, 16)))
        >>> elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.03}), elbo)
        >>> for step in range(150):
        ...     loss = svi.step(x)
        >>> abs(guide.median()["loc"] - x.mean()) < 0.3
        tensor(True)
    """

    def __init__(
        self,
        model: Callable[..., Any],
        bijector: Any = None,
        *,
        init_loc_fn: Callable[..., Any] = init_to_feasible,
        num_quantile_samples: int = 4096,
    ) -> None:
        if not (isinstance(num_quantile_samples, int) and num_quantile_samples > 0):
            raise ValueError(
                f"AutoFlow: num_quantile_samples must be a positive int, got {num_quantile_samples!r}"
            )
        super().__init__(model, init_loc_fn=init_loc_fn)
        self._bijector = bijector
        self.num_quantile_samples = num_quantile_samples

    # ----------------------------------------------------------------- building and registering
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        assert self.prototype_trace is not None
        values = [site["value"] for _, site in self.prototype_trace.iter_stochastic_nodes()]
        like = next((v for v in values if torch.is_tensor(v) and v.is_floating_point()), None)
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        device = like.device if like is not None else torch.device("cpu")
        d = self.latent_dim
        base = torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)), 1
        )
        plan = self._bijector
        if plan is None:
            plan = default_flow(d)
        elif _is_plan_function(plan):
            plan = plan(d)
        flow = Flow(base, plan)
        if flow.event_shape != (d,):
            raise ValueError(
                f"AutoFlow: the bijector maps to shape {tuple(flow.event_shape)}, but the guide's "
                f"latent vector has shape ({d},)"
            )
        self.flow = flow.to(device)

    def _flow(self) -> Flow:
        """The flow, registered in the param store (taking the values stored under its names)."""
        flow = self._modules.get("flow")
        if not isinstance(flow, Flow):
            raise RuntimeError(
                "AutoFlow: the flow is built on the first call, when the model's latent sites are "
                "known; call the guide once with the model's arguments first, e.g. guide(*args)"
            )
        name = self._pyro_get_fullname("flow")
        store = pyro.get_param_store()
        for key, p in flow.named_parameters():
            full = f"{name}$$${key}"
            if full in store and store[full].shape != p.shape:
                raise ValueError(
                    f"AutoFlow: Pyro's param store holds {full} of shape {tuple(store[full].shape)}, "
                    f"but this guide's flow needs {tuple(p.shape)}: a guide of the same name for "
                    "another model registered it; call pyro.clear_param_store() first"
                )
        pyro.module(name, flow, update_module_params=True)
        return flow

    # ----------------------------------------------------------------- AutoContinuous's interface
    def get_base_dist(self) -> Any:
        """The base distribution :math:`\\mathcal N(0, I_D)` as a Pyro distribution."""
        base = self._flow().base_dist
        return pdist.Normal(base.mean, base.stddev).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        """The flow's bijector as a ``torch.distributions.Transform`` (see
        :func:`flowtorch.interop.to_transform`): ``TransformedDistribution(get_base_dist(),
        get_transform())`` is the posterior over the latent vector."""
        return to_transform(self._flow().bijector)

    def get_posterior(self, *args: Any, **kwargs: Any) -> Any:
        """The posterior over the unconstrained latent vector, a Pyro distribution backed by the
        flow that samples and scores its own samples in one pass."""
        return _FlowPosterior(self._flow())

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Samples every latent site (called as ``guide(*args, **kwargs)``, with the model's
        arguments); returns a dict from site name to value."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        latent = self.sample_latent(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        values: dict[str, torch.Tensor] = {}
        for site, unconstrained in self._unpack_latent(latent):
            name, fn = site["name"], site["fn"]
            to_support = biject_to(fn.support)
            value = to_support(unconstrained)
            log_density: Any = 0.0
            if poutine.get_mask() is not False:
                # log q(value) = log q(u) - log|det dT/du|, summed over the site's event dims
                ladj = to_support.log_abs_det_jacobian(unconstrained, value)
                log_density = -sum_rightmost(ladj, ladj.dim() - value.dim() + fn.event_dim)
            with ExitStack() as stack:
                for frame in self._cond_indep_stacks[name]:
                    stack.enter_context(plates[frame.name])
                values[name] = pyro.sample(
                    name, _SiteDelta(value, log_density=log_density, event_dim=fn.event_dim)
                )
        return values

    # ----------------------------------------------------------------- summaries
    @torch.no_grad()
    def _draws(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``num_quantile_samples`` draws of the latent vector, from a fixed seed."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        flow = self._flow()
        base = flow.base_dist
        generator = torch.Generator(device=base.mean.device).manual_seed(0)
        shape = (self.num_quantile_samples, self.latent_dim)
        eps = torch.randn(shape, generator=generator, dtype=base.mean.dtype, device=base.mean.device)
        return flow.bijector.forward(base.mean + base.stddev * eps)

    def _constrain(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            site["name"]: biject_to(site["fn"].support)(unconstrained)
            for site, unconstrained in self._unpack_latent(latent)
        }

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """The posterior quantiles of each latent site, ``{name: tensor of shape (len(quantiles),
        *site_shape)}``: each coordinate's empirical quantiles of the unconstrained latent vector,
        mapped to the site's support (exact for elementwise maps such as ``exp``)."""
        draws = self._draws(*args, **kwargs)
        q = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device).reshape(-1)
        per_quantile = [self._constrain(row) for row in torch.quantile(draws, q, dim=0)]
        return {name: torch.stack([d[name] for d in per_quantile]) for name in per_quantile[0]}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median of each latent site, ``{name: value}`` (see :meth:`quantiles`)."""
        return self._constrain(torch.quantile(self._draws(*args, **kwargs), 0.5, dim=0))


def _is_plan_function(obj: Any) -> bool:
    """A function of the latent dimension, as opposed to a plan, a class or a built bijector."""
    from flowtorch.lazy import Plan

    return callable(obj) and not isinstance(obj, (Plan, type, torch.nn.Module))
