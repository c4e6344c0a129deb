"""``scoresde distill``: one- and few-step students of a trained run, trained by the
same loop as ``train`` (so with its guarantees: resume bit for bit after a kill, a NaN
stops with the last good checkpoint, an unreadable checkpoint is refused).

A student's work dir is a run like any other: its ``config.json`` is the teacher's
config with a ``distill`` section (the method, the teacher's work dir) and the
student's ``train`` settings, its network has the teacher's architecture and starts
from the teacher's EMA weights, and ``scoresde sample --workdir STUDENT --steps N``
samples it with its method's sampler:

========  =============================================  ==============================
method    objective (:mod:`sde`)                         sampler
========  =============================================  ==============================
cd        :func:`sde.consistency_distillation_loss`,     :func:`samplers.sample_consistency`
          the teacher's ODE step by ``distill.teacher_solver``
ect       :func:`sde.consistency_training_loss` (ECT;    :func:`samplers.sample_consistency`
          from the teacher's weights, or from data)
pd        :func:`sde.progressive_distillation_loss`,     DDIM on the log-SNR grid
          ``pd_start`` DDIM steps halved per stage        (``samplers.DDIM``)
meanflow  :func:`sde.meanflow_loss` (the teacher's       :func:`samplers.sample_meanflow`
          velocity, or data)
========  =============================================  ==============================

Progressive distillation runs in stages of ``train.steps / log2(pd_start)`` steps; the
teacher of stage ``k > 0`` is the student's weights at the end of stage ``k - 1``, kept
in ``stages/`` so that a resumed stage distils from the same teacher.
"""

from __future__ import annotations

import json
import math
import pathlib

import jax.numpy as jnp
from flax import nnx

import networks
import samplers
import sde as sde_lib
from experiments import build
from experiments import config as config_lib
from experiments.run import Run

METHODS = ("cd", "ect", "pd", "meanflow")
CONSISTENCY = ("cd", "ect")
# what each method changes in the teacher's config unless the command line says
# otherwise (measured on checkerboard, 2 cores: each finishes in <= 10 minutes)
DEFAULTS: dict[str, dict[str, object]] = {
    "cd": {
        "train.steps": 12000, "train.lr": 1e-3, "train.warmup_steps": 100,
        "train.schedule": "cosine", "train.ema_decay": 0.999,
    },
    "ect": {
        "train.steps": 8000, "train.lr": 1e-4, "train.warmup_steps": 0,
        "train.schedule": "constant", "train.ema_decay": 0.999,
    },
    "pd": {
        "train.steps": 12000, "train.lr": 1e-4, "train.warmup_steps": 0,
        "train.schedule": "constant", "train.ema_decay": 0.0,
    },
    "meanflow": {
        "train.steps": 8000, "train.lr": 3e-4, "train.warmup_steps": 100,
        "train.schedule": "cosine", "train.ema_decay": 0.999, "model.interval_time": True,
    },
}  # fmt: skip
SAMPLING = {"cd": "consistency", "ect": "consistency", "pd": "ode", "meanflow": "meanflow"}


class DistillError(ValueError):
    """A distillation that cannot run as asked (one line on the command line)."""


def is_student(cfg: config_lib.Config) -> bool:
    return bool(cfg.distill.method)


