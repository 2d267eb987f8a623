"""NPE on sbibm's tasks: flowtorch's density estimators (through ``flowtorch.interop.sbi``) against
sbibm's own NPE runner (sbi's nflows NSF), on the same simulations, scored by C2ST.

sbibm 1.1.0 pins ``sbi>=0.20,<0.22`` and calls sbi's API of that time, while the flowtorch adapter
targets sbi 0.27. So the two sides run in two environments, one after the other:

1. ``--methods sbibm-npe`` (torch 2.13.0, sbi 0.21.0, sbibm 1.1.0): sbibm's runner
   ``sbibm.algorithms.snpe`` with the settings of the paper's NPE (one round, NSF, 50 hidden
   features, training batch 10,000, z-scored theta and x). The task handed to the runner records
   every simulation it draws; they are saved to ``results/sbibm_sims/``.
2. ``--methods flowtorch-nsf flowtorch-maf flowtorch-nsf-coupling`` (torch 2.13.0, sbi 0.27.0,
   flowtorch, sbibm 1.1.0 without its dependencies): sbi's ``NPE`` with
   ``flowtorch.interop.sbi.posterior_nn`` (``model="nsf"``, ``"maf"``, ``"nsf_coupling"``), trained
   on the simulations saved in step 1, then sampled. ``flowtorch-nsf-fullbatch`` is the NSF trained
   as sbibm's runner trains its own, run when asked for.

``simulate`` (in the reference environment) draws the simulations of step 1 without the
training: it stops sbibm's runner once its simulator has drawn the budget, so step 2 can start
early (the runner, seeded alike, then records the same simulations). Several processes can share
a sweep: each claims a run with a file in ``results/sbibm_sims/`` before starting it.

Each run draws 10,000 posterior samples for the observation and scores them with sbibm's
``c2st`` against the task's reference posterior samples (shipped inside the sbibm package). One
JSON line per run goes to ``results/sbibm_npe.jsonl``: the C2ST, the wall time of training and
sampling (``fit_s``, simulations excluded, which both sides share), the simulation time, and the
versions. Runs already in the file are skipped, so an interrupted sweep resumes. ``table`` prints
the Markdown table of ``docs/sbi.md`` from that file.

Environments: ``nox -s "sbibm(reference)"`` and ``nox -s "sbibm(flowtorch)"`` build them (see
``noxfile.py``); ``nox -s sbibm`` runs both, in that order. Pass options after ``--``. sbibm is
installed without its dependencies, which include simulators' runtimes (Julia through
``diffeqtorch``) and ABC packages that NPE on these tasks never imports; what the tasks and the
metric import (pyro-ppl, pandas, scikit-learn, autograd, future) is installed by name.

Run with one torch thread (the default here) and ``nice`` on a shared machine::

    nice nox -s sbibm -- --budgets 1000 10000
    python benchmarks/sbibm_npe.py table
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
LOG = RESULTS / "sbibm_npe.jsonl"
SIMS = RESULTS / "sbibm_sims"  # simulations and posterior samples (not committed)

TASKS = ("two_moons", "slcp", "gaussian_linear", "bernoulli_glm", "gaussian_mixture")
BUDGETS = (1_000, 10_000, 100_000)
METHODS = ("sbibm-npe", "flowtorch-nsf", "flowtorch-maf", "flowtorch-nsf-coupling", "flowtorch-nsf-fullbatch")
#: what a sweep runs and the table shows unless told otherwise (the full-batch NSF is a check of
#: the training, run where asked)
SWEEP = METHODS[:4]
NUM_SAMPLES = 10_000  # posterior samples drawn per run (the paper's number)
C2ST_SAMPLES = 10_000  # of them and of the reference, scored by C2ST (``--c2st-samples``)

# sbibm's NPE as the paper ran it (config/algorithm/npe.yaml of sbi-benchmark/results)
SBIBM_NPE = {
    "num_rounds": 1,
    "neural_net": "nsf",
    "hidden_features": 50,
    "simulation_batch_size": 1000,
    "training_batch_size": 10000,
    "num_atoms": 10,
    "automatic_transforms_enabled": False,
    "z_score_x": "independent",
    "z_score_theta": "independent",
}

# flowtorch's estimators: the builder's arguments and sbi's training arguments
FLOWTORCH: dict[str, dict[str, Any]] = {
    "flowtorch-nsf": {"model": "nsf", "hidden_features": 50, "num_transforms": 5, "num_bins": 10},
    "flowtorch-maf": {"model": "maf", "hidden_features": 50, "num_transforms": 5},
    # the layout of sbi's own NSF (spline couplings and LU layers), trained as flowtorch-nsf
    "flowtorch-nsf-coupling": {
        "model": "nsf_coupling",
        "hidden_features": 50,
        "num_transforms": 5,
        "num_bins": 10,
    },
}
# the NSF again, trained as sbibm's runner trains its own (see ``training``)
FLOWTORCH["flowtorch-nsf-fullbatch"] = FLOWTORCH["flowtorch-nsf"]


LABELS = {
    "flowtorch-nsf": "NSF",
    "flowtorch-maf": "MAF",
    "flowtorch-nsf-fullbatch": "NSF full-batch",
    "flowtorch-nsf-coupling": "NSF coupling+LU",
}


def training(budget: int, method: str = "flowtorch-nsf") -> dict[str, Any]:
    """sbi's training arguments for flowtorch's estimators: minibatches that grow with the budget
    (enough steps per epoch for small budgets, few enough for large ones that an epoch stays cheap),
    and twice sbi's default learning rate. ``flowtorch-nsf-fullbatch`` trains as sbibm's runner does
    (training batch 10,000, sbi's default learning rate 5e-4 and patience of 20 epochs), so that
    its C2ST differs from sbibm's only by the flow and not by the training."""
    if method.endswith("-fullbatch"):
        return {"training_batch_size": SBIBM_NPE["training_batch_size"], "learning_rate": 5e-4}
    batch = 128 if budget <= 1_000 else 256 if budget <= 10_000 else 512
    return {"training_batch_size": batch, "learning_rate": 1e-3}


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["task"], record["budget"], record["observation"], record["seed"], record["method"])


