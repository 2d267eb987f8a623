"""``examples/energy_vi.py`` runs end to end in its ``--smoke`` mode; ``EnergyDensity`` is the
paper's table."""

from __future__ import annotations

import math
import pathlib

import pytest
import torch

from flowtorch.distributions.energy import EnergyDensity


@pytest.mark.parametrize("flow", ["both", "planar"])
def test_energy_vi_smoke(flow: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from tests.test_examples import PNG_SIGNATURE, _load  # skips without matplotlib or tqdm

    module = _load("energy_vi", monkeypatch)
    out = tmp_path / "energy.png"
    energy = "U1" if flow == "both" else "U3"
    kl = module.main(["--smoke", "--no-progress", "--flow", flow, "--energy", energy, "--out", str(out)])
    assert isinstance(kl, float) and math.isfinite(kl)
    # KL(q || p) >= 0 up to Monte Carlo error; 20 annealed steps leave q broad, a few nats away
    assert -0.2 < kl < 15.0, kl
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("final KL(q || p): ")
    assert ("residual" in printed[-1]) == (flow == "both")


def test_energies_follow_the_paper() -> None:
    z = torch.tensor([[2.0, 0.0], [0.3, -1.2], [-1.0, 2.5]], dtype=torch.float64)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + torch.exp(-(z1 - 1) / 0.3))
    norm = z.norm(dim=-1)
    expected = {
        "U1": 0.5 * ((norm - 2) / 0.4) ** 2
        - torch.log(torch.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + torch.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)),
        "U2": 0.5 * ((z2 - w1) / 0.4) ** 2,
        "U3": -torch.log(
            torch.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + torch.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        ),
        "U4": -torch.log(
            torch.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + torch.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
        ),
    }
    for name, u in expected.items():
        p = EnergyDensity(name)
        torch.testing.assert_close(p.log_prob(z), -u)
        # the box leaves the square alone and walls it in outside
        boxed = EnergyDensity(name, box=4.0)
        torch.testing.assert_close(boxed.log_prob(z), -u)
        far = torch.tensor([[6.0, 0.0]], dtype=torch.float64)
        assert boxed.log_prob(far) < p.log_prob(far) - 100


def test_energy_density_interface() -> None:
    p = EnergyDensity("U1")
    assert p.event_shape == (2,) and p.batch_shape == ()
    assert p.log_prob(torch.zeros(5, 3, 2)).shape == (5, 3)
    log_z = p.log_normalizer()
    assert abs(log_z - p.log_normalizer(limit=7.0, points=2001)) < 1e-6
    assert math.isfinite(EnergyDensity("U3", box=4.0).log_normalizer())
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        p.sample((3,))
    with pytest.raises(ValueError, match="unknown energy"):
        EnergyDensity("U5")
    with pytest.raises(ValueError, match="box"):
        EnergyDensity("U2", box=0.0)