def check(cfg: config_lib.Config) -> None:
    """The ``distill`` section's values, with the accepted ranges."""
    d = cfg.distill
    if d.method not in METHODS:
        raise DistillError(f"distill.method must be one of {', '.join(METHODS)}, got {d.method!r}")
    if not d.teacher and d.method in ("cd", "pd"):
        raise DistillError(
            f"--method {d.method} distils a teacher: give --teacher DIR (only ect and "
            "meanflow train from data)"
        )
    if d.steps_n < 2:
        raise DistillError(f"distill.steps_n must be >= 2, got {d.steps_n}")
    if d.pd_start < 2 or d.pd_start & (d.pd_start - 1):
        raise DistillError(f"distill.pd_start must be a power of 2 >= 2, got {d.pd_start}")
    for name, allowed in (("meanflow_path", ("rf", "teacher")),
                          ("meanflow_velocity", ("data", "teacher"))):  # fmt: skip
        if getattr(d, name) not in allowed:
            raise DistillError(
                f"distill.{name} must be one of {', '.join(allowed)}, got {getattr(d, name)!r}"
            )
    if d.meanflow_times not in sde_lib.MEANFLOW_TIMES:
        raise DistillError(
            f"distill.meanflow_times must be one of {', '.join(sde_lib.MEANFLOW_TIMES)}, got "
            f"{d.meanflow_times!r}"
        )
    if not 0 <= d.meanflow_p_equal <= 1:
        raise DistillError(f"distill.meanflow_p_equal must lie in [0, 1], got {d.meanflow_p_equal}")
    for name in ("sigma_data", "huber_c", "ect_k", "ect_b"):
        if not getattr(d, name) > 0:
            raise DistillError(f"distill.{name} must be > 0, got {getattr(d, name)}")
    if not d.ect_q > 1:
        raise DistillError(f"distill.ect_q must be > 1, got {d.ect_q}")
    if d.ect_stages < 1:
        raise DistillError(f"distill.ect_stages must be >= 1, got {d.ect_stages}")
    if not d.sample_steps or any(n < 1 for n in d.sample_steps):
        raise DistillError(f"distill.sample_steps must be steps >= 1, got {d.sample_steps}")
    if d.output_weighting not in ("edm", "none"):
        raise DistillError(
            f"distill.output_weighting must be one of edm, none, got {d.output_weighting!r}"
        )
    if d.weighting not in sde_lib.CD_WEIGHTINGS:
        raise DistillError(
            f"distill.weighting must be one of {', '.join(sde_lib.CD_WEIGHTINGS)}, "
            f"got {d.weighting!r}"
        )
    if d.distance not in sde_lib.CONSISTENCY_DISTANCES:
        raise DistillError(
            f"distill.distance must be one of {', '.join(sde_lib.CONSISTENCY_DISTANCES)}, "
            f"got {d.distance!r}"
        )
    build.solver(d.teacher_solver)


def student_config(
    method: str,
    teacher: pathlib.Path | None,
    base: config_lib.Config | None,
    overrides: list[str],
) -> config_lib.Config:
    """The student's config: the teacher's (or ``base``, training from data), the
    method's :data:`DEFAULTS`, then ``overrides``; validation off (a student has no
    likelihood to rank checkpoints by)."""
    if method not in METHODS:
        raise DistillError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if teacher is not None:
        path = pathlib.Path(teacher) / "config.json"
        if not path.exists():
            raise DistillError(f"--teacher {teacher} has no config.json: train a teacher there")
        base = config_lib.read(path)
        if is_student(base):
            raise DistillError(
                f"--teacher {teacher} is itself a {base.distill.method} student; distil a "
                "score model (progressive distillation runs its own stages)"
            )
    elif base is None:
        raise DistillError(f"--method {method} without --teacher needs --config NAME_OR_FILE")
    defaults = [f"{k}={v}" for k, v in DEFAULTS[method].items()]
    fixed = [
        f"distill.method={method}",
        f"distill.teacher={'' if teacher is None else pathlib.Path(teacher).resolve()}",
        "train.eval_every=0",
        f"eval.method={SAMPLING[method]}",
    ]
    cfg = config_lib.validate(config_lib.apply_overrides(base, [*defaults, *fixed, *overrides]))
    check(cfg)
    if method == "meanflow" and teacher is not None and cfg.distill.meanflow_path == "rf":
        path = rf_path(base)
        if path:
            merged = [*defaults, *path, *fixed, *overrides]
            cfg = config_lib.validate(config_lib.apply_overrides(base, merged))
            check(cfg)
    return cfg


def rf_path(teacher_cfg: config_lib.Config) -> list[str]:
    """Overrides that put a MeanFlow student on the rectified-flow path with the log-SNR
    range of the teacher's ``[eps, T]`` (:func:`sde.matched_path`), as a fresh
    velocity-prediction network (the MeanFlow paper's setting); ``[]`` for an RF teacher.

    Why: the average velocity over ``[r, t]`` is what the student learns, and on the VP
    path in its own time most of a trajectory's motion is squeezed near the ends (on
    ``checkerboard`` a student on the teacher's VP path and weights stayed at the
    teacher's one-step Euler map, 45.8% of 1-step samples on the board).
    """
    if teacher_cfg.sde.name == "rf":
        return []
    rf, t_min = sde_lib.matched_path(build.sde(teacher_cfg.sde), "rf", teacher_cfg.eval.sample_eps)
    t_max = float(rf.T)
    return [
        "sde.name=rf", f"sde.t_max={t_max!r}", f"eval.sample_eps={t_min!r}",
        f"train.eps={t_min!r}", "model.parametrisation=velocity", "model.histogram_base=false",
    ]  # fmt: skip