def _done() -> set[tuple[Any, ...]]:
    if not LOG.exists():
        return set()
    return {_key(json.loads(line)) for line in LOG.read_text().splitlines() if line.strip()}


def _claim(path: Path) -> bool:
    """Claims a run for this process (several processes can share a sweep); a claim whose
    process has ended is taken over."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        text = path.read_text()
        if not text:
            return False  # being written by the process that claims it
        try:
            os.kill(int(text), 0)
            return False  # its process is alive
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            return _claim(path)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def _sims_path(task: str, budget: int, observation: int, seed: int) -> Path:
    return SIMS / f"{task}_{budget}_obs{observation}_seed{seed}.pt"


class _SimulationsDrawn(Exception):
    """Raised by a recording simulator told to stop once the budget is drawn."""


class _RecordingSimulator:
    """Calls sbibm's simulator and keeps what it was called with and returned; with ``stop_at``,
    raises :class:`_SimulationsDrawn` once that many simulations are recorded."""

    def __init__(self, simulator: Any, stop_at: int | None = None) -> None:
        self.simulator = simulator
        self.stop_at = stop_at
        self.theta: list[torch.Tensor] = []
        self.x: list[torch.Tensor] = []
        self.seconds = 0.0

    def __call__(self, parameters: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        x = self.simulator(parameters, **kwargs)
        self.seconds += time.perf_counter() - start
        self.theta.append(parameters.detach().reshape(-1, parameters.shape[-1]).clone())
        self.x.append(x.detach().clone())
        if self.stop_at is not None and sum(len(t) for t in self.theta) >= self.stop_at:
            raise _SimulationsDrawn
        return x

    @property
    def num_simulations(self) -> int:
        return int(self.simulator.num_simulations)


class _RecordingTask:
    """An sbibm task whose simulator records its calls; everything else is the task's own."""

    def __init__(self, task: Any, stop_at: int | None = None) -> None:
        self._task = task
        self._stop_at = stop_at
        self.recorder: _RecordingSimulator | None = None

    def get_simulator(self, *args: Any, **kwargs: Any) -> _RecordingSimulator:
        self.recorder = _RecordingSimulator(self._task.get_simulator(*args, **kwargs), self._stop_at)
        return self.recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def run_sbibm_npe(task: Any, budget: int, observation: int) -> dict[str, Any]:
    """sbibm's own NPE runner; the simulations it draws are saved for the flowtorch runs."""
    from sbibm.algorithms import snpe

    recording = _RecordingTask(task)
    start = time.perf_counter()
    samples, _, _ = snpe(
        task=recording,
        num_samples=NUM_SAMPLES,
        num_simulations=budget,
        num_observation=observation,
        **SBIBM_NPE,
    )
    total = time.perf_counter() - start
    recorder = recording.recorder
    assert recorder is not None
    theta, x = torch.cat(recorder.theta), torch.cat(recorder.x)
    assert theta.shape[0] == budget, theta.shape
    return {
        "samples": samples,
        "sims": (theta, x),
        "fit_s": total - recorder.seconds,
        "sim_s": recorder.seconds,
        "config": SBIBM_NPE,
    }


