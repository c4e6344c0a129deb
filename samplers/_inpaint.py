r"""Imputation (inpainting) with an unconditional score model (Song et al. 2021, App. I.2).

Split the coordinates into known ones :math:`\Omega` (``mask == 1``), observed as
:math:`y = x_\Omega(0)`, and unknown ones :math:`\bar\Omega`. The exact conditional
reverse SDE needs :math:`\nabla_{x_{\bar\Omega}} \log p_t(x_{\bar\Omega}(t) \mid y)`,
which an unconditional model does not give. Song et al. approximate it by
:math:`\nabla_{x_{\bar\Omega}} \log p_t(x_{\bar\Omega}(t), \hat x_\Omega(t))` with
:math:`\hat x_\Omega(t)` a random draw from the forward kernel
:math:`p_{0t}(x_\Omega(t) \mid y) = N(a(t) y, s(t)^2 I)`: run the unconditional reverse
SDE (or predictor-corrector) on all coordinates and, after every step (and every
corrector step), overwrite the known coordinates with

.. math:: x_\Omega(t) \leftarrow a(t)\, y + s(t)\, z, \qquad z \sim N(0, I)
    \text{ drawn afresh at every step.}

This is the *replacement* method. It is not exact posterior sampling: the unknown
coordinates see the known ones only through their noisy copies, so information in
:math:`y` reaches them only once :math:`s(t)` is small against the features of
:math:`y` that matter. ``docs/controllable.md`` measures the error with the exact
score of a Gaussian mixture. ``resample=r`` applies RePaint's remedy (Lugmayr et al.
2022, jump length 1): after each step, diffuse the state back over the step with the
forward kernel and repeat the step, ``r`` times in all, which lets the unknown part
harmonise with the known one at every noise level.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from ._inputs import checked_eps, finish_stats, normalise_inputs
from ._pc import resolve_corrector
from ._reverse import finish
from ._sde import reverse_sde_solve, split_sampling_key
from ._solvers.corrector import LangevinCorrector
from ._solvers.wrapped import WrapsPredictor
from ._stepping import bind, count_evaluations, evaluations_per_step, time_grid


class Imputation(WrapsPredictor):
    r"""A diffrax solver wrapper: the replacement method for imputation.

    Works in the samplers' time ``s = -t``. Each step runs, at the step's start time,
    ``corrector.n_steps`` Langevin steps, then the ``predictor`` step (any fixed-step
    diffrax SDE solver, e.g. ``Euler()``, ``Heun()``, ``ShARK()``); after each of them
    the known coordinates (``mask``) are replaced by a fresh draw
    :math:`a(t) y + s(t) z` from the forward kernel (Song et al. 2021, App. I.2).

    With ``resample > 1`` the step is repeated (RePaint, Lugmayr et al. 2022, with jump
    length 1): the projected result at :math:`t_1 < t_0` is diffused back to
    :math:`t_0` by the forward transition kernel,
    :math:`x_{t_0} = \tfrac{a(t_0)}{a(t_1)} x_{t_1}
    + \sqrt{s(t_0)^2 - (a(t_0)/a(t_1))^2 s(t_1)^2}\; z`, and the step taken again
    with fresh Brownian noise. Resampling needs the reverse-SDE terms built by
    :func:`sample_inpaint` (their Brownian path is swapped for fresh ones).

    The noise (corrector, replacement, resampling) comes from a key carried in the
    solver state, split once per step.
    """

    predictor: diffrax.AbstractSolver
    corrector: LangevinCorrector
    score_fn: ScoreFn
    sde: sde_lib.AbstractSDE
    x_known: Array
    mask: Array
    key: PRNGKeyArray
    resample: int = eqx.field(static=True, default=1)

    @property
    def score_evaluations_per_step(self) -> int | None:
        inner = evaluations_per_step(self.predictor)
        if inner is None:
            return None
        return self.resample * (inner[0] + self.corrector.n_steps)

    def project(self, x: Array, t: Array, key: PRNGKeyArray) -> Array:
        """Replace the known coordinates of ``x`` by a draw from ``N(a(t) y, s(t)^2)``."""
        a, s = self.sde.marginal(jnp.asarray(t, x.dtype))
        z = jax.random.normal(key, x.shape, x.dtype)
        return jnp.where(self.mask, a * self.x_known + s * z, x)

    def init(self, terms, t0, t1, y0, args):
        return self.predictor.init(terms, t0, t1, y0, args), self.key

    def _one_pass(self, terms, t0, t1, y0, args, inner_state, made_jump, key):
        k_corr, k_proj = jax.random.split(key)
        single = LangevinCorrector(snr=self.corrector.snr, n_steps=1)
        for k in jax.random.split(k_corr, self.corrector.n_steps):
            k_lan, k_rep = jax.random.split(k)
            y0 = single(self.score_fn, self.sde, y0, -t0, t1 - t0, k_lan)
            y0 = self.project(y0, -t0, k_rep)
        y1, y_error, dense, inner_state, result = self.predictor.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        return self.project(y1, -t1, k_proj), y_error, dense, inner_state, result

    def _renoise(self, y1, t0, t1, key):
        """Forward transition from time ``-t1`` back up to ``-t0`` (``-t0 > -t1``)."""
        lo, hi = jnp.asarray(-t1, y1.dtype), jnp.asarray(-t0, y1.dtype)
        ratio = jnp.exp(self.sde.log_mean_coeff(hi) - self.sde.log_mean_coeff(lo))
        var = self.sde.std(hi) ** 2 - ratio**2 * self.sde.std(lo) ** 2
        z = jax.random.normal(key, y1.shape, y1.dtype)
        return ratio * y1 + jnp.sqrt(jnp.maximum(var, 0.0)) * z

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, key = solver_state
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, self.resample)
        out = self._one_pass(terms, t0, t1, y0, args, inner_state, made_jump, keys[0])
        for i in range(1, self.resample):
            k_back, k_path, k_pass = jax.random.split(keys[i], 3)
            y_back = self._renoise(out[0], t0, t1, k_back)
            fresh = _with_fresh_noise(terms, y0.shape, k_path)
            out = self._one_pass(fresh, t0, t1, y_back, args, inner_state, made_jump, k_pass)
        y1, y_error, dense, inner_state, result = out
        return y1, y_error, dense, (inner_state, key), result


def _with_fresh_noise(terms, shape, key):
    """``terms`` with every Brownian path in it replaced by one drawn from ``key`` (a
    repeated step must not reuse the increments of the first pass)."""

    def is_path(node):
        return isinstance(node, diffrax.AbstractBrownianPath)

    leaves, treedef = jax.tree_util.tree_flatten(terms, is_leaf=is_path)
    if not any(is_path(leaf) for leaf in leaves):
        raise ValueError("resample > 1 needs SDE terms with a Brownian path")
    leaves = [
        diffrax.UnsafeBrownianPath(
            shape, key, levy_area=getattr(leaf, "levy_area", diffrax.BrownianIncrement)
        )
        if is_path(leaf)
        else leaf
        for leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_mask(x_known: Array, mask: ArrayLike) -> tuple[Array, Array]:
    x_known = jnp.asarray(x_known)
    if x_known.ndim < 2 or not jnp.issubdtype(x_known.dtype, jnp.floating):
        raise ValueError(
            f"x_known must be a float array of shape [B, *dims], got shape {x_known.shape} "
            f"and dtype {x_known.dtype}"
        )
    mask = jnp.asarray(mask)
    try:
        np.broadcast_shapes(mask.shape, x_known.shape)
    except ValueError:
        raise ValueError(
            f"mask must broadcast to x_known's shape {x_known.shape}, got shape {mask.shape}"
        ) from None
    if np.broadcast_shapes(mask.shape, x_known.shape) != x_known.shape:
        raise ValueError(
            f"mask must broadcast to x_known's shape {x_known.shape}, got shape {mask.shape}"
        )
    mask = eqx.error_if(
        mask, jnp.any((mask != 0) & (mask != 1)), "mask must hold only 0/1 (or bool) values"
    )
    mask = jnp.broadcast_to(mask != 0, x_known.shape)
    x_known = eqx.error_if(
        x_known,
        ~jnp.all(jnp.isfinite(x_known) | ~mask),
        "x_known must be finite where mask == 1, got NaN or inf there",
    )
    return jnp.where(mask, x_known, 0.0), mask


def sample_inpaint(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
    x_known: Array,
    mask: ArrayLike,
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Euler(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    eps: float = 1e-3,
    corrector: LangevinCorrector | None = None,
    snr: float | None = None,
    corrector_steps: int | None = None,
    resample: int = 1,
    denoise: bool = False,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""Impute the coordinates where ``mask == 0`` given ``x_known`` where ``mask == 1``.

    The replacement method of Song et al. (2021, App. I.2): the unconditional reverse
    SDE from :math:`x_T \sim p_T` down to ``eps``, on a fixed grid (``steps``, default
    1000, or ``ts`` from T down to eps), with the known coordinates overwritten by a
    fresh draw :math:`a(t) y + s(t) z` of the forward kernel after every step — a new
    :math:`z` each time, as in the paper (its :math:`\hat x_\Omega(t)` is "a random
    sample from :math:`p_{0t}(x_\Omega(t) \mid y)`") and in score_sde. The samples
    returned hold ``x_known`` exactly where ``mask == 1``.

    The method is approximate even with an exact score; see ``docs/controllable.md``
    for its measured error and for ``resample`` (RePaint-style repetition of each step,
    ``resample`` times the cost), which reduces it.

    Args:
        score_fn: the unconditional ``score_fn(x, t)``.
        sde: the forward process.
        x_known: ``[B, *dims]``; its values where ``mask == 0`` are ignored. The samples
            have this shape (repeat an image along the batch axis for several fills).
        mask: 0/1 or bool, broadcastable to ``x_known``; 1 marks a known coordinate.
        key: PRNG key.
        solver: any fixed-step diffrax SDE solver (the predictor), e.g. ``Euler()``.
        steps, ts: the fixed grid (uniform ``steps``, or ``ts`` running from T to eps).
        eps: final time.
        corrector: a :class:`samplers.LangevinCorrector` whose ``n_steps`` Langevin steps
            run before each predictor step, each followed by a replacement; ``None``
            (the default) runs none. Only Langevin: the replacement goes between its
            single steps.
        snr, corrector_steps: the same corrector by its numbers, as in
            :func:`sample_pc` (``snr`` 0.16 and 0 steps by default); give these or
            ``corrector``, not both.
        resample: passes per step (1: plain replacement; RePaint uses 10).
        denoise: finish with Tweedie's denoiser on the unknown coordinates.
        check_finite: raise if any sample is NaN or inf.

    Returns:
        ``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent and
        ``stats["finite"]`` whether every sample is finite.

    Example::

        mask = jnp.zeros((28, 28, 1)).at[:, :14].set(1)   # keep the left half
        x, stats = samplers.sample_inpaint(score_fn=f, sde=vp, x_known=images,
                                           mask=mask, key=key, steps=1000)
    """
    if not isinstance(mask, jax.core.Tracer):  # eager check; error_if under an outer jit
        values = np.asarray(mask)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(
                f"mask must hold only 0/1 (or bool) values, got values {np.unique(values)[:8]}"
            )
    kw = normalise_inputs(
        dict(
            sde=sde,
            steps=steps,
            ts=ts,
            eps=eps,
            resample=resample,
            corrector_steps=corrector_steps,
            check_finite=check_finite,
        )
    )
    return _sample_inpaint(
        score_fn=score_fn,
        sde=sde,
        x_known=x_known,
        mask=mask,
        key=key,
        solver=solver,
        steps=kw["steps"],
        ts=ts,
        eps=eps,
        corrector=_inpaint_corrector(corrector, snr, kw["corrector_steps"]),
        resample=kw["resample"],
        denoise=denoise,
        check_finite=check_finite,
    )