# ---------------------------------------------------------------------------- teacher


def teacher_run(cfg: config_lib.Config) -> Run | None:
    """The teacher's run (EMA weights), or None when training from data."""
    if not cfg.distill.teacher:
        return None
    checkpoint = cfg.distill.teacher_checkpoint or None
    return Run.restore(pathlib.Path(cfg.distill.teacher), checkpoint=checkpoint)


def _shape(variable) -> tuple[int, ...]:
    return tuple(getattr(variable, "get_value", lambda: variable.value)().shape)


def _graft(student: nnx.State, teacher: nnx.State) -> nnx.State:
    """``student`` with every leaf that ``teacher`` has at the same path replaced by
    the teacher's (a MeanFlow network's extra interval embedding keeps its zeros)."""
    flat = dict(nnx.to_flat_state(student))
    for path, value in nnx.to_flat_state(teacher):
        if path in flat:
            mine, theirs = _shape(flat[path]), _shape(value)
            if mine != theirs:
                raise DistillError(
                    f"the teacher's weight {'/'.join(map(str, path))} has shape "
                    f"{theirs}, the student's {mine}: a student "
                    "keeps the teacher's architecture (do not override model.*)"
                )
            flat[path] = value
    return nnx.from_flat_state(flat)


def initial_student(cfg: config_lib.Config, teacher: Run | None) -> Run:
    """The student's run: the config's network, with the teacher's EMA weights (in both
    the network and its EMA copy) where there is a teacher."""
    run = Run.create(cfg)
    if teacher is None or not same_path(cfg, teacher.cfg):
        return run  # from data, or a MeanFlow student on another path: a fresh network
    t_model, t_ema = nnx.merge(teacher.graphdef, teacher.state)
    weights = nnx.state(t_ema.apply_to(t_model) if hasattr(t_ema, "apply_to") else t_model)
    model, ema = nnx.merge(run.graphdef, run.state)
    nnx.update(model, _graft(nnx.state(model), weights))
    ema_copy = nnx.EMA(model, decay=cfg.train.ema_decay, only=nnx.Param)
    return run.replace(state=nnx.state((model, ema_copy)))


# ---------------------------------------------------------------------------- objectives


def _labelled(fn, labels):
    if labels is None:
        return fn
    return lambda x, t: fn(x, t, labels)


def _data_prediction(score, forward):
    def x0(x, t):
        a, s = forward.marginal(t)
        return (x + sde_lib.expand_time(s**2, x) * score(x, t)) / sde_lib.expand_time(a, x)

    return x0


def consistency_grid(forward, n: int, eps: float):
    """CD's ``n``-point grid from ``eps`` up to ``T``: Karras et al.'s (rho = 7) in
    sigma = s/a, as Song et al. 2023."""
    return samplers.karras_grid(forward, n - 1, eps)[::-1]


def pd_grid(forward, steps: int, eps: float):
    """The ``steps``-step DDIM grid of progressive distillation: uniform in log-SNR,
    so each halving keeps every other point."""
    return samplers.log_snr_grid(forward, steps, eps)


def pd_stages(cfg: config_lib.Config) -> list[tuple[int, int]]:
    """``[(end_step, student_steps), ...]``: stage ``k`` distils ``2 M`` DDIM steps
    into ``M = pd_start / 2^(k+1)``, ending at ``end_step``."""
    n = int(round(math.log2(cfg.distill.pd_start)))
    per = cfg.train.steps // n
    if per < 1:
        raise DistillError(
            f"train.steps={cfg.train.steps} is fewer than the {n} stages of "
            f"distill.pd_start={cfg.distill.pd_start}"
        )
    return [
        (cfg.train.steps if k == n - 1 else per * (k + 1), cfg.distill.pd_start >> (k + 1))
        for k in range(n)
    ]


