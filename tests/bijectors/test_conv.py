"""Invertible1x1Conv: the maths against conv2d with the same weight, and a peer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowtorch.bijectors.conv import Invertible1x1Conv

DT = torch.float64


def conv(seed: int = 0, **kwargs: object) -> Invertible1x1Conv:
    torch.manual_seed(seed)
    b = Invertible1x1Conv(identity_init=False, **kwargs)(shape=torch.Size([2, 4, 4])).to(DT)
    with torch.no_grad():
        b.unconstrained_diag.normal_(0.0, 0.5)
    return b


def test_conv_matches_conv2d_with_the_same_weight() -> None:
    b = conv(bias=True)
    with torch.no_grad():
        b.bias.normal_()  # type: ignore[union-attr]
    w = b.weight()
    x = torch.randn(3, 2, 4, 4, dtype=DT)
    y, ladj = b.forward_and_ladj(x)
    torch.testing.assert_close(y, F.conv2d(x, w.view(2, 2, 1, 1), b.bias))
    torch.testing.assert_close(ladj, (16 * torch.linalg.slogdet(w)[1]).expand(3))
    x2, ladj2 = b.inverse_and_ladj(y)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj2, ladj)
    inv = torch.linalg.inv(w).view(2, 2, 1, 1)
    torch.testing.assert_close(x2, F.conv2d(y - b.bias.view(2, 1, 1), inv))  # type: ignore[union-attr]
    # eval mode uses the cached inverse weight
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b.inverse(y), x)
        assert b._inverse_cache is not None
    # sample and batch dims, and a leading event dim
    x3 = torch.randn(2, 3, 2, 4, 4, dtype=DT)
    torch.testing.assert_close(
        b.forward(x3).reshape(6, 2, 4, 4), F.conv2d(x3.reshape(6, 2, 4, 4), w.view(2, 2, 1, 1), b.bias)
    )


@pytest.mark.filterwarnings("ignore:torch.lu is deprecated")
def test_conv_matches_normflows_invertible_1x1_conv() -> None:
    nf = pytest.importorskip("normflows")
    torch.manual_seed(0)
    peer = nf.flows.Invertible1x1Conv(3, use_lu=True).to(DT)
    with torch.no_grad():
        peer.sign_S.fill_(1.0)  # our diagonal is positive; theirs carries fixed signs
        peer.L.add_(0.3 * torch.randn(3, 3, dtype=DT))
        peer.U.add_(0.3 * torch.randn(3, 3, dtype=DT))
    perm = peer.P.argmax(1)  # (P v)_i = v_{perm[i]}
    b = Invertible1x1Conv(permutation=perm, diag_activation="exp")(shape=torch.Size([3, 5, 4])).to(DT)
    with torch.no_grad():
        b.lower.copy_(peer.L)
        b.upper.copy_(peer.U)
        b.unconstrained_diag.copy_(peer.log_S)
    torch.testing.assert_close(b.weight(), peer._assemble_W())
    x = torch.randn(6, 3, 5, 4, dtype=DT)
    y, ladj = b.forward_and_ladj(x)
    y_peer, ladj_peer = peer.inverse(x)  # normflows' inverse applies W, its forward W^{-1}
    x_peer, ladj_inv_peer = peer.forward(y)
    diffs = {
        "y": (y - y_peer).abs().max().item(),
        "ladj": (ladj - ladj_peer).abs().max().item(),
        "x": (b.inverse(y) - x_peer).abs().max().item(),
        "ladj_inv": (ladj + ladj_inv_peer).abs().max().item(),
    }
    print("normflows Invertible1x1Conv max abs differences:", diffs)
    assert max(diffs.values()) < 1e-10
