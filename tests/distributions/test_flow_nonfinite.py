"""NaN and inf in the data: one rule and one short error about the user's data.

The rule: ``Flow.log_prob`` raises the same ``ValueError`` for NaN and for inf in ``value`` (or
in ``context``) whenever anything validates, the flow (``validate_args=True``, torch's default)
or its base distribution (which would otherwise reject what the bijector made of the data);
with validation off everywhere, the log-density of those rows is NaN, as in
``torch.distributions``.
"""

from __future__ import annotations

import math

import pytest
import torch

import flowtorch.bijectors as bij
import flowtorch.distributions as dist
from flowtorch.recipes import MAF


def normal(validate: bool | None = None) -> torch.distributions.Distribution:
    normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3), validate_args=validate)
    return torch.distributions.Independent(normal, 1, validate_args=validate)


@pytest.mark.parametrize("validate", [True, False, None])
@pytest.mark.parametrize(("bad", "kind"), [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "inf")])
def test_one_short_error_for_nan_and_inf(validate: bool | None, bad: float, kind: str) -> None:
    """The user's report: a NaN in the data with validate_args=False raised from the base Normal,
    showing transformed values; with validation on, torch's message printed the whole flow."""
    torch.manual_seed(0)  # (the base validates, as by torch's default: an earlier test may change it)
    f = dist.Flow(normal(validate=True), MAF(layers=2, hidden_dims=(16,)), validate_args=validate)
    x = torch.randn(4, 3)
    x[1, 1] = bad
    with pytest.raises(ValueError) as info:
        f.log_prob(x)
    message = str(info.value)
    assert message == (
        f"Flow.log_prob: value has 1 non-finite entry (1 {kind}) out of 12, the first at index (1, 1). "
        "The data must be finite: ~torch.isfinite(value) finds them; fix or drop those rows before scoring"
    )
    assert info.value.__cause__ is None and "\n" not in message


def test_the_count_and_the_first_index() -> None:
    f = dist.Flow(normal(), bij.Affine(), validate_args=True)
    x = torch.zeros(5, 3)
    x[2, 0], x[2, 2], x[4, 1] = math.inf, math.nan, -math.inf
    with pytest.raises(
        ValueError, match=r"value has 3 non-finite entries \(1 NaN, 2 inf\) out of 15, .*\(2, 0\)"
    ):
        f.log_prob(x)


def test_a_bounded_support_does_not_hide_nan_as_outside() -> None:
    """Without validation, a point outside a bounded support scores -inf; NaN is not such a
    point: it gets the same error as on an unbounded support."""
    f = dist.Flow(normal(validate=True), bij.Compose([bij.Affine(), bij.Exp()]), validate_args=False)
    x = torch.ones(2, 3)
    x[0, 0] = -1.0  # outside the support: -inf, no error
    assert f.log_prob(x)[0] == -math.inf
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"value has 1 non-finite entry \(1 NaN\) .* \(1, 2\)"):
        f.log_prob(x)


def test_with_validation_off_everywhere_the_rows_are_nan() -> None:
    torch.manual_seed(0)
    f = dist.Flow(normal(validate=False), MAF(layers=2, hidden_dims=(16,)), validate_args=False)
    x = torch.randn(4, 3)
    x[1, 1] = math.nan
    lp = f.log_prob(x)
    assert torch.isnan(lp[1]) and torch.isfinite(lp[[0, 2, 3]]).all()


def test_finite_data_that_the_base_rejects_keeps_the_base_error() -> None:
    """Only non-finite *data* is reported as such; another error of the base stays its own."""
    base = torch.distributions.Independent(
        torch.distributions.Uniform(torch.zeros(3), torch.ones(3), validate_args=True), 1
    )
    f = dist.Flow(base, bij.AffineFixed(loc=0.0, scale=1.0), validate_args=False)
    with pytest.raises(ValueError, match=r"Expected value argument"):
        f.log_prob(torch.full((3,), 2.0))