def objective(run: Run, teacher_score, stage_steps: int | None = None):
    """``objective(model, x0, key, step, labels) -> [B]`` of the run's method;
    ``teacher_score`` is a pure ``score(x, t, labels=None)`` (None: from data);
    ``stage_steps``: the PD student's steps in this stage."""
    cfg, forward, param = run.cfg, run.sde, run.param
    d, eps = cfg.distill, cfg.eval.sample_eps

    def student_score(model, labels):
        return _labelled(networks.score_fn(model, forward, param), labels)

    scale = None
    if d.output_weighting == "edm":
        scale = networks.output_scale(forward, param, d.sigma_data, run.source.shape)

    def _student_consistency(model, labels):
        score = student_score(model, labels)
        return networks.consistency_function(score, forward, eps, d.sigma_data)

    if d.method == "cd":
        ts = consistency_grid(forward, d.steps_n, eps)
        solver = build.solver(d.teacher_solver)

        def loss(model, x0, key, step, labels):
            f = _student_consistency(model, labels)
            step_fn = samplers.pf_ode_step(teacher_score, forward, solver)
            teacher = step_fn if labels is None else (lambda x, a, b: step_fn(x, a, b, labels))
            return sde_lib.consistency_distillation_loss(
                f, teacher, forward, x0, key, ts=ts, distance_kind=d.distance,
                huber_c=d.huber_c, weighting=d.weighting, output_scale=scale,
            )  # fmt: skip

    elif d.method == "ect":

        def loss(model, x0, key, step, labels):
            f = _student_consistency(model, labels)
            return sde_lib.consistency_training_loss(
                f, forward, x0, key, step, total_steps=cfg.train.steps, eps=eps,
                distance_kind=d.distance, huber_c=d.huber_c, stages=d.ect_stages,
                q=d.ect_q, k=d.ect_k, b=d.ect_b, output_scale=scale,
            )  # fmt: skip

    elif d.method == "pd":
        ts = pd_grid(forward, 2 * stage_steps, eps)

        def loss(model, x0, key, step, labels):
            student = _data_prediction(student_score(model, labels), forward)
            teacher = _data_prediction(_labelled(teacher_score, labels), forward)
            return sde_lib.progressive_distillation_loss(student, teacher, forward, x0, key, ts=ts)

    else:  # meanflow
        use_teacher = teacher_score is not None and d.meanflow_velocity == "teacher"
        velocity = teacher_score if use_teacher else None

        def loss(model, x0, key, step, labels):
            u = networks.mean_flow_fn(model, forward, param)
            u_fn = u if labels is None else (lambda x, r, t: u(x, r, t, labels))
            v_fn = None
            if velocity is not None:
                v_fn = sde_lib.pf_velocity(_labelled(velocity, labels), forward)
            return sde_lib.meanflow_loss(
                u_fn, forward, x0, key, velocity_fn=v_fn, p_equal=d.meanflow_p_equal,
                times=d.meanflow_times, norm_p=d.meanflow_norm_p, eps=eps,
            )  # fmt: skip

    return loss


# ---------------------------------------------------------------------------- driver


def same_path(cfg: config_lib.Config, teacher_cfg: config_lib.Config) -> bool:
    """Whether the student lives on the teacher's path with its parametrisation."""
    return (cfg.sde, cfg.model.parametrisation) == (
        teacher_cfg.sde, teacher_cfg.model.parametrisation,
    )  # fmt: skip


def _pure_score(run: Run, student_cfg: config_lib.Config | None = None):
    """The teacher's pure score, on the student's path (:class:`sde.PathChange`)."""
    score = run.score_function()
    if student_cfg is None or student_cfg.sde == run.cfg.sde:
        return score
    trained_on, used_on = run.sde, build.sde(student_cfg.sde)

    def changed(x, t, labels=None):
        inner = score if labels is None else (lambda x_, t_: score(x_, t_, labels))
        return sde_lib.PathChange(inner, trained_on=trained_on, used_on=used_on)(x, t)

    return changed


def _stage_dir(workdir: pathlib.Path) -> pathlib.Path:
    return workdir / "stages"


def _has_stage(workdir: pathlib.Path, k: int) -> bool:
    from experiments.training.checkpoint import checkpoint_steps

    return k in checkpoint_steps(workdir, sub="stages")


