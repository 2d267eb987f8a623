r"""Bijectors made of parts that act on slices of the event: ``Cat``, ``Stack`` and ``FactorOut``.

The event is cut along one event dim, part :math:`i` maps slice :math:`i`, and the results are
put back together:

.. math::
    y = \mathrm{join}\big(f_1(x_1), \dots, f_k(x_k)\big), \qquad
    \log|\det J| = \sum_i \log|\det J_{f_i}(x_i)|,

since the Jacobian is block diagonal. Each wrapper holds its parts built for their slices' event
shapes, passes the context to the conditional ones, and is itself a
:class:`~flowtorch.core.bijector.Bijector`: inside ``BijectiveMode`` each part records its own
entries, and the wrapper records one more on its joined output, so ``inverse`` on a joined
output returns the very input. With ``requires_ladj=False`` that entry keeps each part's
(input, output) pair, and a later ``log_abs_det_jacobian`` sums the parts' log-dets from their
own cache entries, without calling a conditioner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch.distributions import constraints

from flowtorch.core.bijector import Bijector, Costs, Params, build
from flowtorch.core.shapes import broadcast_shapes, swap_event

__all__ = ["Cat", "FactorOut", "Stack"]


def _event_dim(name: str, dim: int, rank: int) -> int:
    """``dim`` (negative: from the last event dim) as an index into an event of ``rank`` dims."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{name}: dim must be an int, got {dim!r}")
    if not -rank <= dim < rank:
        raise ValueError(f"{name}: dim={dim} is out of range for an event of {rank} dims")
    return dim % rank


def _is_real(c: constraints.Constraint) -> bool:
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    return isinstance(c, type(constraints.real))


class _Slices(constraints.Constraint):
    """The constraint of an event whose slices along ``dim`` satisfy one constraint each."""

    def __init__(
        self, parts: Sequence[constraints.Constraint], dim: int, lengths: Sequence[int] | None, event_dim: int
    ) -> None:
        self.parts = tuple(parts)
        self.dim = dim  # negative, counted from the last dim
        self.lengths = None if lengths is None else tuple(lengths)  # None: one slice per index
        self._event_dim = event_dim
        super().__init__()

    @property
    def event_dim(self) -> int:  # type: ignore[override]
        return self._event_dim

    def check(self, value: torch.Tensor) -> torch.Tensor:
        pieces = value.unbind(self.dim) if self.lengths is None else value.split(self.lengths, self.dim)
        ok: torch.Tensor | None = None
        for c, piece in zip(self.parts, pieces):
            r = c.check(piece)
            ok = r if ok is None else ok & r
        assert ok is not None
        return ok


class _Calls:
    """A wrapper's "parameters": the context for its parts and, after a call that computed no
    log-det, each part's ``(x_i, y_i)`` pair and the call's direction, so that a later log-det
    hits the parts' own cache entries."""

    __slots__ = ("context", "forward", "pairs")

    def __init__(self, context: torch.Tensor | None) -> None:
        self.context = context
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.forward = True


