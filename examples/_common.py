"""Helpers shared by the examples: command line, threads, base distribution, training, figures."""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

__all__ = ["OUT_DIR", "add_common_args", "num_threads", "pick", "save_figure", "standard_normal", "train"]

T = TypeVar("T", int, float)

#: Where the examples write their figures unless told otherwise with ``--out``.
OUT_DIR = Path(__file__).resolve().parent / "out"


def add_common_args(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """Adds the options every example takes; numeric defaults are ``None`` so that ``--smoke`` can
    pick its own sizes for whatever the user did not set (see :func:`pick`)."""
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (data, initialisation, sampling)")
    parser.add_argument(
        "--smoke", action="store_true", help="a short run with small sizes, to check that everything works"
    )
    parser.add_argument("--out", type=Path, default=default_out, help="where to write the figure (PNG)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; these networks are so small that one thread is usually fastest",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def pick(value: T | None, default: T, smoke: T, is_smoke: bool) -> T:
    """``value`` if the user gave it, else the smoke or the full-run default."""
    if value is not None:
        return value
    return smoke if is_smoke else default


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)`` and restores the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(int(n), 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def standard_normal(dim: int) -> torch.distributions.Distribution:
    """The standard normal on ``R^dim`` as a distribution with event shape ``(dim,)``."""
    return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(dim), torch.ones(dim)), 1)


def save_figure(fig: Figure, path: Path) -> Path:
    """Renders ``fig`` with the Agg backend to the PNG ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)
    return path


def train(
    parameters: Iterable[torch.nn.Parameter],
    step: Callable[[int], tuple[torch.Tensor, float]],
    steps: int,
    lr: float,
    desc: str,
    progress: bool = True,
    metric: str = "loss",
    clip: float | None = None,
    after: Callable[[int], dict[str, str]] | None = None,
) -> list[float]:
    """Adam with a cosine learning-rate decay over ``steps`` steps; returns the value of each step.

    ``step(i)`` returns the loss to minimise at step ``i`` and the value to report (the loss
    itself, or an ELBO); a non-finite value stops the run with a message. ``clip`` bounds the
    gradient norm. ``after(i)``, called after each step, returns extra entries for the progress
    bar, which shows a bias-corrected moving average of the reported value.
    """
    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    values: list[float] = []
    running, decay = 0.0, 0.95
    extra: dict[str, str] = {}
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, dynamic_ncols=True)
    for i in bar:
        loss, value = step(i)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm=clip)
        optimizer.step()
        schedule.step()
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: the {metric} became {value} at step {i}; try a smaller --lr")
        values.append(value)
        running = decay * running + (1.0 - decay) * value
        if after is not None:
            extra = after(i)
        if i % 10 == 0 or i == steps - 1:
            bar.set_postfix({metric: f"{running / (1.0 - decay ** (i + 1)):.3f}", **extra}, refresh=False)
    bar.close()
    return values