def _stage_teacher(run: Run, workdir: pathlib.Path, k: int, weights: nnx.State | None):
    """The weights PD's stage ``k`` distils from: kept in ``stages/`` at the stage's
    start (``weights`` given: save them there first), read back on a resume."""
    from experiments.run import abstract
    from experiments.training.checkpoint import Checkpoints

    ckpts = Checkpoints(_stage_dir(workdir), keep=1_000_000)
    try:
        if weights is not None and k not in ckpts.steps():
            ckpts.save(k, {"weights": weights}, {"step": k})
        restored = ckpts.restore(k, {"weights": abstract(run.state)})
    finally:
        ckpts.close()
    return run.replace(state=restored[0]["weights"])


def distill(student: Run, workdir: pathlib.Path, teacher: Run | None, **train_kwargs):
    """Train ``student`` (from :func:`initial_student`) in ``workdir``; returns what
    :func:`experiments.training.train` returns, for the last stage."""
    from experiments.training.loop import train

    workdir = pathlib.Path(workdir)
    score = None if teacher is None else _pure_score(teacher, student.cfg)
    if student.cfg.distill.method != "pd":
        return train(student.replace(objective=objective(student, score)), workdir, **train_kwargs)
    from experiments.training.checkpoint import checkpoint_steps

    done = (checkpoint_steps(workdir) or [0])[-1]
    stages, out = pd_stages(student.cfg), None
    for k, (end, steps) in enumerate(stages):
        if k < len(stages) - 1 and (end < done or end == done and _has_stage(workdir, k + 1)):
            continue  # finished, and the next stage's teacher is kept
        if k == 0:
            stage_teacher = score
        else:
            prev = _stage_teacher(student, workdir, k, None if out is None else out[0].state)
            stage_teacher = _pure_score(prev.replace(state=_raw(prev)))
        run = student.replace(objective=objective(student, stage_teacher, stage_steps=steps))
        out = train(run, workdir, stop_at=end, **train_kwargs)
        train_kwargs["announce"] = None  # said once
    return out


def _raw(run: Run) -> nnx.State:
    """The network's own weights in the EMA slot too: PD's next teacher is the
    student as trained, not its average."""
    return run.with_weights("raw").state


def describe(cfg: config_lib.Config) -> str:
    d = cfg.distill
    what = {"cd": "consistency distillation", "ect": "consistency tuning (ECT)",
            "pd": "progressive distillation", "meanflow": "MeanFlow"}[d.method]  # fmt: skip
    src = f"teacher {d.teacher}" if d.teacher else "from data"
    extra = ""
    if d.method == "pd":
        extra = f", {d.pd_start} -> 1 DDIM steps in {len(pd_stages(cfg))} stages"
    if d.method == "cd":
        extra = f", teacher solver {d.teacher_solver} on {d.steps_n} points"
    if d.method == "meanflow" and d.teacher and d.meanflow_path == "rf":
        extra = ", on the rectified-flow path of the teacher's log-SNR range (fresh network)"
    return f"{what}, {src}{extra}"


def record(workdir: pathlib.Path, cfg: config_lib.Config, seconds: float) -> None:
    """``distill.json``: the method and the wall time of the run."""
    out = {"method": cfg.distill.method, "teacher": cfg.distill.teacher, "seconds": seconds}
    (pathlib.Path(workdir) / "distill.json").write_text(json.dumps(out, indent=2) + "\n")


__all__ = [
    "DEFAULTS",
    "METHODS",
    "DistillError",
    "check",
    "describe",
    "distill",
    "initial_student",
    "is_student",
    "objective",
    "pd_student",
    "student_config",
    "in_memory",
    "sampler",
    "sampling_grid",
    "snapped_grid",
    "teacher_run",
]


# ---------------------------------------------------------------------------- in memory


