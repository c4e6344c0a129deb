"""The ``scoresde`` command line: one argparse tree, one error policy.

``scoresde train | sample | inpaint | likelihood | plot | oracle | bench | experiment``. Each
command runs on every device of the machine and, launched once per host, on every
host: ``--coordinator-address HOST:PORT --num-processes N --process-id I`` join the
processes explicitly; without them a command stays a single process unless it was
started by ``srun`` (SLURM, more than one task), ``mpirun`` (Open MPI) or with
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` set, where JAX
reads the values from the environment (``--distributed on`` also asks JAX to detect a
Cloud TPU pod; ``--distributed off`` never joins). See docs/scaling.md.

A bad value anywhere (a ``ConfigError``, ``ValueError``, a missing file, a diverged
run) ends the command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
from typing import TYPE_CHECKING

from experiments._parser import Parser, checkpoint, finite, fork_source, integer, positive

if TYPE_CHECKING:
    from experiments.run import Run


class _Lazy:
    """A module imported at its first use, so that a bad argument is reported before
    JAX (5-10 s on 2 cores) is imported."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


config_lib = _Lazy("experiments.config")
distributed = _Lazy("experiments.distributed")
evaluation = _Lazy("experiments.evaluation")
training = _Lazy("experiments.training")
run_lib = _Lazy("experiments.run")


