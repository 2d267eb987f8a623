"""Generic-test cases for the reshaping and combining bijectors and the channel coupling."""

from __future__ import annotations

import flowtorch.bijectors as bij
import flowtorch.parameters as params
from flowtorch.bijectors.channel_coupling import ChannelAffineCoupling
from flowtorch.bijectors.reshape import Reshape, Squeeze, Unsqueeze
from flowtorch.bijectors.reverse import Reverse
from flowtorch.core.combinators import Cat, FactorOut, Stack
from flowtorch.parameters.conv_coupling import ConvCoupling
from tests.case import Case

__all__ = ["CASES", "CUSTOM"]


def _made() -> object:
    return params.DenseAutoregressive(hidden_dims=(8,))


def _conv() -> object:
    return ConvCoupling(hidden_channels=4)


CUSTOM: set[str] = {"Reshape", "Squeeze", "Unsqueeze", "Cat", "Stack", "FactorOut", "ChannelAffineCoupling"}

CASES: list[Case] = [
    Case("Reshape[(3,)->(3,1)]", lambda: Reshape((3, 1)), shape=(3,)),
    Case("Reshape[(2,2)->(4,)]", lambda: Reshape((4,)), shape=(2, 2)),
    Case("Reshape[(2,3)->(3,-1)]", lambda: Reshape((3, -1)), shape=(2, 3)),
    Case("Squeeze[(1,4,4)]", lambda: Squeeze(), shape=(1, 4, 4)),
    Case("Squeeze[(2,6,3),factor=3]", lambda: Squeeze(3), shape=(2, 6, 3)),
    Case("Unsqueeze[(4,2,2)]", lambda: Unsqueeze(), shape=(4, 2, 2)),
    Case("Reverse[dim=0,(3,2)]", lambda: Reverse(0), shape=(3, 2)),
    Case("Cat[Exp,Affine]", lambda: Cat([bij.Exp(), bij.Affine()], lengths=[1, 2])),
    Case("Cat[Tanh,None,Spline]", lambda: Cat([bij.Tanh(), None, bij.Spline()])),
    Case(
        "Cat[MAF,Affine][context]",
        lambda: Cat([bij.AffineAutoregressive(_made()), bij.Affine()], lengths=[2, 1]),
        context=True,
    ),
    Case(
        "Cat[dim=-1,Affine,Invert(MAF)][context]",
        lambda: Cat([bij.Affine(), bij.Invert(bij.AffineAutoregressive(_made()))], dim=-1, lengths=[1, 2]),
        shape=(2, 3),
        context=True,
    ),
    Case("Stack[Exp,Affine,None]", lambda: Stack([bij.Exp(), bij.Affine(), None])),
    Case(
        "Stack[dim=0,MAF,Spline][context]",
        lambda: Stack([bij.AffineAutoregressive(_made()), bij.Spline()], dim=0),
        shape=(2, 3),
        context=True,
    ),
    Case("FactorOut[MAF]", lambda: FactorOut(bij.AffineAutoregressive(_made()), keep=2)),
    Case(
        "FactorOut[Invert(MAF)][context]",
        lambda: FactorOut(bij.Invert(bij.AffineAutoregressive(_made())), keep=2),
        context=True,
    ),
    Case(
        "FactorOut[Squeeze,Affine,Unsqueeze]",
        lambda: FactorOut(bij.Compose([Squeeze(), bij.Affine(), Unsqueeze()])),
        shape=(4, 2, 2),
    ),
    Case("ChannelAffineCoupling", lambda: ChannelAffineCoupling(_conv()), shape=(2, 2, 2)),
    Case(
        "ChannelAffineCoupling[3ch,identity=2][context]",
        lambda: ChannelAffineCoupling(_conv(), identity_channels=2),
        shape=(3, 2, 2),
        context=True,
    ),
]
