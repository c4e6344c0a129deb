r"""``scoresde experiment vs-gan``: score-based diffusion against a GAN baseline, measured.

On three data sets whose truth is known — an unequal-weight 8-mode Gaussian ring, a
5x5 grid of Gaussians (both exact mixtures, training data drawn from them) and sklearn's
8x8 digits (flattened to 64-D, uniformly dequantised into [-1, 1]) — both families are
trained over several seeds and a small grid of learning rates with the same number of
steps and the same batch size (:mod:`.tasks`), and the run reports (:mod:`.report`):

mode coverage
    Mixtures: the total variation (TV) between nearest-mode shares and the true weights,
    modes hit, and the high-quality fraction; digits: the same through a classifier,
    and its confidence. Unbiased Gaussian-kernel MMD^2 to the held-out test set.
stability
    The spread (median, min, max) of final quality over seeds x learning rates, and
    the loss curves (DSM loss; GAN discriminator and generator losses).
likelihood
    The score model's test NLL through the probability-flow ODE (Tsit5), scored by
    :func:`experiments.evaluation.likelihood`: exact divergence in 2-D (and KL = NLL -
    NLL_true of the same points), Hutchinson probes and bits/dim for digits. A GAN
    defines no tractable density, so it has no likelihood to report.
sampling cost
    Network evaluations and wall time per sample: the GAN's one generator pass; the
    score model with 1000 Euler-Maruyama steps of the reverse SDE, the adaptive
    probability-flow ODE (Tsit5) and DPM-Solver++(3M) on a log-SNR grid at 10 and 20
    evaluations; each timed after a compiling warm-up call, median of repeats.

Score models are :class:`~experiments.run.Run`\ s of named configs with overrides (MLP,
noise prediction, VP SDE, EMA) trained by :func:`experiments.training.fit`; GANs come
from :mod:`.gan`; results are typed rows (:mod:`.results`). Everything is seeded;
``--quick`` is a smoke version of a few minutes. Example::

    scoresde experiment vs-gan --workdir runs/vs_gan          # about 20 min on 2 cores
    scoresde experiment vs-gan --quick --workdir /tmp/vs_gan
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax

from experiments._parser import Parser

from . import gan as gan
from .report import figures, write_report
from .results import StudyResults
from .runs import run_task
from .settings import DATASETS as DATASETS
from .settings import QUICK as QUICK
from .settings import Settings as Settings
from .tasks import RING_WEIGHTS as RING_WEIGHTS
from .tasks import class_quality as class_quality
from .tasks import make_task
from .tasks import mixture_quality as mixture_quality


def run(settings: Settings, workdir: pathlib.Path, quick: bool = False, log=print) -> dict:
    """Run the study; writes report.md, results.json and the figures to ``workdir`` (and
    each score model's likelihood.json under ``workdir/likelihood``). results.json and
    report.md are rewritten after every data set, so an interrupted run keeps what it
    finished. Returns the results as written to results.json."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    results = StudyResults(
        settings={**dataclasses.asdict(settings), "quick": quick},
        machine=f"{jax.devices()[0].platform}, {jax.device_count()} device(s)",
        datasets={},
    )
    for name in settings.datasets:
        t0 = time.perf_counter()
        task = make_task(name, settings)
        res, kept = run_task(task, settings, workdir, log)
        figures(task, res, kept, settings.lrs, settings.seeds[0], workdir)
        res = dataclasses.replace(res, seconds=time.perf_counter() - t0)
        log(f"[{name}] done in {res.seconds:.0f} s")
        results = dataclasses.replace(
            results,
            datasets={**results.datasets, name: res},
            wall_seconds=time.perf_counter() - start,
            cpu_seconds=time.process_time() - cpu,
            complete=name == settings.datasets[-1],
        )
        out = results.to_json()
        (workdir / "results.json").write_text(json.dumps(out, indent=1) + "\n")
        write_report(StudyResults.from_json(out), workdir / "report.md")  # as results.json
    log(f"wrote {workdir / 'report.md'} in {results.wall_seconds / 60:.1f} min")
    return out


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _names(text))
    except ValueError:
        raise ValueError(f"--lrs must be comma-separated numbers, got {text!r}") from None


def _positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")
    return value


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings the flags ask for (``--quick`` or the full defaults, then each
    flag given); a bad value raises ``ValueError`` naming it."""
    changes = {}
    if args.datasets:
        changes["datasets"] = _names(args.datasets)
    if _positive(args.seeds, "--seeds") is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.lrs:
        changes["lrs"] = _floats(args.lrs)
    if args.gan_losses:
        changes["gan_losses"] = _names(args.gan_losses)
    for name in ("steps_2d", "steps_digits"):
        if _positive(getattr(args, name), f"--{name.replace('_', '-')}") is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(QUICK if args.quick else Settings(), **changes)


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="scoresde experiment",
        description="Score-based diffusion vs a GAN baseline: mode coverage, stability, "
        "likelihood and sampling cost (report.md, results.json, figures in --workdir).",
    )
    p.add_argument("experiment", nargs="?", default="vs-gan", choices=["vs-gan"])
    p.add_argument("--workdir", default="runs/vs_gan")
    p.add_argument("--quick", action="store_true", help="smoke version (a few minutes)")
    p.add_argument("--datasets", help=f"comma-separated subset of {','.join(DATASETS)}")
    p.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    p.add_argument("--lrs", help="comma-separated learning rates, e.g. 2e-4,1e-3")
    p.add_argument("--gan-losses", help=f"comma-separated subset of {','.join(gan.LOSSES)}")
    p.add_argument("--steps-2d", type=int, help="training steps on the mixtures (both families)")
    p.add_argument("--steps-digits", type=int, help="training steps on digits (both families)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``scoresde experiment vs-gan [--workdir DIR] [--quick] [--datasets ...] [--seeds N]
    [--lrs ...] [--gan-losses ...] [--steps-2d N] [--steps-digits N]``; a bad value
    raises ``ValueError`` (the CLI prints it on one line and exits 2)."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    run(settings_from(args), pathlib.Path(args.workdir), quick=args.quick)
    return 0
