"""What users of nflows and zuko type first, on a flowtorch ``Flow``: what works, and what is
refused with flowtorch's spelling in the error."""

from __future__ import annotations

import pytest
import torch

import flowtorch.distributions as dist
from flowtorch.recipes import MAF


def conditional_maf() -> dist.Flow:
    torch.manual_seed(0)
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    return dist.Flow(base, MAF(layers=2, hidden_dims=(8,)), context_shape=(1,))


def test_nflows_sample_and_log_prob_unconditional() -> None:
    """nflows: ``samples, log_prob = flow.sample_and_log_prob(num_samples)``."""
    base = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    flow = dist.Flow(base, MAF(layers=2, hidden_dims=(8,)))
    samples, log_prob = flow.sample_and_log_prob(10)
    assert samples.shape == (10, 3) and log_prob.shape == (10,)
    assert samples.requires_grad  # reparametrised, as nflows' are
    torch.testing.assert_close(log_prob, flow.log_prob(samples))
    samples, log_prob = flow.sample_and_log_prob(num_samples=4)
    assert samples.shape == (4, 3)


def test_nflows_sample_and_log_prob_with_one_context() -> None:
    flow = conditional_maf()
    c = torch.tensor([0.5])
    samples, log_prob = flow.sample_and_log_prob(6, context=c)
    assert samples.shape == (6, 2) and log_prob.shape == (6,)
    torch.testing.assert_close(log_prob, flow.log_prob(samples, context=c))


def test_nflows_sample_and_log_prob_with_a_batch_of_contexts_names_both_orders() -> None:
    """nflows returns (contexts, num_samples, ...), flowtorch (num_samples, contexts, ...): the
    call is refused rather than answered in the order the user did not expect."""
    flow = conditional_maf()
    c = torch.randn(4, 1)
    with pytest.raises(ValueError, match=r"the context has batch dims \(4,\)") as info:
        flow.sample_and_log_prob(3, context=c)
    assert "flow.rsample_and_log_prob((num_samples,), context)" in str(info.value)
    assert ".movedim(0, 1)" in str(info.value)
    # the two spellings the message gives
    samples, log_prob = flow.rsample_and_log_prob((3,), c)
    assert samples.shape == (3, 4, 2) and log_prob.shape == (3, 4)
    nflows_samples, nflows_log_prob = samples.movedim(0, 1), log_prob.movedim(0, 1)
    assert nflows_samples.shape == (4, 3, 2) and nflows_log_prob.shape == (4, 3)
    torch.testing.assert_close(nflows_log_prob[2], flow.log_prob(nflows_samples[2], context=c[2]))
    with pytest.raises(ValueError, match="batch dims"):
        flow.condition(c).sample_and_log_prob(3)


def test_nflows_sample_with_an_int_says_to_give_a_tuple() -> None:
    flow = conditional_maf()
    with pytest.raises(TypeError, match=r"e\.g\. \(100,\), got the int 100"):
        flow.sample(100, torch.randn(4, 1))
    assert flow.sample((100,), torch.randn(4, 1)).shape == (100, 4, 2)
    # nflows' log_prob(inputs, context) positionally is flowtorch's log_prob(value, context)
    assert flow.log_prob(torch.randn(4, 2), torch.randn(4, 1)).shape == (4,)


def test_zuko_flow_of_context_names_condition() -> None:
    """zuko: ``flow(c).log_prob(x)``, ``flow(c).rsample((n,))``; in flowtorch calling a flow
    samples (Pyro's contract), and ``flow.condition(c)`` is the distribution given ``c``."""
    flow = conditional_maf()
    x, c = torch.randn(8, 2), torch.randn(8, 1)
    with pytest.raises(TypeError, match=r"zuko's flow\(c\)\), use flow\.condition\(c\)"):
        flow(c).log_prob(x)
    with pytest.raises(TypeError, match=r"flow\.condition\(c\)\.rsample\(\(n,\)\)"):
        flow(c).rsample((16,))
    assert flow.condition(c).log_prob(x).shape == (8,)
    assert flow.condition(c).rsample((16,)).shape == (16, 8, 2)
    y, log_p = flow.condition(c).rsample_and_log_prob((16,))  # zuko's name too
    assert y.shape == (16, 8, 2) and log_p.shape == (16, 8)
    assert flow((3,), context=c).shape == (3, 8, 2)  # calling samples, as Pyro does