def _inpaint_corrector(corrector, snr, corrector_steps) -> LangevinCorrector:
    """The Langevin corrector ``sample_inpaint`` interleaves with replacements (zero
    steps where none is given)."""
    corrector = resolve_corrector(corrector, snr, corrector_steps, unset=None, default_steps=0)
    if corrector is None:
        return LangevinCorrector(n_steps=0)
    if not isinstance(corrector, LangevinCorrector):
        raise ValueError(
            "sample_inpaint replaces the known coordinates between single Langevin "
            "steps, so its corrector must be a samplers.LangevinCorrector or None, got "
            f"{corrector!r}"
        )
    return corrector


@eqx.filter_jit
def _sample_inpaint(
    *,
    score_fn,
    sde,
    x_known,
    mask,
    key,
    solver,
    steps,
    ts,
    eps,
    corrector,
    resample,
    denoise,
    check_finite,
):
    eps = checked_eps(eps, sde)
    if not isinstance(resample, int) or isinstance(resample, bool) or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got resample={resample!r}")
    if steps is None and ts is None:
        steps = 1000
    grid = time_grid(steps, ts, sde.T, eps)
    x_known, mask = _check_mask(x_known, mask)
    solver = bind(solver, sde)
    prior_key, path_key, solver_key = split_sampling_key(key)
    init_key, solver_key = jax.random.split(solver_key)
    imputer = Imputation(
        predictor=solver,
        corrector=corrector,
        score_fn=score_fn,
        sde=sde,
        x_known=x_known.astype(jnp.result_type(float)),
        mask=mask,
        key=solver_key,
        resample=resample,
    )
    x_T = imputer.project(sde.prior_sample(prior_key, x_known.shape), grid[0], init_key)
    sol = reverse_sde_solve(
        score_fn=score_fn,
        sde=sde,
        x_T=x_T,
        key=path_key,
        solver=imputer,
        grid=grid,
        eps=eps,
        name="sample_inpaint",
    )
    stats = {"nfe": count_evaluations(imputer, sol.num_steps), "num_steps": sol.num_steps}
    x, stats = finish(score_fn, sde, sol.x, stats, t_end=sol.t_end, denoise=denoise)
    return finish_stats("sample_inpaint", jnp.where(mask, x_known, x), stats, check_finite)
