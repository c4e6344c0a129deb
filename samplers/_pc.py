"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2 and 3)."""

from __future__ import annotations

import diffrax
import equinox as eqx
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from ._inputs import checked_eps, finish_stats, normalise_inputs
from ._reverse import finish
from ._sde import reverse_sde_solve, split_sampling_key
from ._solvers.corrector import AbstractCorrector, LangevinCorrector
from ._solvers.wrapped import PredictorCorrector
from ._stepping import bind, count_evaluations, time_grid

_DEFAULT_CORRECTOR = LangevinCorrector(snr=0.16, n_steps=1)


def resolve_corrector(
    corrector, snr, corrector_steps, *, unset=_DEFAULT_CORRECTOR, default_steps: int = 1
) -> AbstractCorrector | None:
    """The corrector a sampler runs: ``corrector=``, or one built from the
    ``snr=``/``corrector_steps=`` numbers (never both). ``unset`` is the sampler's
    default ``corrector``, ``default_steps`` its default ``corrector_steps``."""
    numbers_given = snr is not None or corrector_steps is not None
    if numbers_given and corrector is not unset:
        raise ValueError(
            "give either corrector= or snr=/corrector_steps= (which build "
            f"LangevinCorrector(snr, n_steps)), not both: got corrector={corrector!r}, "
            f"snr={snr!r}, corrector_steps={corrector_steps!r}"
        )
    if numbers_given:
        return LangevinCorrector(
            snr=_DEFAULT_CORRECTOR.snr if snr is None else snr,
            n_steps=default_steps if corrector_steps is None else corrector_steps,
        )
    if corrector is not None and not isinstance(corrector, AbstractCorrector):
        raise ValueError(
            "corrector must be a samplers.AbstractCorrector (e.g. "
            f"samplers.LangevinCorrector(snr=0.16, n_steps=1)) or None, got {corrector!r}"
        )
    return corrector


def sample_pc(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Euler(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    corrector: AbstractCorrector | None = _DEFAULT_CORRECTOR,
    snr: float | None = None,
    corrector_steps: int | None = None,
    eps: float = 1e-3,
    denoise: bool = False,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""Predictor-corrector sampling: at each grid time a ``corrector`` (by default
    one Langevin step at signal-to-noise ratio 0.16), then a reverse-SDE step.

    The predictor is any fixed-step diffrax SDE solver (Euler-Maruyama by default, as
    score_sde's ``ReverseDiffusionPredictor``/``EulerMaruyamaPredictor``); the grid is
    ``steps`` uniform steps (default 1000) or ``ts`` from T down to eps.

    Args:
        corrector: a :class:`samplers.AbstractCorrector`, by default
            ``LangevinCorrector(snr=0.16, n_steps=1)``; ``None`` runs the predictor
            alone, which is exactly :func:`sample_sde` with the same key (so is
            ``n_steps=0``; ``snr=0`` gives the same samples but still spends the
            corrector's evaluations).
        snr, corrector_steps: the Langevin corrector given by its numbers,
            ``LangevinCorrector(snr=snr, n_steps=corrector_steps)`` (each defaults as
            above); give these or ``corrector``, not both.

    Other arguments as :func:`sample_sde`. Returns ``(x, stats)``; ``stats["nfe"]``
    counts predictor and corrector score evaluations, ``stats["finite"]`` says whether
    every sample is finite (``check_finite=True``: raise if not).

    Example::

        x, stats = samplers.sample_pc(score_fn=oracle.score, sde=ve, shape=(512, 2),
                                      key=jax.random.key(0), steps=1000,
                                      corrector=samplers.LangevinCorrector(snr=0.16))
    """
    kw = normalise_inputs(
        dict(
            sde=sde,
            shape=shape,
            steps=steps,
            ts=ts,
            eps=eps,
            corrector_steps=corrector_steps,
            check_finite=check_finite,
        )
    )
    return _sample_pc(
        score_fn=score_fn,
        sde=sde,
        shape=kw["shape"],
        key=key,
        solver=solver,
        steps=kw["steps"],
        ts=ts,
        corrector=resolve_corrector(corrector, snr, kw["corrector_steps"]),
        eps=eps,
        denoise=denoise,
        check_finite=check_finite,
    )


@eqx.filter_jit
def _sample_pc(
    *, score_fn, sde, shape, key, solver, steps, ts, corrector, eps, denoise, check_finite
):
    eps = checked_eps(eps, sde)
    if steps is None and ts is None:
        steps = 1000
    grid = time_grid(steps, ts, sde.T, eps)
    prior_key, path_key, corrector_key = split_sampling_key(key)
    solver = bind(solver, sde)
    if corrector is not None:
        solver = PredictorCorrector(
            predictor=solver, corrector=corrector, score_fn=score_fn, sde=sde, key=corrector_key
        )
    sol = reverse_sde_solve(
        score_fn=score_fn,
        sde=sde,
        x_T=sde.prior_sample(prior_key, shape),
        key=path_key,
        solver=solver,
        grid=grid,
        eps=eps,
        name="sample_pc",
    )
    stats = {"nfe": count_evaluations(solver, sol.num_steps), "num_steps": sol.num_steps}
    x, stats = finish(score_fn, sde, sol.x, stats, t_end=sol.t_end, denoise=denoise)
    return finish_stats("sample_pc", x, stats, check_finite)
