"""Helpers shared by the examples: command line, threads, base distribution, figures."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["OUT_DIR", "add_common_args", "num_threads", "pick", "save_figure", "standard_normal"]

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