def draw_simulations(task: Any, budget: int, observation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The simulations sbibm's NPE runner draws (same seed, same calls), without its training:
    the runner is stopped once its simulator has been called for the whole budget. Lets the
    flowtorch side start before sbibm's runner has finished training."""
    from sbibm.algorithms import snpe

    recording = _RecordingTask(task, stop_at=budget)
    with contextlib.suppress(_SimulationsDrawn):
        snpe(
            task=recording,
            num_samples=NUM_SAMPLES,
            num_simulations=budget,
            num_observation=observation,
            **SBIBM_NPE,
        )
    recorder = recording.recorder
    assert recorder is not None
    return torch.cat(recorder.theta), torch.cat(recorder.x)


def simulate(tasks: Sequence[str], budgets: Sequence[int], observations: Sequence[int], seed: int) -> None:
    """Saves :func:`draw_simulations` for each run not yet simulated; where sbibm's runner has saved
    its own, checks that they are the same."""
    SIMS.mkdir(parents=True, exist_ok=True)
    for budget in budgets:
        for name in tasks:
            for observation in observations:
                import sbibm

                torch.manual_seed(seed)
                theta, x = draw_simulations(sbibm.get_task(name), budget, observation)
                path = _sims_path(name, budget, observation, seed)
                if path.exists():
                    saved = torch.load(path)
                    same = torch.equal(saved[0], theta) and torch.equal(saved[1], x)
                    print(f"{path.name}: already there; the same simulations: {same}", flush=True)
                else:
                    torch.save((theta, x), path)
                    print(f"{path.name}: saved", flush=True)


def run_flowtorch(task: Any, budget: int, observation: int, method: str, sims: Path) -> dict[str, Any]:
    """sbi 0.27's NPE with flowtorch's estimator, on the simulations sbibm's runner drew."""
    from sbi.inference import NPE

    from flowtorch.interop.sbi import posterior_nn

    theta, x = torch.load(sims)
    config = dict(FLOWTORCH[method])
    train = training(budget, method)
    start = time.perf_counter()
    inference = NPE(prior=task.get_prior_dist(), density_estimator=posterior_nn(**config))
    estimator = inference.append_simulations(theta, x).train(**train, show_train_summary=False)
    posterior = inference.build_posterior(estimator)
    samples = posterior.sample((NUM_SAMPLES,), x=task.get_observation(observation), show_progress_bars=False)
    fit = time.perf_counter() - start
    return {
        "samples": samples,
        "fit_s": fit,
        "sim_s": None,
        "epochs": int(inference._summary["epochs_trained"][-1]),
        "config": {**config, **train},
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "sbi", "sbibm", "nflows", "flowtorch", "scikit-learn"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run(
    tasks: Sequence[str],
    budgets: Sequence[int],
    methods: Sequence[str],
    observations: Sequence[int],
    seed: int,
    c2st_samples: int = C2ST_SAMPLES,
) -> None:
    import sbibm
    from sbibm.metrics import c2st

    RESULTS.mkdir(exist_ok=True)
    SIMS.mkdir(exist_ok=True)
    for budget in budgets:  # the small budgets of every task first
        for name in tasks:
            for observation in observations:
                for method in methods:
                    record: dict[str, Any] = {
                        "task": name,
                        "budget": budget,
                        "observation": observation,
                        "seed": seed,
                        "method": method,
                    }
                    if _key(record) in _done():  # read again: other processes may share the sweep
                        continue
                    sims = _sims_path(name, budget, observation, seed)
                    if method != "sbibm-npe" and not sims.exists():
                        print(f"skipped {name} {budget} {method}: no simulations yet (run sbibm-npe first)")
                        continue
                    claim = sims.with_name(f"{sims.stem}_{method}.claim")
                    if not _claim(claim):
                        print(f"skipped {name} {budget} {method}: another process runs it")
                        continue
                    task = sbibm.get_task(name)
                    torch.manual_seed(seed)
                    if method == "sbibm-npe":
                        out = run_sbibm_npe(task, budget, observation)
                        torch.save(out.pop("sims"), sims)
                    else:
                        out = run_flowtorch(task, budget, observation, method, sims)
                    samples = out.pop("samples")
                    torch.save(samples, sims.with_name(f"{sims.stem}_{method}_samples.pt"))
                    reference = task.get_reference_posterior_samples(num_observation=observation)
                    start = time.perf_counter()
                    score = float(c2st(reference[:c2st_samples], samples[:c2st_samples])[0])
                    record.update(
                        c2st=score,
                        c2st_samples=c2st_samples,
                        c2st_s=time.perf_counter() - start,
                        **out,
                        threads=torch.get_num_threads(),
                        versions=_versions(),
                        machine=platform.machine(),
                        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    )
                    with LOG.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    claim.unlink()
                    print(
                        f"{name:17s} {budget:>7d} obs {observation} {method:14s} "
                        f"C2ST {score:.3f}  fit {record['fit_s']:.1f} s",
                        flush=True,
                    )


def _paper() -> dict[tuple[str, int], dict[str, Any]]:
    path = RESULTS / "sbibm_paper_npe.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["c2st"]
    return {(r["task"], int(r["budget"])): r for r in rows}


def _mean(runs: list[dict[str, Any]], field: str) -> float:
    return sum(float(r[field]) for r in runs) / len(runs)


def _median(runs: list[dict[str, Any]], field: str) -> float:
    return statistics.median(float(r[field]) for r in runs)


def table(
    observations: Sequence[int] | None = None,
    methods: Sequence[str] = SWEEP,
    tasks: Sequence[str] | None = None,
    budgets: Sequence[int] | None = None,
    complete: bool = False,
) -> str:
    """The Markdown table of C2ST and fit time per task, budget and method (over the runs of a cell,
    its observations and seeds, the mean C2ST and the median fit time, which one run made under a
    heavier load of the machine does not move; the count is given when it is not 1), the paper's NPE
    figures, and whether each flowtorch estimator met the goal: C2ST at or below sbibm's NPE, in
    less fit time. A row for each task and budget where one of ``methods`` ran (where all of them
    ran, with ``complete``; only ``tasks`` and ``budgets`` if given)."""
    records = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    if observations:
        records = [r for r in records if r["observation"] in observations]
    if tasks:
        records = [r for r in records if r["task"] in tasks]
    if budgets:
        records = [r for r in records if r["budget"] in budgets]
    records = [r for r in records if r["method"] in methods]
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["task"], r["budget"], r["method"]), []).append(r)
    paper = _paper()
    ours = [m for m in methods if m.startswith("flowtorch-")]
    head = ["task", "budget"]
    for m in methods:
        head += [f"{m} C2ST", f"{m} fit (s)"]
    names = " / ".join(LABELS[m] for m in ours)
    head += [f"goal met ({names})", "paper NPE C2ST", "paper NPE time (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {t: i for i, t in enumerate(TASKS)}
    keys = sorted({(t, b) for t, b, _ in cells}, key=lambda k: (k[1], order.get(k[0], 99)))
    if complete:
        keys = [(t, b) for t, b in keys if all((t, b, m) in cells for m in methods)]
    for task, budget in keys:
        row = [task, f"{budget:,}"]
        scores = {m: _mean(cells[(task, budget, m)], "c2st") for m in methods if (task, budget, m) in cells}
        best = min(scores.values())
        for m in methods:
            runs = cells.get((task, budget, m), [])
            if not runs:
                row += ["not run", ""]
                continue
            text = f"{scores[m]:.3f}" + (f" (n={len(runs)})" if len(runs) > 1 else "")
            row += [f"**{text}**" if scores[m] == best else text, f"{_median(runs, 'fit_s'):.0f}"]
        goals = []
        reference = cells.get((task, budget, "sbibm-npe"))
        for m in ours:
            runs = cells.get((task, budget, m))
            if not runs or not reference:
                goals.append("-")
                continue
            c2st_ok = scores[m] <= scores["sbibm-npe"]
            time_ok = _median(runs, "fit_s") < _median(reference, "fit_s")
            goals.append(
                {(True, True): "yes", (True, False): "C2ST only", (False, True): "time only"}.get(
                    (c2st_ok, time_ok), "no"
                )
            )
        row.append(" / ".join(goals))
        quoted = paper.get((task, budget))
        row += [quoted["text"], f"{quoted['runtime_min_mean']:.1f}"] if quoted else ["n/a", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the sweep (skips runs already in results/sbibm_npe.jsonl)")
    p_run.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p_run.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    p_run.add_argument("--methods", nargs="+", default=list(SWEEP), choices=METHODS)
    p_run.add_argument("--observations", nargs="+", type=int, default=[1])
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p_run.add_argument(
        "--c2st-samples",
        type=int,
        default=C2ST_SAMPLES,
        help="posterior and reference samples that C2ST compares (default: the paper's 10,000)",
    )
    p_sim = sub.add_parser(
        "simulate", help="draw and save the simulations sbibm's runner draws, without its training"
    )
    p_sim.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p_sim.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    p_sim.add_argument("--observations", nargs="+", type=int, default=[1])
    p_sim.add_argument("--seed", type=int, default=0)
    p_table = sub.add_parser("table", help="print the Markdown table from results/sbibm_npe.jsonl")
    p_table.add_argument("--observations", nargs="+", type=int, default=None)
    p_table.add_argument(
        "--methods",
        nargs="+",
        default=list(SWEEP),
        choices=METHODS,
        help="columns (default: the sweep's four)",
    )
    p_table.add_argument("--tasks", nargs="+", default=None, choices=TASKS)
    p_table.add_argument("--budgets", nargs="+", type=int, default=None)
    p_table.add_argument("--complete", action="store_true", help="only rows where every method ran")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.observations, args.methods, args.tasks, args.budgets, args.complete))
        return 0
    if args.command == "simulate":
        simulate(args.tasks, args.budgets, args.observations, args.seed)
        return 0
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # sklearn's C2ST classifier
    run(args.tasks, args.budgets, args.methods, args.observations, args.seed, args.c2st_samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
