"""The named flows of ``flowtorch.interop.sbi``, built without ``sbi`` installed (the estimator is
then a plain module): their layout, and that they score and sample."""

from __future__ import annotations

import pytest
import torch

import flowtorch.bijectors as bij
from flowtorch.interop.sbi import build_estimator


def _batch(d: int = 2, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(n, d, generator=gen) * 4 + 1
    x = theta[:, :1] + torch.randn(n, 3, generator=gen)
    return theta, x


def test_nsf_coupling_has_the_layout_of_sbis_nsf() -> None:
    theta, x = _batch()
    est = build_estimator(theta, x, model="nsf_coupling", num_transforms=3, hidden_features=8, num_bins=4)
    layers = list(est.flow.bijector.bijectors)
    assert [type(b) for b in layers] == [bij.SplineCoupling, bij.LULinear] * 3
    assert [b.flip for b in layers[::2]] == [False, True, False]  # alternating halves
    assert all(b.count_bins == 4 and b.bound == 3.0 for b in layers[::2])
    z = torch.randn(4, 2)
    for lu in layers[1::2]:  # each LU layer starts as the identity: no permutation
        torch.testing.assert_close(lu.forward(z), z)


@pytest.mark.parametrize("model", ["nsf", "nsf_coupling", "maf"])
def test_each_named_model_scores_samples_and_trains(model: str) -> None:
    torch.manual_seed(0)
    theta, x = _batch()
    est = build_estimator(theta, x, model=model, num_transforms=2, hidden_features=16)
    lp = est.log_prob(theta[:5], x[:5])
    assert lp.shape == (1, 5) and torch.isfinite(lp).all()
    samples = est.sample((7,), x[:2])
    assert samples.shape == (7, 2, 2) and torch.isfinite(samples).all()
    # the log-density of its own samples is the one it reports with them
    s, lq = est.sample_and_log_prob((3,), x[:2])
    torch.testing.assert_close(lq, est.log_prob(s, x[:2]), atol=1e-4, rtol=1e-4)
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    first = -est.log_prob(theta, x).mean()
    for _ in range(30):
        opt.zero_grad()
        loss = -est.log_prob(theta, x).mean()
        loss.backward()
        opt.step()
    assert loss < first - 0.1


@pytest.mark.parametrize("model", ["nsf", "nsf_coupling"])
def test_a_one_dimensional_input_gets_layers_on_the_context_alone(model: str) -> None:
    theta, x = _batch(d=1)
    est = build_estimator(theta, x, model=model, num_transforms=2, hidden_features=8)
    assert [type(b) for b in est.flow.bijector.bijectors] == [bij.Spline, bij.Spline]
    assert est.log_prob(theta[:3], x[:3]).shape == (1, 3)


def test_an_unknown_model_name_lists_the_names() -> None:
    theta, x = _batch()
    with pytest.raises(ValueError, match="nsf_coupling"):
        build_estimator(theta, x, model="mdn")
