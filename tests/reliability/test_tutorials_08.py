"""flowtorch 0.8's tutorials, run as 0.8 published them, with 0.8's own results as the bar.

Each tutorial's code is kept below as text, copied from the flowtorch 0.8 repository
(``website/docs/users/start.mdx`` and ``tutorials/*.ipynb``, the commit before the code was
deleted) with its plotting cells left out (their ``sample`` calls kept as assignments, to be
checked) and trailing spaces trimmed, and run with ``exec`` so that nothing in it is reformatted.
The full-length runs take minutes and are marked ``slow``:
``FLOWTORCH_SLOW=1 pytest tests/reliability/test_tutorials_08.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

# "Your First Flow": the getting-started page, and learn_bivariate_normal.ipynb, cell for cell.
YOUR_FIRST_FLOW = """
import torch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
base_dist = torch.distributions.Independent(
  torch.distributions.Normal(torch.zeros(2), torch.ones(2)),
  1
)
target_dist = torch.distributions.Independent(
  torch.distributions.Normal(torch.zeros(2)+5, torch.ones(2)*0.5),
  1
)
# Lazily instantiated flow
bijectors = bij.AffineAutoregressive()
# Instantiate transformed distribution and parameters
flow = dist.Flow(base_dist, bijectors)
# Training loop
opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
for idx in range(3001):
    opt.zero_grad()

    # Minimize KL(p || q)
    y = target_dist.sample((1000,))
    loss = -flow.log_prob(y).mean()

    if idx % 500 == 0:
        print('epoch', idx, 'loss', loss)

    loss.backward()
    opt.step()
"""

# univariate_bijections.ipynb, its code cells without the plots.
UNIVARIATE = """
import torch
import flowtorch.bijectors as B
import flowtorch.distributions as D
dist_x = torch.distributions.Independent(
  torch.distributions.Normal(torch.zeros(1), torch.ones(1)),
  1
)
bijector = B.Exp()
dist_y = D.Flow(dist_x, bijector)
log_normal = dist_y.sample([1000])
bijector = B.Compose([
     B.AffineFixed(loc=3, scale=0.5),
     B.Exp()])
dist_y = D.Flow(dist_x, bijector)
shifted_log_normal = dist_y.sample([1000])
import numpy as np
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

n_samples = 1000
X, y = datasets.make_circles(n_samples=n_samples, factor=0.5, noise=0.05)
X = torch.Tensor(StandardScaler().fit_transform(X))
dist_x = torch.distributions.Independent(
  torch.distributions.Normal(torch.zeros(2), torch.ones(2)),
  1
)
bijector = B.Spline()
dist_y = D.Flow(dist_x, bijector)
optimizer = torch.optim.Adam(dist_y.parameters(), lr=1e-2)
for step in range(1001):
    optimizer.zero_grad()
    loss = -dist_y.log_prob(X).mean()
    loss.backward()
    optimizer.step()

    if step % 200 == 0:
        print('step: {}, loss: {}'.format(step, loss.item()))
"""

# multivariate_bijections.ipynb, its code cells without the plots.
MULTIVARIATE = """
import flowtorch.bijectors as B
import flowtorch.distributions as D
import numpy as np
import torch

from sklearn import datasets
from sklearn.preprocessing import StandardScaler

dist_x = torch.distributions.Independent(
  torch.distributions.Normal(torch.zeros(2), torch.ones(2)),
  1
)
bijector = B.SplineAutoregressive()
dist_y = D.Flow(dist_x, bijector)
n_samples = 1000
X, y = datasets.make_circles(n_samples=n_samples, factor=0.5, noise=0.05)
X = torch.Tensor(StandardScaler().fit_transform(X))

optimizer = torch.optim.Adam(dist_y.parameters(), lr=5e-3)
for step in range(5001):
    optimizer.zero_grad()
    loss = -dist_y.log_prob(X).mean()
    loss.backward()
    optimizer.step()

    if step % 500 == 0:
        print('step: {}, loss: {}'.format(step, loss.item()))
"""

# The bivariate-normal target's entropy, 2 * (0.5 * log(2 pi e) + log 0.5): the best possible NLL.
OPTIMUM = 2 * (0.5 * math.log(2 * math.pi * math.e) + math.log(0.5))


def run(code: str, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    namespace: dict[str, Any] = {}
    exec(compile(code, "<flowtorch 0.8 tutorial>", "exec"), namespace)
    return namespace


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_your_first_flow(seed: int) -> None:
    """The default ``AffineAutoregressive``, Adam at 5e-3, 3001 steps of 1000 samples: 0.8 ends at
    a held-out NLL of 1.42 to 1.46 on seeds 0 to 2 (its notebook prints a last loss of 1.478), the
    optimum is 1.4516. A hard clip of the log-scale left one coordinate's std at 20 (NLL 4.64)."""
    ns = run(YOUR_FIRST_FLOW, seed)
    flow, target = ns["flow"], ns["target_dist"]
    with torch.no_grad():
        held_out = -flow.log_prob(target.sample((100_000,))).mean().item()
        samples = flow.sample((20_000,))
    assert OPTIMUM - 0.02 < held_out < 1.47, f"held-out NLL {held_out:.4f} (0.8: 1.42 to 1.46)"
    # the median and the spread of the bulk (interquartile range / 1.349 is the std of a normal):
    # a few samples far out in a fitted flow's tails would move the mean and std, not these
    q25, q50, q75 = torch.quantile(samples, torch.tensor([0.25, 0.5, 0.75]), dim=0)
    torch.testing.assert_close(q50, torch.full((2,), 5.0), atol=0.05, rtol=0)
    torch.testing.assert_close((q75 - q25) / 1.349, torch.full((2,), 0.5), atol=0.05, rtol=0)


# 0.8's notebooks print losses of -35.9 (Spline, step 3000 of a longer run than the code's 1001)
# and -31.5 (SplineAutoregressive, step 500) on these 1000 standardised points: an average density
# of e^16 per coordinate, which an 8-bin spline cannot put on 1000 scattered points. Those came from
# 0.8's spline log-det, not from a fit, so the bar is the fit: well below the 2.80 and 2.86 that
# 0.8's notebooks started from (2.84 here).


@pytest.mark.slow
def test_univariate_bijections() -> None:
    """An elementwise spline cannot capture the circles' dependence: the best product of
    marginals scores about 2.53."""
    pytest.importorskip("sklearn")
    ns = run(UNIVARIATE, 0)
    log_normal, shifted = ns["log_normal"], ns["shifted_log_normal"]
    assert bool((log_normal > 0).all()) and abs(log_normal.log().std().item() - 1.0) < 0.1
    assert abs(shifted.log().mean().item() - 3.0) < 0.1
    assert abs(shifted.log().std().item() - 0.5) < 0.05
    assert ns["loss"].item() < 2.6


@pytest.mark.slow
def test_multivariate_bijections() -> None:
    """An autoregressive spline captures part of the dependence (below 2.0; about 1.8), in about
    five minutes on one core."""
    pytest.importorskip("sklearn")
    ns = run(MULTIVARIATE, 0)
    with torch.no_grad():
        final = -ns["dist_y"].log_prob(ns["X"]).mean().item()
    assert final < 2.0