def _broadcast(pieces: Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Expands ``batch_i + event_i`` pieces to a common batch (a context may widen some)."""
    batches = [p.shape[: p.dim() - n] for p in pieces]
    if all(b == batches[0] for b in batches):
        return list(pieces)
    batch = broadcast_shapes(*batches)
    return [p.expand(batch + p.shape[p.dim() - n :]) for p in pieces]


class _Parts(Bijector):
    """Shared machinery: build one part per slice, split, apply, join, sum the log-dets.

    Subclasses give the slices' event shapes and write ``_split``, ``_join`` and ``_out_event``.
    A part may be ``None``: that slice passes through unchanged.
    """

    dim: int  # the event dim that is cut, counted from the first event dim

    def __new__(cls, bijectors: Any = (), *args: Any, **kwargs: Any) -> Any:
        # built parts imply the event shape (``Cat([a, b])`` of built bijectors builds at once)
        parts = _all_built(bijectors) if kwargs.get("shape") is None else None
        if parts is not None:
            shape = cls._shape_of(parts, kwargs.get("dim", args[0] if args else 0))
            if shape is not None:
                kwargs["shape"] = shape
        return super().__new__(cls, bijectors, *args, **kwargs)

    @staticmethod
    def _shape_of(parts: Sequence[Bijector], dim: int) -> torch.Size | None:
        """The event shape that built ``parts`` imply, where the class can tell (else ``None``)."""
        return None

    def __init__(
        self,
        plans: Sequence[Any],
        sub_shapes: Sequence[torch.Size],
        *,
        shape: torch.Size,
        context_shape: torch.Size | tuple[int, ...] | None,
    ) -> None:
        name = type(self).__name__
        parts: list[Bijector | None] = []
        for plan, s in zip(plans, sub_shapes):
            if plan is None:
                parts.append(None)
                continue
            part = build(plan, shape=s, context_shape=context_shape)
            if not isinstance(part, Bijector):
                raise TypeError(f"{name} takes bijectors or their plans, got {type(part).__name__}")
            if part.shape != s:
                raise ValueError(
                    f"{name}: {type(part).__name__} acts on shape {tuple(part.shape)}, but its slice of "
                    f"the event has shape {tuple(s)}"
                )
            parts.append(part)
        if all(p is None for p in parts):
            raise ValueError(f"{name} needs at least one bijector")
        out_subs = [s if p is None else p.out_shape for p, s in zip(parts, sub_shapes)]
        for p, s, o in zip(parts, sub_shapes, out_subs):
            if len(o) != len(s):
                raise ValueError(
                    f"{name}: {type(p).__name__} maps its slice of shape {tuple(s)} to {tuple(o)}; "
                    "the parts must keep the number of event dims"
                )
        super().__init__(None, shape=shape, out_shape=self._out_event(out_subs))
        self.bijectors = torch.nn.ModuleList(p for p in parts if p is not None)
        self._has_part = tuple(p is not None for p in parts)
        contexts = {p.context_shape for p in parts if p is not None and p.context_shape is not None}
        if len(contexts) > 1:
            raise ValueError(
                f"{name}: the parts take different context shapes {sorted(map(tuple, contexts))}"
            )
        self.context_shape = next(iter(contexts), None)
        ins = [constraints.independent(constraints.real, len(s)) if p is None else p.domain
               for p, s in zip(parts, sub_shapes)]  # fmt: skip
        outs = [constraints.independent(constraints.real, len(o)) if p is None else p.codomain
                for p, o in zip(parts, out_subs)]  # fmt: skip
        self.domain: constraints.Constraint = self._constraint(ins, len(self.shape), True)
        self.codomain: constraints.Constraint = self._constraint(outs, len(self.out_shape), False)

    # ------------------------------------------------------------------ for subclasses
    def _out_event(self, out_subs: Sequence[torch.Size]) -> torch.Size:
        raise NotImplementedError

    def _split(self, value: torch.Tensor, forward: bool) -> Sequence[torch.Tensor]:
        raise NotImplementedError

    def _join(self, pieces: Sequence[torch.Tensor], forward: bool) -> torch.Tensor:
        raise NotImplementedError

    def _lengths(self, forward: bool) -> tuple[int, ...] | None:
        return None

    # ------------------------------------------------------------------ machinery
    def _constraint(
        self, parts: Sequence[constraints.Constraint], rank: int, forward: bool
    ) -> constraints.Constraint:
        if all(_is_real(c) for c in parts):
            return constraints.independent(constraints.real, rank)
        return _Slices(parts, self.dim - rank, self._lengths(forward), rank)

    def _built(self) -> Iterator[Bijector]:
        return cast("Iterator[Bijector]", iter(self.bijectors))

    def parts(self) -> Iterator[Bijector | None]:
        """One entry per slice: its bijector, or ``None`` for a slice passed through unchanged."""
        it = self._built()
        return iter([next(it) if has else None for has in self._has_part])

    def _cacheable(self) -> bool:
        return all(b._cacheable() for b in self._built())

    def _raw_event_dim(self) -> int:
        return len(self.shape)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return swap_event(type(self).__name__, shape, self.shape, self.out_shape)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return swap_event(type(self).__name__, shape, self.out_shape, self.shape)

    def _params(self, input: torch.Tensor | None, context: torch.Tensor | None) -> Params:
        return _Calls(context)

    def _run(
        self, value: torch.Tensor, calls: _Calls, forward: bool, need_ladj: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs: list[torch.Tensor] = []
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        total: torch.Tensor | None = None
        for part, piece in zip(self.parts(), self._split(value, forward)):
            if part is None:
                outs.append(piece)
                continue
            c = calls.context if part.context_shape is not None else None
            if need_ladj:
                out, ladj = part.forward_and_ladj(piece, c) if forward else part.inverse_and_ladj(piece, c)
                total = ladj if total is None else total + ladj
            else:
                out = part.forward(piece, c) if forward else part.inverse(piece, c)
                pairs.append((piece, out) if forward else (out, piece))
            outs.append(out)
        calls.pairs = None if need_ladj else pairs
        calls.forward = forward
        return self._join(outs, forward), total

    def _forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self._run(x, params, True, False)[0]

    def _inverse(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._run(y, params, False, False)[0]

    def _forward_and_ladj(self, x: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        y, ladj = self._run(x, params, True, True)
        assert ladj is not None
        return y, ladj

    def _inverse_and_ladj(self, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj = self._run(y, params, False, True)
        assert ladj is not None
        return x, ladj

    def _log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        calls: _Calls = params
        pairs = calls.pairs
        if pairs is None:  # not recorded: slice the values
            split = zip(self.parts(), self._split(x, True), self._split(y, False))
            pairs = [(xi, yi) for part, xi, yi in split if part is not None]
        total: torch.Tensor | None = None
        for part, (xi, yi) in zip(self._built(), pairs):
            c = calls.context if part.context_shape is not None else None
            if calls.pairs is not None and not calls.forward:
                # recorded by ``part.inverse``: walking forward from x_i hits every entry, even
                # inside a Compose (whose log_abs_det_jacobian walks back from y_i)
                ladj = part.forward_and_ladj(xi, c)[1]
            else:
                ladj = part.log_abs_det_jacobian(xi, yi, c)
            total = ladj if total is None else total + ladj
        assert total is not None
        return total

    def extra_repr(self) -> str:
        s = f"shape={tuple(self.shape)}, dim={self.dim}"
        lengths = self._lengths(True)
        return s if lengths is None else f"{s}, lengths={lengths}"


class _Concat(_Parts):
    """Slices of given lengths along an event dim, joined by concatenation."""

    def __init__(
        self,
        plans: Sequence[Any],
        dim: int,
        lengths: Sequence[int],
        *,
        shape: torch.Size,
        context_shape: torch.Size | tuple[int, ...] | None,
    ) -> None:
        name = type(self).__name__
        d = _event_dim(name, dim, len(shape))
        lengths = tuple(int(n) for n in lengths)
        if len(lengths) != len(plans):
            raise ValueError(f"{name}: {len(plans)} bijectors but {len(lengths)} lengths")
        if any(n < 1 for n in lengths) or sum(lengths) != shape[d]:
            raise ValueError(
                f"{name}: lengths {list(lengths)} must be positive and sum to {shape[d]}, the size of "
                f"event dim {d} of shape {tuple(shape)}"
            )
        self.dim = d
        self.lengths = lengths
        self._offset = d - len(shape)
        sub_shapes = [shape[:d] + torch.Size([n]) + shape[d + 1 :] for n in lengths]
        super().__init__(plans, sub_shapes, shape=shape, context_shape=context_shape)

    def _out_event(self, out_subs: Sequence[torch.Size]) -> torch.Size:
        d = self.dim
        first = out_subs[0]
        for o in out_subs:
            if o[:d] != first[:d] or o[d + 1 :] != first[d + 1 :]:
                raise ValueError(
                    f"{type(self).__name__}: the parts' outputs {[tuple(o) for o in out_subs]} differ "
                    f"outside dim {d}, so they cannot be concatenated"
                )
        self.out_lengths = tuple(o[d] for o in out_subs)
        return first[:d] + torch.Size([sum(self.out_lengths)]) + first[d + 1 :]

    def _lengths(self, forward: bool) -> tuple[int, ...]:
        return self.lengths if forward else self.out_lengths

    def _split(self, value: torch.Tensor, forward: bool) -> Sequence[torch.Tensor]:
        pieces: tuple[torch.Tensor, ...] = value.split(self._lengths(forward), self._offset)
        return pieces

    def _join(self, pieces: Sequence[torch.Tensor], forward: bool) -> torch.Tensor:
        return torch.cat(_broadcast(pieces, len(self.shape)), self._offset)


def _all_built(bijectors: Any) -> list[Bijector] | None:
    parts = list(bijectors) if isinstance(bijectors, (list, tuple)) else None
    if parts and all(isinstance(b, Bijector) for b in parts):
        return parts
    return None


class Cat(_Concat):
    r"""Applies bijector :math:`i` to slice :math:`i` of the event along event dim ``dim`` and
    concatenates the results (as ``torch.distributions.CatTransform``):

    .. math::
        y = \mathrm{cat}\big(f_1(x_{[0, l_1)}), f_2(x_{[l_1, l_1 + l_2)}), \dots\big), \qquad
        \log|\det J| = \sum_i \log|\det J_{f_i}|.

    Part :math:`i` is built for the event shape of its slice (``shape`` with ``lengths[i]`` at
    ``dim``) and gets the context if it is conditional. Parts may change the size of ``dim``
    (then ``inverse`` cuts ``y`` at the output lengths) but no other dim.

    Reference: ``torch.distributions.transforms.CatTransform`` (PyTorch documentation), the same
    construction for torch transforms.

    Args:
        bijectors: plans or built bijectors, one per slice; ``None`` passes its slice through.
        dim: the event dim to cut: non-negative counts from the first event dim, negative from
            the last (unlike ``CatTransform``, whose ``dim`` counts tensor dims).
        lengths: the size of each slice along ``dim``; default the built parts' sizes, or 1 for
            each plan.

    Shapes: ``x`` is ``batch + shape``; the log-det has shape ``batch`` (broadcast with the
    context's batch).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.combinators import Cat
        >>> b = Cat([bij.Exp(), bij.AffineFixed(scale=2.0)], lengths=[1, 2])(shape=torch.Size([3]))
        >>> y, ladj = b.forward_and_ladj(torch.zeros(3))
        >>> y, round(ladj.item(), 4)
        (tensor([1., 0., 0.]), 1.3863)
    """

    costs = Costs("as its parts", "sum of its parts", "sum of its parts", "sum of its parts")

    @staticmethod
    def _shape_of(parts: Sequence[Bijector], dim: int) -> torch.Size | None:
        first = parts[0].shape
        d = _event_dim("Cat", dim, len(first))
        return first[:d] + torch.Size([sum(p.shape[d] for p in parts)]) + first[d + 1 :]

    def __init__(
        self,
        bijectors: Sequence[Any],
        dim: int = 0,
        lengths: Sequence[int] | None = None,
        *,
        shape: torch.Size | tuple[int, ...] | None = None,
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        plans = list(bijectors)
        if not plans:
            raise ValueError("Cat needs at least one bijector")
        if shape is None:  # all built: ``Cat([b1, b2])``
            shape = self._shape_of(plans, dim)
        assert shape is not None  # Cat and Stack always tell
        shape = torch.Size(shape)
        if lengths is None:
            d = _event_dim("Cat", dim, len(shape))
            lengths = [p.shape[d] if isinstance(p, Bijector) else 1 for p in plans]
        super().__init__(plans, dim, lengths, shape=shape, context_shape=context_shape)


class FactorOut(_Concat):
    r"""Applies ``bijector`` to the first ``keep`` entries of the event along ``dim`` and passes
    the rest through unchanged:

    .. math::
        y = \mathrm{cat}\big(f(x_{[0, k)}),\; x_{[k, n)}\big), \qquad \log|\det J| = \log|\det J_f|.

    This is the multi-scale architecture of RealNVP and Glow written as one bijector. Read in
    the direction data :math:`\to` latent, a scale squeezes the image, runs some steps, then
    *factors out* half of the channels: they leave the flow and go straight to the base
    distribution, while the other half goes on to the next, coarser scale::

        scale = lambda inner: Compose([Squeeze(), *steps(), FactorOut(inner), Unsqueeze()])
        encoder = scale(scale(Compose([Squeeze(), *steps(), Unsqueeze()])))

    Design choices:

    * ``FactorOut`` keeps the event shape (the factored-out part is concatenated back, not
      returned separately), so the whole flow is an ordinary bijector from ``(C, H, W)`` to
      ``(C, H, W)`` with one base distribution over the full event, and ``Compose``, ``Invert``,
      ``Flow`` and ``BijectiveMode`` need nothing special. The latent of a factored-out channel
      sits where that channel was; a diagonal base does not care where.
    * The inner bijector sees only its slice, with its own event shape, so it may be any
      bijector or plan, including another ``FactorOut`` and shape-changing layers as long as it
      maps its slice back to a slice of the same shape except possibly along ``dim``; ending a
      scale with :class:`~flowtorch.bijectors.reshape.Unsqueeze` restores the scale's shape.
    * Factoring out costs nothing: the passed-through part has no Jacobian term and, in the
      generative direction, no computation. The inner bijector gets the context if conditional.

    References: Dinh et al., "Density estimation using Real NVP", 2017 (section 3.6); Kingma and
    Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018.

    Args:
        bijector: the plan (or built bijector) for the kept slice.
        dim: the event dim to cut (0: channels of a ``(C, H, W)`` event, the only dim of a vector).
        keep: how many entries along ``dim`` go through ``bijector``; default half, rounded down.

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.combinators import FactorOut
        >>> b = FactorOut(bij.AffineFixed(scale=3.0), keep=1)(shape=torch.Size([4, 2, 2]))
        >>> y, ladj = b.forward_and_ladj(torch.ones(4, 2, 2))
        >>> y[:, 0, 0].tolist(), round(ladj.item(), 4)
        ([3.0, 1.0, 1.0, 1.0], 4.3944)
    """

    costs = Costs(
        "as its inner bijector",
        "the inner bijector on its slice",
        "the inner bijector on its slice",
        "the inner bijector's",
        reference="Dinh et al. 2017 (multi-scale architecture)",
    )

    def __init__(
        self,
        bijector: Any,
        dim: int = 0,
        keep: int | None = None,
        *,
        shape: torch.Size | tuple[int, ...],
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        shape = torch.Size(shape)
        d = _event_dim("FactorOut", dim, len(shape))
        n = shape[d]
        keep = n // 2 if keep is None else keep
        if isinstance(keep, bool) or int(keep) != keep or not 1 <= keep < n:
            raise ValueError(
                f"FactorOut: keep must be an integer in [1, {n - 1}] for event dim {d} of size {n} "
                f"(shape {tuple(shape)}), got {keep!r}"
            )
        self.keep = int(keep)
        super().__init__(
            [bijector, None], d, [self.keep, n - self.keep], shape=shape, context_shape=context_shape
        )

    @property
    def bijector(self) -> Bijector:
        """The bijector applied to the kept slice."""
        return next(self._built())


class Stack(_Parts):
    r"""Applies bijector :math:`i` to index :math:`i` of event dim ``dim`` and stacks the results
    (as ``torch.distributions.StackTransform``):

    .. math::
        y_{\ldots, i, \ldots} = f_i(x_{\ldots, i, \ldots}), \qquad
        \log|\det J| = \sum_i \log|\det J_{f_i}|.

    Part :math:`i` is built for the event shape without ``dim`` and gets the context if it is
    conditional; the parts' output shapes must agree.

    Reference: ``torch.distributions.transforms.StackTransform`` (PyTorch documentation), the same
    construction for torch transforms.

    Args:
        bijectors: plans or built bijectors, one per index of ``dim``; ``None`` passes it through.
        dim: the event dim to unstack (as for :class:`Cat`).

    Example:
        >>> import torch
        >>> import flowtorch.bijectors as bij
        >>> from flowtorch.core.combinators import Stack
        >>> b = Stack([bij.Exp(), None], dim=-1)(shape=torch.Size([3, 2]))
        >>> b.forward(torch.zeros(3, 2))
        tensor([[1., 0.],
                [1., 0.],
                [1., 0.]])
    """

    costs = Costs("as its parts", "sum of its parts", "sum of its parts", "sum of its parts")

    @staticmethod
    def _shape_of(parts: Sequence[Bijector], dim: int) -> torch.Size | None:
        sub = parts[0].shape
        d = _event_dim("Stack", dim, len(sub) + 1)
        return sub[:d] + torch.Size([len(parts)]) + sub[d:]

    def __init__(
        self,
        bijectors: Sequence[Any],
        dim: int = 0,
        *,
        shape: torch.Size | tuple[int, ...] | None = None,
        context_shape: torch.Size | tuple[int, ...] | None = None,
    ) -> None:
        plans = list(bijectors)
        if not plans:
            raise ValueError("Stack needs at least one bijector")
        if shape is None:  # all built: ``Stack([b1, b2])``
            shape = self._shape_of(plans, dim)
        assert shape is not None  # Cat and Stack always tell
        shape = torch.Size(shape)
        d = _event_dim("Stack", dim, len(shape))
        if shape[d] != len(plans):
            raise ValueError(
                f"Stack: {len(plans)} bijectors for event dim {d} of size {shape[d]} (shape {tuple(shape)})"
            )
        self.dim = d
        self._offset = d - len(shape)
        sub = shape[:d] + shape[d + 1 :]
        super().__init__(plans, [sub] * len(plans), shape=shape, context_shape=context_shape)

    def _out_event(self, out_subs: Sequence[torch.Size]) -> torch.Size:
        if any(o != out_subs[0] for o in out_subs):
            raise ValueError(
                f"Stack: the parts' outputs {[tuple(o) for o in out_subs]} differ, so they cannot be stacked"
            )
        return out_subs[0][: self.dim] + torch.Size([len(out_subs)]) + out_subs[0][self.dim :]

    def _split(self, value: torch.Tensor, forward: bool) -> Sequence[torch.Tensor]:
        return value.unbind(self._offset)

    def _join(self, pieces: Sequence[torch.Tensor], forward: bool) -> torch.Tensor:
        return torch.stack(_broadcast(pieces, len(self.shape) - 1), self._offset)