def _named_configs() -> list[str]:
    """The named configs (the files of experiments/configs), without importing them."""
    folder = pathlib.Path(__file__).parent / "configs"
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a command with one line on stderr and exit status 2. OSError
    covers a full disk, a read-only or missing path (the message names the path)."""
    return (ValueError, OSError, training.TrainingDiverged, training.RunLocked)


INTERRUPTED = 130  # the shell's status for SIGINT (128 + 2); also used for SIGTERM


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "multi-process (see docs/scaling.md)",
        "run one process per host (or per GPU); all processes get the same arguments "
        "apart from --process-id",
    )
    g.add_argument("--coordinator-address", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    g.add_argument(
        "--distributed",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: join when the flags above are given or SLURM/Open MPI/JAX_* "
        "variables say so; on: always ask JAX to detect the cluster (TPU pods); "
        "off: single process (default: auto)",
    )
    g.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        metavar="S",
        help="seconds without heartbeats after which a process counts as dead and the "
        "others exit (default: 100)",
    )


def _join(args) -> None:
    """Start jax.distributed as the flags say."""
    multi = distributed.initialize(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        mode=args.distributed,
        heartbeat_timeout=args.heartbeat_timeout,
    )
    if multi:
        print(f"scoresde {args.command}: {distributed.describe()}", file=sys.stderr, flush=True)


def _precheck(args) -> None:
    """What can be checked before JAX is imported: the work dir holds a run to evaluate,
    or (``train``) a config to start or resume from; a file is not a work dir."""
    workdir = args.workdir
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
    if args.command == "distill":
        _precheck_distill(args)
        return
    if args.command != "train":
        if not (workdir / "config.json").exists():
            raise FileNotFoundError(f"{workdir} has no config.json: train a model there first")
        return
    if args.fork_from is not None:
        source, _ = fork_source(args.fork_from)
        if not (source / "config.json").exists():
            raise FileNotFoundError(
                f"--fork-from {source}: no config.json there (not a training run)"
            )
    elif args.config is None and not (workdir / "config.json").exists():
        raise ValueError(
            f"--config is needed: {workdir} holds no run to resume (no config.json); "
            f"named configs: {', '.join(_named_configs())}"
        )


def _precheck_distill(args) -> None:
    """``distill``: a method and a teacher (or data) to start from, or a student to resume."""
    saved = args.workdir / "config.json"
    if saved.exists() and not args.restart:
        return  # resumes; the saved config is checked against the arguments later
    if args.method is None:
        raise ValueError(f"--method is needed: {args.workdir} holds no student to resume")
    if args.teacher is not None:
        if not (args.teacher / "config.json").exists():
            raise FileNotFoundError(
                f"--teacher {args.teacher} has no config.json: train a teacher there first"
            )
    elif args.method in ("cd", "pd"):
        raise ValueError(
            f"--method {args.method} distils a teacher: give --teacher DIR (ect and meanflow "
            "may train from data with --config)"
        )
    elif args.config is None:
        raise ValueError(f"--method {args.method} without --teacher needs --config NAME_OR_FILE")


def _print(info: dict) -> None:
    if distributed.is_main():
        print(json.dumps(info, indent=2))


# ---------------------------------------------------------------------------- commands


def _train_config(args) -> config_lib.Config:
    """The config ``train`` runs: ``--config``, else the fork source's or the work dir's
    own ``config.json``, with the overrides applied."""
    base = args.config
    if base is None and args.fork_from is not None:
        base = str(args.fork_from.config_path())
    elif base is None:
        saved = args.workdir / "config.json"
        if not saved.exists():
            raise config_lib.ConfigError(
                f"--config is needed: {args.workdir} holds no run to resume (no config.json); "
                f"named configs: {', '.join(config_lib.named_configs())}"
            )
        base = str(saved)
    return config_lib.load(base, args.overrides)


def train(args) -> int:
    args.fork_from = None if args.fork_from is None else training.Fork.parse(args.fork_from)
    cfg = _train_config(args)
    explicit = frozenset(o.partition("=")[0].strip() for o in args.overrides)
    if args.fork_from is not None:
        args.fork_from.check(cfg)
    run = run_lib.Run.create(cfg)  # builds (and so checks) everything before any write
    if args.workdir.exists() and not args.workdir.is_dir():
        raise NotADirectoryError(f"--workdir {args.workdir} is a file, not a directory")
    resumed = None
    if not args.restart:  # --restart moves the old run aside: nothing to check it against
        resumed = training.check_workdir(cfg, args.workdir, explicit)  # train checks again
    if args.dry_run:
        steps = training.checkpoint_steps(args.workdir)
        if distributed.is_main():
            planned = run if resumed is None else run.replace(cfg=resumed.cfg)
            print(json.dumps(config_lib.to_dict(planned.cfg), indent=2))
            start = 0 if args.restart or not steps else steps[-1]
            notes = [] if resumed is None else list(resumed.notes)
            if resumed is not None and resumed.changes:
                notes.insert(0, f"would change: {training.resume.describe(resumed.changes)}")
            plan = "; ".join([_plan(planned, args.workdir, start), *notes])
            print(f"scoresde train --dry-run: {plan}; nothing was written", file=sys.stderr)
        return 0

    def announce(start: int, notes=()) -> None:  # once the work dir is locked and checked
        line = "; ".join([_plan(run, args.workdir, start), *notes])
        print(f"scoresde train: {line}", file=sys.stderr, flush=True)

    run, info = training.train(
        run,
        args.workdir,
        progress=not args.quiet,
        step_timeout=args.step_timeout,
        restart=args.restart,
        announce=announce,
        fork=args.fork_from,
        explicit=explicit,
    )
    if args.no_eval:
        if distributed.is_main():  # report.md and loss.png: the training part only
            evaluation.training_report(run, info)
        return 0
    s = evaluation.sample(run, progress=not args.quiet)
    lik = evaluation.likelihood(run, progress=not args.quiet)
    if distributed.is_main():
        print(evaluation.report(run, info, s, lik))
    return 0


def _distill_config(args) -> config_lib.Config:
    """The student's config: the work dir's own (resuming), else built from the teacher
    (or ``--config``), the method's defaults and the overrides."""
    from experiments.training import distill as distill_lib

    saved = args.workdir / "config.json"
    if saved.exists() and not args.restart:
        cfg = config_lib.read(saved)
        if not distill_lib.is_student(cfg):
            raise config_lib.ConfigError(
                f"{args.workdir} holds a score model trained by 'scoresde train', not a "
                "student: give another --workdir"
            )
        if args.method is not None and args.method != cfg.distill.method:
            raise config_lib.ConfigError(
                f"{args.workdir} holds a {cfg.distill.method} student; --method "
                f"{args.method} would need another --workdir (or --restart)"
            )
        return config_lib.validate(config_lib.apply_overrides(cfg, args.overrides))
    base = None if args.config is None else config_lib.get_named(args.config)
    return distill_lib.student_config(args.method, args.teacher, base, args.overrides)


