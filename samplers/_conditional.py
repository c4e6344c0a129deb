r"""Controllable generation with an unconditional (or class-conditional) score model.

**Imputation / inpainting** (Song et al. 2021, App. I.2). Split the coordinates into
known ones :math:`\Omega` (``mask == 1``), observed as :math:`y = x_\Omega(0)`, and
unknown ones :math:`\bar\Omega`. The exact conditional reverse SDE needs
:math:`\nabla_{x_{\bar\Omega}} \log p_t(x_{\bar\Omega}(t) \mid y)`, which an
unconditional model does not give. Song et al. approximate it by
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

**Colorization** (Song et al. 2021, App. I.3) is imputation after an orthogonal change
of colour basis :math:`y = M x` (per pixel) whose first row is the grey-level direction;
the grey channel is then one known coordinate. Because :math:`M` is orthogonal and the
forward SDE isotropic, :math:`y_t = M x_t` and the score in the new basis is
:math:`\nabla_y \log p_t(y) = M\, \nabla_x \log p_t(M^\top y)`.

**Classifier-free guidance** (Ho & Salimans 2022): with a conditional and an
unconditional score (one network trained with a null label),

.. math:: \tilde s(x, t) = (1 + w)\, \nabla \log p_t(x \mid c) - w\, \nabla \log p_t(x)
    = \nabla \log p_t(x \mid c) + w\, \nabla \log p_t(c \mid x).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib

from ._common import (
    ScoreFn,
    check_eps,
    count_evaluations,
    evaluations_per_step,
    time_grid,
    tweedie_denoise,
)
from ._pc import LangevinCorrector, WrapsPredictor
from ._sde import reverse_sde_solve, split_sampling_key

# ---------------------------------------------------------------------------------
# Imputation


def _as_scalar(t: Array) -> Array:
    return jnp.asarray(t, jnp.float32)


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

    def order(self, terms):
        return self.predictor.order(terms)

    def strong_order(self, terms):
        return self.predictor.strong_order(terms)

    def project(self, x: Array, t: Array, key: PRNGKeyArray) -> Array:
        """Replace the known coordinates of ``x`` by a draw from ``N(a(t) y, s(t)^2)``."""
        a, s = self.sde.marginal(_as_scalar(t))
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
        lo, hi = _as_scalar(-t1), _as_scalar(-t0)
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

    def func(self, terms, t0, y0, args):
        return self.predictor.func(terms, t0, y0, args)


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
    return jnp.where(mask, x_known, 0.0), mask


def sample_inpaint(
    *,
    score_fn: ScoreFn,
    sde,
    x_known: Array,
    mask: ArrayLike,
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Euler(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    eps: float = 1e-3,
    snr: float = 0.16,
    corrector_steps: int = 0,
    resample: int = 1,
    denoise: bool = False,
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
        snr, corrector_steps: Langevin corrector steps before each predictor step, as in
            :func:`sample_pc` (0 by default), each followed by a replacement.
        resample: passes per step (1: plain replacement; RePaint uses 10).
        denoise: finish with Tweedie's denoiser on the unknown coordinates.

    Returns:
        ``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent.

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
    return _sample_inpaint(
        score_fn=score_fn,
        sde=sde,
        x_known=x_known,
        mask=mask,
        key=key,
        solver=solver,
        steps=steps,
        ts=ts,
        eps=eps,
        snr=snr,
        corrector_steps=corrector_steps,
        resample=resample,
        denoise=denoise,
    )


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
    snr,
    corrector_steps,
    resample,
    denoise,
):
    check_eps(eps)
    if not isinstance(resample, int) or isinstance(resample, bool) or resample < 1:
        raise ValueError(f"resample must be an integer >= 1, got resample={resample!r}")
    if not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")
    if steps is None and ts is None:
        steps = 1000
    grid = time_grid(steps, ts, sde.T, eps)
    x_known, mask = _check_mask(x_known, mask)
    if hasattr(solver, "bind_sde"):
        solver = solver.bind_sde(sde)
    prior_key, path_key, solver_key = split_sampling_key(key)
    init_key, solver_key = jax.random.split(solver_key)
    imputer = Imputation(
        predictor=solver,
        corrector=LangevinCorrector(snr=snr, n_steps=corrector_steps),
        score_fn=score_fn,
        sde=sde,
        x_known=x_known.astype(jnp.float32),
        mask=mask,
        key=solver_key,
        resample=resample,
    )
    x_T = imputer.project(sde.prior_sample(prior_key, x_known.shape), grid[0], init_key)
    x, num_steps, t_end = reverse_sde_solve(
        score_fn, sde, x_known.shape, path_key, imputer, grid, eps, 1e-3, 1e-3, None, None, x_T
    )
    stats = {"nfe": count_evaluations(imputer, num_steps), "num_steps": num_steps}
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, t_end)
        stats["nfe"] = stats["nfe"] + 1
    return jnp.where(mask, x_known, x), stats


# ---------------------------------------------------------------------------------
# Colorization


def colour_transform(luma: ArrayLike = (1 / 3, 1 / 3, 1 / 3)) -> Array:
    r"""An orthogonal colour basis change :math:`M` whose first row is
    :math:`w / \lVert w \rVert` for grey-level weights ``luma`` :math:`= w`.

    :math:`M` is the Householder reflection that swaps :math:`e_1` and
    :math:`w/\lVert w\rVert` (symmetric and orthogonal), so the first coordinate of
    :math:`y = M x` is :math:`(w \cdot x) / \lVert w \rVert = \text{grey} /
    \lVert w \rVert` and the other two span the colour directions orthogonal to it.
    For the default equal weights the first row is :math:`(1, 1, 1)/\sqrt 3`.
    """
    w = np.asarray(luma, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] < 2 or not np.all(np.isfinite(w)) or not np.any(w != 0):
        raise ValueError(
            f"luma must be a finite, non-zero 1-D vector of >= 2 channel weights, got {luma!r}"
        )
    m = w / np.linalg.norm(w)
    v = np.eye(w.shape[0])[0] - m
    if np.linalg.norm(v) < 1e-12:
        return jnp.eye(w.shape[0], dtype=jnp.float32)
    h = np.eye(w.shape[0]) - 2.0 * np.outer(v, v) / (v @ v)
    return jnp.asarray(h, jnp.float32)


def _apply(matrix: Array, x: Array, axis: int) -> Array:
    """``matrix @ x`` along ``axis`` (the channel axis)."""
    moved = jnp.moveaxis(x, axis, -1)
    out = jnp.einsum("ij,...j->...i", matrix, moved, precision=jax.lax.Precision.HIGHEST)
    return jnp.moveaxis(out, -1, axis)


class _RotatedScore(eqx.Module):
    r"""The score in the rotated basis: :math:`M\, s(M^\top y, t)` along the channel axis."""

    score_fn: ScoreFn
    matrix: Array
    axis: int = eqx.field(static=True)

    def __call__(self, y: Array, t: Array) -> Array:
        x = _apply(self.matrix.T, y, self.axis)
        return _apply(self.matrix, self.score_fn(x, t), self.axis)


def sample_colorize(
    *,
    score_fn: ScoreFn,
    sde,
    gray: Array,
    key: PRNGKeyArray,
    luma: ArrayLike = (1 / 3, 1 / 3, 1 / 3),
    channel_axis: int = -1,
    **kwargs,
) -> tuple[Array, dict[str, Array]]:
    r"""Colour images whose grey level :math:`\sum_c w_c x_c` equals ``gray``.

    Imputation in the orthogonal colour basis :math:`y = M x` of
    :func:`colour_transform` (Song et al. 2021, App. I.3): the first channel
    :math:`y_1 = \text{gray} / \lVert w \rVert` is known, the others are imputed by
    :func:`sample_inpaint` with the rotated score
    :math:`\nabla_y \log p_t(y) = M \nabla_x \log p_t(M^\top y)` (valid because
    :math:`M` is orthogonal and the forward SDE isotropic, so :math:`y_t = M x_t`).
    The result is :math:`x = M^\top y`; its grey level equals ``gray`` up to
    float rounding (the known channel itself is kept exactly).

    Args:
        score_fn: the unconditional score of colour images ``[B, ..., C]``.
        gray: grey levels, the images' shape without the channel axis.
        luma: the channel weights :math:`w` defining grey (default: the channel mean,
            as score_sde; e.g. ``(0.299, 0.587, 0.114)`` for Rec. 601 luma).
        channel_axis: where the channel axis goes in the output (``-1``: NHWC).
        **kwargs: passed on to :func:`sample_inpaint` (``steps``, ``solver``, ``eps``,
            ``corrector_steps``, ``snr``, ``resample``, ``denoise``, ``ts``).

    Example::

        x, stats = samplers.sample_colorize(score_fn=f, sde=vp, gray=images.mean(-1),
                                            key=key, steps=1000)
    """
    gray = jnp.asarray(gray, jnp.float32)
    matrix = colour_transform(luma)
    norm = float(np.linalg.norm(np.asarray(luma, np.float64)))
    c = matrix.shape[0]
    first = jnp.expand_dims(gray / norm, channel_axis)
    zeros_shape = list(first.shape)
    zeros_shape[channel_axis] = c - 1
    y_known = jnp.concatenate([first, jnp.zeros(zeros_shape, gray.dtype)], axis=channel_axis)
    shape = [1] * y_known.ndim
    shape[channel_axis] = c
    mask = (jnp.arange(c) == 0).reshape(shape)
    rotated = _RotatedScore(score_fn, matrix, channel_axis)
    y, stats = sample_inpaint(
        score_fn=rotated, sde=sde, x_known=y_known, mask=mask, key=key, **kwargs
    )
    return _apply(matrix.T, y, channel_axis), stats


# ---------------------------------------------------------------------------------
# Classifier-free guidance


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.ndarray | jax.Array):
        raise ValueError(f"{name} must be a real number, got {name}={value!r}")
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    return float(value)


def _guidance_weight(guidance, guidance_scale) -> float:
    if (guidance is None) == (guidance_scale is None):
        raise ValueError(
            "give exactly one of guidance= (w: (1 + w) s_cond - w s_uncond, 0 = conditional) "
            "or guidance_scale= (gamma = 1 + w: s_uncond + gamma (s_cond - s_uncond), "
            "1 = conditional)"
        )
    if guidance_scale is not None:
        gamma = _real("guidance_scale", guidance_scale)
        if not (np.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"guidance_scale must be finite and >= 0, got {guidance_scale!r}")
        return gamma - 1.0
    w = _real("guidance", guidance)
    if not (np.isfinite(w) and w >= -1):
        raise ValueError(f"guidance must be finite and >= -1, got guidance={guidance!r}")
    return w


class GuidedScore(eqx.Module):
    r"""Classifier-free guidance from two score functions (Ho & Salimans 2022):
    :math:`\tilde s = (1 + w)\, s_\text{cond} - w\, s_\text{uncond}`.

    A pytree (the guidance weight is a traced leaf): new weights or a new ``w`` do not
    recompile a sampler. Build it with :func:`guided_score`.
    """

    cond_score_fn: ScoreFn
    uncond_score_fn: ScoreFn
    guidance: Array

    def __call__(self, x: Array, t: Array) -> Array:
        w = self.guidance.astype(x.dtype)
        return (1 + w) * self.cond_score_fn(x, t) - w * self.uncond_score_fn(x, t)


def guided_score(
    cond_score_fn: ScoreFn,
    uncond_score_fn: ScoreFn,
    *,
    guidance: float | None = None,
    guidance_scale: float | None = None,
) -> GuidedScore:
    r"""A plain ``score_fn(x, t)`` with classifier-free guidance.

    Two conventions, give exactly one:

    - ``guidance`` :math:`= w` (Ho & Salimans 2022):
      :math:`\tilde s = (1 + w)\, s_c - w\, s_u`; ``w = 0`` is the conditional score,
      ``w = -1`` the unconditional one, ``w > 0`` sharpens towards the class.
    - ``guidance_scale`` :math:`= \gamma = 1 + w` (the convention of e.g. diffusers'
      ``guidance_scale``): :math:`\tilde s = s_u + \gamma (s_c - s_u)`; ``gamma = 1`` is
      conditional, ``gamma = 0`` unconditional.

    With exact scores :math:`\tilde s = \nabla\log p_t(x\mid c) + w \nabla \log
    p_t(c \mid x)`, the score of a "sharpened" :math:`p_t(x \mid c)\, p_t(c \mid x)^w`
    (at each :math:`t` separately: the sampled distribution is not exactly that tilted
    density at :math:`t = 0`, because the tilted marginals are not the diffusion of one
    distribution).

    Example::

        f = samplers.guided_score(cond, uncond, guidance=2.0)
        x, stats = samplers.sample_sde(score_fn=f, sde=vp, shape=(64, 2), key=key)
    """
    w = _guidance_weight(guidance, guidance_scale)
    return GuidedScore(cond_score_fn, uncond_score_fn, jnp.asarray(w, jnp.float32))


class ClassifierFreeGuidance(eqx.Module):
    r"""Classifier-free guidance with one label-conditioned network
    ``score_fn(x, t, labels)`` and a null label: both scores in one batched call of
    size ``2B``. Build it with :func:`classifier_free_guidance`."""

    score_fn: ScoreFn
    labels: Array
    null_label: Array
    guidance: Array

    def __call__(self, x: Array, t: Array) -> Array:
        b = x.shape[0]
        labels = jnp.broadcast_to(self.labels, (b,))
        nulls = jnp.broadcast_to(self.null_label, (b,)).astype(labels.dtype)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (b,))
        both = self.score_fn(
            jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, nulls])
        )
        cond, uncond = both[:b], both[b:]
        w = self.guidance.astype(x.dtype)
        return (1 + w) * cond - w * uncond


def classifier_free_guidance(
    score_fn,
    labels: ArrayLike,
    null_label: int,
    *,
    guidance: float | None = None,
    guidance_scale: float | None = None,
) -> ClassifierFreeGuidance:
    r"""A plain ``score_fn(x, t)`` guiding a label-conditioned ``score_fn(x, t, labels)``
    towards ``labels`` (an int or ``[B]`` ints), with ``null_label`` the label the
    network was trained with when the class was dropped (Ho & Salimans 2022).

    ``guidance`` (:math:`w`, 0 = conditional) or ``guidance_scale``
    (:math:`\gamma = 1 + w`, 1 = conditional) as in :func:`guided_score`. Each call
    evaluates the network once on a batch of ``2B`` (conditional and null halves).

    Example::

        f = samplers.classifier_free_guidance(net_score, labels=3, null_label=10,
                                              guidance=2.0)
        x, stats = samplers.sample_sde(score_fn=f, sde=vp, shape=(64, 28, 28, 1),
                                       key=key, steps=1000)
    """
    w = _guidance_weight(guidance, guidance_scale)
    labels = jnp.asarray(labels)
    if labels.ndim > 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be an integer or a 1-D integer array, got dtype {labels.dtype} "
            f"and shape {labels.shape}"
        )
    null = jnp.asarray(null_label)
    if null.ndim != 0 or not jnp.issubdtype(null.dtype, jnp.integer):
        raise ValueError(f"null_label must be an integer, got {null_label!r}")
    return ClassifierFreeGuidance(score_fn, labels, null, jnp.asarray(w, jnp.float32))