def in_memory(
    teacher: Run, method: str, overrides: list[str] = (), *, chunk: int = 500
) -> tuple[Run, float]:
    """A ``method`` student of the in-memory ``teacher`` (e.g. a run from
    :func:`experiments.training.fit`), trained by ``fit`` with the method's defaults and
    ``overrides``; PD runs its stages in turn, each with a fresh optimizer. Returns the
    student and the distillation's wall time in seconds."""
    import time

    from experiments.training.fit import fit

    if method not in METHODS:
        raise DistillError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    defaults = [f"{k}={v}" for k, v in DEFAULTS[method].items()]
    fixed = [f"distill.method={method}", "distill.teacher=(in memory)", "train.eval_every=0"]
    fixed.append(f"eval.method={SAMPLING[method]}")
    cfg = config_lib.apply_overrides(teacher.cfg, [*defaults, *fixed, *overrides])
    cfg = config_lib.validate(cfg)
    check(cfg)
    student = initial_student(cfg, teacher).replace(source=teacher.source)
    score, start = _pure_score(teacher, cfg), time.perf_counter()
    if method != "pd":
        out, _, _ = fit(student.replace(objective=objective(student, score)), chunk=chunk)
        return out.replace(objective=None), time.perf_counter() - start
    done = 0
    for end, steps in pd_stages(cfg):
        run = student.replace(objective=objective(student, score, stage_steps=steps), step=0)
        trained, _, _ = fit(run, steps=end - done, chunk=chunk)
        done, student = end, trained.replace(objective=None)
        score = _pure_score(student.replace(state=_raw(student)))
    return student, time.perf_counter() - start


def sampler(run: Run, steps: int):
    """``draw(key, shape) -> (x, stats)``: the student's own sampler with ``steps``
    network evaluations (as ``scoresde sample --workdir STUDENT --steps N``)."""
    method, forward, eps = run.cfg.distill.method, run.sde, run.cfg.eval.sample_eps
    if method in CONSISTENCY:
        f = run.score_function()
        ts = sampling_grid(run.cfg, forward, steps)
        kw = dict(ts=ts, eps=eps, sigma_data=run.cfg.distill.sigma_data)
        return lambda key, shape: samplers.sample_consistency(
            score_fn=f, sde=forward, shape=shape, key=key, **kw
        )
    if method == "pd":
        f, ts = run.score_function(), pd_grid(forward, steps, eps)
        return lambda key, shape: samplers.sample_ode(
            score_fn=f, sde=forward, shape=shape, key=key, solver=samplers.DDIM(), ts=ts
        )
    from experiments.evaluation.sample import student_function

    u = student_function(run)
    return lambda key, shape: samplers.sample_meanflow(
        mean_flow=u, sde=forward, shape=shape, key=key, steps=steps, eps=eps
    )


def pd_student(run: Run, steps: int) -> Run:
    """The PD run's student for ``steps`` DDIM steps: the final weights when ``steps``
    is the last stage's count (1), else the student kept at the end of the stage that
    distilled ``steps`` steps (``stages/``; raw weights), else ``run`` unchanged (its
    final student, sampled with more steps than it was distilled for)."""
    if run.cfg.distill.method != "pd" or run.workdir is None:
        return run
    stages = pd_stages(run.cfg)
    for k, (end, student_steps) in enumerate(stages[:-1]):
        if student_steps == steps and _has_stage(run.workdir, k + 1):
            stage = _stage_teacher(run, run.workdir, k + 1, None)
            return stage.replace(state=_raw(stage), weights="raw", checkpoint="step", step=end)
    return run


def sampling_grid(cfg: config_lib.Config, forward, steps: int):
    """The ``steps``-step grid a student samples on. A CD student has seen only the
    ``distill.steps_n`` times of its training grid (its time embedding need not
    interpolate between them), so the log-SNR grid's inner times snap to the nearest of
    them (in log sigma); others take the log-SNR grid as it is."""
    eps = cfg.eval.sample_eps
    grid = samplers.log_snr_grid(forward, steps, eps)
    if cfg.distill.method != "cd" or steps < 2:
        return grid
    return snapped_grid(forward, steps, eps, consistency_grid(forward, cfg.distill.steps_n, eps))


def snapped_grid(forward, steps: int, eps: float, train):
    """The ``steps``-step log-SNR grid from ``T`` to ``eps`` with its inner times moved
    to the nearest (in log-SNR) of the times ``train`` (merged where two meet)."""
    grid = samplers.log_snr_grid(forward, steps, eps)
    if steps < 2:
        return grid
    lam_train, lam = forward.log_snr(train), forward.log_snr(grid[1:-1])
    nearest = jnp.argmin(jnp.abs(lam[:, None] - lam_train[None, :]), axis=1)
    inner = jnp.unique(train[nearest])[::-1]  # descending; duplicates merged
    return jnp.concatenate([grid[:1], inner, grid[-1:]])