def distill(args) -> int:
    import time

    from experiments.training import distill as distill_lib

    cfg = _distill_config(args)
    explicit = frozenset(o.partition("=")[0].strip() for o in args.overrides)
    teacher = distill_lib.teacher_run(cfg)
    student = distill_lib.initial_student(cfg, teacher)
    if not args.restart:
        training.check_workdir(cfg, args.workdir, explicit)

    def announce(start: int, notes=()) -> None:
        plan = _plan(student, args.workdir, start).replace(" prediction)", " student)")
        line = "; ".join([distill_lib.describe(cfg), plan, *notes])
        print(f"scoresde distill: {line}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    run, info = distill_lib.distill(
        student,
        args.workdir,
        teacher,
        progress=not args.quiet,
        restart=args.restart,
        announce=announce,
        explicit=explicit,
    )
    if distributed.is_main():
        distill_lib.record(args.workdir, run.cfg, time.perf_counter() - started)
    if args.no_eval:
        return 0
    for steps in run.cfg.distill.sample_steps:
        _print(evaluation.sample(run, steps=steps, progress=not args.quiet))
    return 0


def _plan(run: Run, workdir: pathlib.Path, start: int) -> str:
    """One line: the network, SDE, data, devices, and where training starts."""
    from flax import nnx

    import networks

    cfg = run.cfg
    model, _ = nnx.merge(run.graphdef, run.state)
    total = cfg.train.steps
    start = f"resuming from step {start} of {total}" if start else f"{total} steps from step 0"
    return (
        f"{cfg.model.architecture} ({networks.count_params(model):,} parameters, "
        f"{cfg.model.parametrisation} prediction), SDE {type(run.sde).__name__}, data "
        f"{cfg.data.name} {run.source.shape}, {distributed.describe()}; {start} in {workdir}"
    )


def _check_evaluation(args, command: str) -> None:
    """Before any checkpoint is read: the names and settings the command will use
    (checked against the run's own config.json) and that its results can be written."""
    from experiments import build
    from experiments.evaluation import outputs
    from experiments.evaluation.sample import sampler_kwargs

    cfg = config_lib.read(args.workdir / "config.json")
    if command == "sample" and getattr(args, "inpaint", None) is None and args.mask is None:
        grid = None if args.grid == "tuned" else args.grid
        method = args.method or cfg.eval.method
        sampler_kwargs(cfg.eval, method, args.solver, args.steps, sde=build.sde(cfg.sde), grid=grid)
    elif command == "likelihood" and args.method == "ode" and args.solver is not None:
        (build.solver if args.steps else build.adaptive_ode_solver)(args.solver)
    if distributed.is_main():
        kind = {"sample": "samples", "inpaint": None, "likelihood": "likelihood"}[command]
        if command == "likelihood" and args.method == "elbo":
            kind = "elbo"
        outputs.check_writable(args.workdir, kind)


def _restore(args, command: str) -> Run:
    """The run of ``--workdir`` at ``--checkpoint`` with ``--weights``; says which."""
    _check_evaluation(args, command)
    run = run_lib.Run.restore(args.workdir, checkpoint=args.checkpoint)
    run = run.with_weights(getattr(args, "weights", "ema"))
    if distributed.is_main():
        print(f"scoresde {command}: {run.describe()}", file=sys.stderr, flush=True)
    return run


def sample(args) -> int:
    run = _restore(args, "sample")
    info = evaluation.sample(
        run,
        method=args.method,
        solver=args.solver,
        steps=args.steps,
        n=args.n,
        seed=args.seed,
        labels=args.label,
        guidance=args.guidance,
        grid=args.grid,
        eps=args.eps,
        denoise=args.denoise,
    )
    if args.metrics and distributed.is_main():
        info["metrics"] = evaluation.sample_quality(run)
    if distributed.is_main():
        evaluation.rebuild_report(run)  # report.md shows the samples.png just written
    _print(info)
    return 0


def inpaint(args) -> int:
    import numpy as np

    mask = np.load(args.mask, allow_pickle=False) if args.mask else args.region
    info = evaluation.inpaint(
        _restore(args, "inpaint"),
        mask=mask,
        n=args.n,
        fills=args.fills,
        steps=args.steps,
        solver=args.solver,
        corrector_steps=args.corrector_steps,
        resample=args.resample,
        seed=args.seed,
    )
    _print(info)
    return 0


