"""A flow inside ``DataLoader`` workers (``fork`` and ``spawn``): each item is sampled or scored
by the flow in a worker, also inside ``BijectiveMode``; the batches are plain tensors with the
values the main process computes.

``spawn`` workers start fresh interpreters that import torch and this module (a few seconds of
CPU); the dataset, with its flow, reaches them pickled.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import flowtorch
import flowtorch.bijectors as bij
import flowtorch.distributions as dist
import flowtorch.parameters as params

N = 8
D = 2


def make_flow() -> dist.Flow:
    torch.manual_seed(0)
    made = params.DenseAutoregressive(hidden_dims=(8,))
    plan = bij.Compose([bij.Invert(bij.AffineAutoregressive(made)), bij.Spline(count_bins=4)])
    normal = torch.distributions.Normal(torch.zeros(D), torch.ones(D))
    flow = dist.Flow(torch.distributions.Independent(normal, 1), plan)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    return flow


class FlowDataset(Dataset[dict[str, torch.Tensor]]):
    """Item ``i``: a sample drawn with seed ``i`` and its log-density computed inside the mode
    (a cache hit), and the log-density of the fixed point ``points[i]`` outside the mode."""

    def __init__(self, flow: dist.Flow, points: torch.Tensor) -> None:
        self.flow = flow
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # tensors sent between processes must not need gradients
            torch.manual_seed(i)
            with flowtorch.BijectiveMode():
                y = self.flow.rsample()
                log_p_own = self.flow.log_prob(y)
            log_p = self.flow.log_prob(self.points[i])
        return {"sample": y, "log_p_own": log_p_own, "log_p": log_p, "pid": torch.tensor(_pid())}


def _pid() -> int:
    import os

    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_flow_in_dataloader_workers(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} is not available on this platform")
    flow = make_flow()
    points = torch.randn(N, D)
    loader = DataLoader(
        FlowDataset(flow, points),
        batch_size=2,
        num_workers=2,
        multiprocessing_context=method,
    )
    batches = list(loader)
    out = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    for value in out.values():
        assert type(value) is torch.Tensor and not value.requires_grad
    assert not any(hasattr(b[k], "_flowtorch_entry") for b in batches for k in b)
    assert len(set(out["pid"].tolist())) == 2 and _pid() not in out["pid"].tolist()  # two workers
    with torch.no_grad():
        torch.testing.assert_close(out["log_p"], flow.log_prob(points))
        torch.testing.assert_close(out["log_p_own"], flow.log_prob(out["sample"]), atol=1e-5, rtol=1e-5)
        for i in range(N):  # the workers drew the same samples as the main process does
            torch.manual_seed(i)
            torch.testing.assert_close(out["sample"][i], flow.sample())
