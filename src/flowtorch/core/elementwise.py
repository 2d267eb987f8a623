"""The elementwise wiring: a bijector that applies one transformer to every element of its event."""

from __future__ import annotations

import torch

from flowtorch.core.bijector import Bijector, Later, Params
from flowtorch.transformers import Transformer

__all__ = ["ElementwiseBijector"]


class ElementwiseBijector(Bijector, base=True):
    r"""A bijector :math:`y_i = g_{\theta_i}(x_i)` given by a :class:`~flowtorch.transformers.Transformer`.

    .. math:: \log|\det J| = \textstyle\sum_i \log g'_{\theta_i}(x_i).

    Subclasses set ``self.transformer`` before calling ``super().__init__`` and choose the
    conditioner: free parameters (``Affine``, ``Spline``), or an autoregressive one
    (``AffineAutoregressive``, ``SplineAutoregressive``, which also set
    ``conditioned_on_output``). Everything else (parameter shapes, both directions, the log-det)
    comes from the transformer.

    Reference: Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
    JMLR 2021, section 3.1 (transformer and conditioner).

    Example:
        >>> import torch
        >>> from flowtorch.core.elementwise import ElementwiseBijector
        >>> from flowtorch.parameters import Tensor
        >>> from flowtorch.transformers import AffineTransformer
        >>> class MyAffine(ElementwiseBijector):
        ...     def __init__(self, params_fn=Tensor(), *, shape, context_shape=None):
        ...         self.transformer = AffineTransformer()
        ...         super().__init__(params_fn, shape=shape, context_shape=context_shape)
        >>> b = MyAffine(shape=torch.Size([2]))
        >>> y, ladj = b.forward_and_ladj(torch.ones(5, 2))
        >>> y.shape, ladj.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    transformer: Transformer

    def param_shapes(self) -> tuple[torch.Size, ...]:
        return self.transformer.param_shapes(self.shape)

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer.forward(x, params)

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer.inverse(y, params)

    # the value alone: the deferred pass, whose log-derivative (a spline's) is left uncomputed
    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transformer.forward_deferred(x, params)[0]

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transformer.inverse_deferred(y, params)[0]

    def _forward_intermediate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transformer.forward_intermediate(x, params)

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transformer.log_derivative(x, params, y)

    def _forward_deferred(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        return self.transformer.forward_deferred(x, params)

    def _inverse_deferred(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, Later | None]:
        return self.transformer.inverse_deferred(y, params)

    def extra_repr(self) -> str:
        more = self.transformer.extra_repr()
        return f"{super().extra_repr()}, {more}" if more else super().extra_repr()