def likelihood(args) -> int:
    run = _restore(args, "likelihood")
    if args.method == "elbo":
        _print(evaluation.elbo(run, split=args.split, n_t=args.n_t, n=args.n))
        return 0
    out = evaluation.likelihood(
        run,
        split=args.split,
        solver=args.solver,
        rtol=args.rtol,
        atol=args.atol,
        steps=args.steps,
        n=args.n,
    )
    if distributed.is_main():
        evaluation.rebuild_report(run)
    _print(out)
    return 0


def oracle(argv: list[str]) -> int:
    from experiments.studies import oracle as study

    return study.main(argv) or 0


def plot(argv: list[str]) -> int:
    """``scoresde plot DIR``: redraw loss.png from metrics.jsonl (:func:`experiments.logs.main`;
    the console script reaches it without importing this module, and so JAX)."""
    from experiments import logs

    return logs.main(argv)


def bench(argv: list[str]) -> int:
    """``scoresde bench core|train|solvers|scale|gpu_ddpmpp [options]``; without a name it
    lists them (exit 2)."""
    from experiments import bench as benches

    return benches.main(argv) or 0


STUDIES = {  # scoresde experiment NAME: (module under experiments.studies, what it does)
    "vs-gan": ("vs_gan", "score-based diffusion vs a GAN baseline (~14 min; --quick)"),
    "objectives": ("objectives", "time sampling x parametrisation at equal steps"),
    "path-change": ("path_change", "a trained run sampled and scored on another path"),
    "distill-oracle": (
        "distill_oracle",
        "consistency distillation from the exact oracle, scored on the exact flow map",
    ),
    "distill-table": ("distill_table", "students beside their teacher at 1, 2, 4 steps"),
}


def experiment(argv: list[str]) -> int:
    """``scoresde experiment NAME [options]``, NAME one of :data:`STUDIES`; without a
    name it lists them (exit 2) rather than starting one."""
    import importlib

    listing = "; ".join(f"{name}: {text}" for name, (_, text) in STUDIES.items())
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: scoresde experiment {{{','.join(STUDIES)}}} [options]\n  {listing}")
        return 0
    if not argv or argv[0] not in STUDIES:
        given = f"unknown study {argv[0]!r}" if argv else "name a study"
        print(f"scoresde experiment: {given}; choose one of {listing}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"experiments.studies.{STUDIES[argv[0]][0]}")
    return module.main(argv if argv[0] == "vs-gan" else argv[1:]) or 0


# ---------------------------------------------------------------------------- parsers


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a score model, then sample and evaluate it",
        description="Train a score model (resumes if WORKDIR has checkpoints), then sample "
        "it, compute its test likelihood and write report.md.",
    )
    p.add_argument(
        "--config",
        help=f"one of {', '.join(_named_configs())}, a path to a .py file with "
        "get_config(), or a run's config.json (default: WORKDIR's own config.json, to "
        "resume; bookkeeping and eval.* overrides may change on resume)",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument(
        "--fork-from",
        metavar="DIR[:STEP]",
        help="start a new run in WORKDIR from DIR's checkpoint (the latest, or STEP): "
        "weights, EMA, optimizer state and step, with DIR's config (or --config) and the "
        "overrides; recorded in WORKDIR/fork.json",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build and check everything, print the resolved config, write nothing",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over in a WORKDIR that holds a run: its files are moved aside into "
        "WORKDIR/replaced-<time>/, never deleted",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--step-timeout",
        type=positive,
        metavar="S",
        help="exit with a message if no training step completes for S seconds (off by "
        "default; catches a process that hangs while its heartbeats go on)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config field by its dotted path, e.g. train.lr=3e-4",
    )
    p.set_defaults(func=train)


def _distill_parser(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a trained run into a one- or few-step student, then sample it",
        description="Train a one- or few-step student of a trained score model (resumes "
        "if WORKDIR holds one): consistency distillation (cd), consistency tuning (ect), "
        "progressive distillation (pd) or MeanFlow (meanflow). Then sample it at "
        "distill.sample_steps. 'scoresde sample --workdir WORKDIR --steps N' samples it.",
    )
    p.add_argument("--method", choices=["cd", "ect", "pd", "meanflow"])
    p.add_argument(
        "--teacher",
        type=pathlib.Path,
        metavar="DIR",
        help="the teacher's work dir (ect and meanflow may omit it and train from data)",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument(
        "--config",
        help="without --teacher: the data and network to train from (a named config or a file)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the final sampling")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over in a WORKDIR that holds a student (moved aside, never deleted)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config field of the student, e.g. train.steps=4000 distill.steps_n=18",
    )
    p.set_defaults(func=distill)


def _sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="sample a trained run (samples.png, samples.npz)",
        description="Sample a trained run.",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    _weights_option(p)
    p.add_argument("--method", help="ode | sde | pc | edm (default: eval.method)")
    p.add_argument("--solver", help="a solver name (tsit5, dopri5, heun, euler, dpmpp2m, ...)")
    p.add_argument("--steps", type=integer(1), help="fixed steps (default: adaptive for ode)")
    p.add_argument(
        "--grid",
        choices=["uniform", "log_snr", "karras", "quadratic", "tuned"],
        help="where the fixed steps lie: default uniform in t, log_snr for the exponential "
        "integrators (ddim, dpmpp*, unipc*), karras for --method edm; tuned fits the grid "
        "to this model's own ODE first (samplers.optimize_grid; --method ode)",
    )
    p.add_argument(
        "--eps", type=positive, help="the last time of the reverse solve (default eval.sample_eps)"
    )
    p.add_argument(
        "--denoise",
        action=argparse.BooleanOptionalAction,
        help="finish with one Tweedie denoising step (one evaluation; default: on for edm, "
        "off otherwise)",
    )
    p.add_argument("--n", type=integer(1), help="number of samples")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument(
        "--metrics",
        action="store_true",
        help="image runs: Fréchet distance, KID, precision/recall (and class accuracy) of "
        "the samples in a locally trained classifier's features (sample_metrics.json)",
    )
    g = p.add_argument_group("class-conditional runs (model.num_classes > 0)")
    g.add_argument(
        "--class",
        dest="label",
        metavar="K",
        help="sample class K (0..num_classes-1), or 'all': n/num_classes of each, one per row",
    )
    g.add_argument(
        "--guidance",
        type=finite,
        default=0.0,
        metavar="W",
        help="classifier-free guidance weight w: (1 + w) s(x|c) - w s(x) (default 0)",
    )
    g = p.add_argument_group("inpainting (the same as 'scoresde inpaint')")
    g.add_argument("--inpaint", metavar="MASK", help="see scoresde inpaint --help")
    _inpaint_options(g)
    p.set_defaults(func=_sample_or_inpaint)


def _sample_or_inpaint(args) -> int:
    """``sample --inpaint MASK`` is kept as a spelling of ``inpaint --region MASK``."""
    if args.inpaint is None and args.mask is None:
        return sample(args)
    if args.method not in (None, "sde"):
        raise ValueError("--inpaint runs the reverse SDE (replacement method): drop --method")
    args.region, args.n = args.inpaint or "left", args.n or 8
    return inpaint(args)


def _inpaint_parser(sub) -> None:
    p = sub.add_parser(
        "inpaint",
        help="fill hidden pixels of test images (inpaint.png, inpaint.npz)",
        description="Fill the hidden pixels of test images with the replacement method "
        "(reverse SDE); writes inpaint.png/.npz/.json.",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument(
        "--region",
        default="left",
        metavar="MASK",
        help="left|right|top|bottom (the half kept), center (hidden) or random:P (each "
        "pixel kept with probability P); default left",
    )
    p.add_argument(
        "--checkpoint",
        type=checkpoint,
        metavar="STEP|best|latest",
        help="the checkpoint to use (default: best on validation where kept, else latest)",
    )
    p.add_argument("--n", type=integer(1), default=8, help="test images (default 8)")
    p.add_argument("--steps", type=integer(1), help="reverse-SDE steps (default: eval.steps)")
    p.add_argument("--solver", help="an SDE solver name (default euler)")
    p.add_argument("--seed", type=integer(0), default=0)
    _inpaint_options(p)
    p.set_defaults(func=inpaint)


def _weights_option(p) -> None:
    p.add_argument(
        "--checkpoint",
        type=checkpoint,
        metavar="STEP|best|latest",
        help="the checkpoint to evaluate (default: best on validation where kept, else latest)",
    )
    p.add_argument(
        "--weights",
        default="ema",
        choices=["ema", "raw"],
        help="evaluate the EMA weights (default) or the network's raw weights",
    )


def _inpaint_options(p) -> None:
    """The options ``inpaint`` and ``sample --inpaint`` share."""
    p.add_argument("--mask", type=pathlib.Path, help="a .npy 0/1 mask of the image shape")
    p.add_argument("--fills", type=integer(1), default=4, help="completions per image (default 4)")
    p.add_argument("--corrector-steps", type=integer(0), default=0, help="Langevin steps per step")
    p.add_argument("--resample", type=integer(1), default=1, help="RePaint-style passes per step")


def _likelihood_parser(sub) -> None:
    p = sub.add_parser(
        "likelihood",
        help="test log-likelihood (likelihood.json)",
        description="Test log-likelihood through the probability-flow ODE (likelihood.json), "
        "or its continuous-time variational bound (--method elbo: elbo.json, beside the "
        "ODE figure).",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    _weights_option(p)
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument(
        "--method",
        default="ode",
        choices=["ode", "elbo"],
        help="ode: exact through the probability-flow ODE (default); elbo: the "
        "variational bound, 2 x --n-t score evaluations per example",
    )
    p.add_argument(
        "--n-t", type=integer(2), default=16, help="elbo: times per example (default 16)"
    )
    p.add_argument("--solver", help="an ODE solver name (default eval.solver)")
    p.add_argument("--rtol", type=positive, help="adaptive: relative tolerance (eval.rtol)")
    p.add_argument("--atol", type=positive, help="adaptive: absolute tolerance (eval.atol)")
    p.add_argument(
        "--steps",
        type=integer(1),
        help="fixed steps uniform in t instead of adaptive step control (for fixed-step "
        "solvers: euler, heun, midpoint, ...)",
    )
    p.add_argument("--n", type=integer(1), help="use the first N points of the split")
    p.set_defaults(func=likelihood)


PARSERS = {  # command: the function that adds its parser
    "train": _train_parser,
    "distill": _distill_parser,
    "sample": _sample_parser,
    "inpaint": _inpaint_parser,
    "likelihood": _likelihood_parser,
}
# commands whose options their own modules parse: (function of the rest of argv, help)
PASSTHROUGH = {
    "oracle": (oracle, "every sampler and the likelihood on an exact score"),
    "bench": (bench, "benchmarks: core | train | solvers | scale | gpu_ddpmpp (see BENCHMARKS.md)"),
    "experiment": (
        experiment,
        "studies: experiment vs-gan | objectives | path-change",
    ),
    "plot": (plot, "redraw a run's loss.png from its metrics.jsonl (even while it trains)"),
}


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs in JAX.",
        epilog="scoresde COMMAND --help shows a command's options.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for add in PARSERS.values():
        add(sub)
    for command in sub.choices.values():
        _add_distributed_args(command)
    for name, (_, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=text, add_help=False)  # listed; parsed by main()
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser().print_help()
        return 0
    commands = (*PARSERS, *PASSTHROUGH)
    if not argv[0].startswith("-") and argv[0] not in commands:
        print(
            f"scoresde: unknown command {argv[0]!r}; choose one of {', '.join(commands)}",
            file=sys.stderr,
        )
        return 2
    prog = "scoresde"
    try:
        if argv and argv[0] in PASSTHROUGH:
            prog = f"scoresde {argv[0]}"
            return PASSTHROUGH[argv[0]][0](argv[1:])
        args = parser().parse_args(argv)
        prog = f"scoresde {args.command}"
        _precheck(args)
        _join(args)
        with distributed.exit_on_peer_failure(prog):
            return args.func(args)
    except SystemExit as done:  # --help, or a usage error already printed (before JAX)
        return done.code if isinstance(done.code, int) else 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if isinstance(err, (ValueError, OSError)):  # before anything imports JAX
            print(f"{prog}: {err}", file=sys.stderr)
            return 2
        if isinstance(err, training.TrainingInterrupted):
            print(f"{prog}: {err}", file=sys.stderr)
            return INTERRUPTED
        if isinstance(err, _user_errors()):
            print(f"{prog}: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
