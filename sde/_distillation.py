r"""Objectives of one- and few-step students: consistency distillation and training, and
progressive distillation. (MeanFlow's is in ``_meanflow.py``.)

All of them work in the scaled variable of the kernel :math:`x_t = a(t) x_0 + s(t) z`,
:math:`\sigma(t) = s/a`, so they hold on every linear SDE; a student is any callable,
a teacher's ODE step any ``step(x, t_from, t_to)`` (e.g. :func:`samplers.pf_ode_step`
of a trained score model, or the exact flow of a Gaussian).

**Consistency distillation** (CD; Song, Dhariwal, Chen and Sutskever 2023, Algorithm 2).
On a grid :math:`\epsilon = t_1 < \dots < t_N = T`, draw :math:`n \sim U\{1..N-1\}`,
:math:`x_{n+1} = a_{n+1} x_0 + s_{n+1} z`, take one teacher step to
:math:`\hat x_n` and match the student across it,

.. math:: \ell = d\big(f_\theta(x_{n+1}, t_{n+1}),\;
    \mathrm{sg}\, f_\theta(\hat x_n, t_n)\big),

the target being the student's own weights under a stop-gradient (improved CT's
:math:`\mu = 0`, Song and Dhariwal 2023). With the exact teacher and the exact
consistency function every term is 0.

**Consistency training / tuning** (ECT; Geng, Pokle, Luo, Lin and Kolter 2024). No
teacher: the pair shares one noise, :math:`x_t = a_t (x_0 + \sigma_t z)`,
:math:`x_r = a_r (x_0 + \sigma_r z)`, with :math:`\ln\sigma_t \sim N(P_{mean}, P_{std}^2)`
and :math:`\sigma_r = \max(\sigma_\text{min}, \sigma_t - \sigma_t\, q^{-\lceil i/d
\rceil} n(\sigma_t))`, :math:`n(\sigma) = 1 + k\, \mathrm{sigmoid}(-b \sigma)` at training
step :math:`i` of stages of :math:`d` steps; weight :math:`1/(\sigma_t - \sigma_r)`. At
stage 0 :math:`\sigma_r = \sigma_\text{min}`: plain denoising (a diffusion model is a
consistency model for :math:`\Delta t = t`, so tuning starts from its weights), and
each stage shrinks :math:`\Delta t` by :math:`q`.

**Progressive distillation** (PD; Salimans and Ho 2022, Algorithm 2). A student DDIM
step from :math:`t` to :math:`t''` must land where two teacher DDIM steps
:math:`t \to t' \to t''` land; the data prediction that does so is

.. math:: \tilde x = \frac{x_{t''} - (s''/s)\, x_t}{a'' - (s''/s)\, a},

regressed with the truncated-SNR weight :math:`\max(a^2/s^2, 1)`. A DDIM step in data
prediction is :math:`x' = a' \hat x_0 + s' (x - a \hat x_0)/s`.

Distances ``d``: ``"l2"`` is :math:`\|\Delta\|^2` (summed over dimensions),
``"pseudo_huber"`` :math:`\sqrt{\|\Delta\|^2 + c^2} - c` (Song and Dhariwal 2023, who
take :math:`c = 0.00054 \sqrt{D}`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._base import AbstractSDE, expand_time
from ._time_sampling import lognormal

DISTANCES = ("l2", "pseudo_huber")
CD_WEIGHTINGS = ("uniform", "ict")


def _sum(x: Array) -> Array:
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=-1)


def distance(
    x: Array, y: Array, kind: str = "pseudo_huber", huber_c: float = 0.00054
) -> Float[Array, " B"]:
    """Per-example distance between two batches (module docstring); for
    ``pseudo_huber``, ``c = huber_c * sqrt(D)``."""
    if kind not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")
    sq = _sum((x - y) ** 2)
    if kind == "l2":
        return sq
    if not huber_c > 0:
        raise ValueError(f"huber_c must be > 0, got huber_c={huber_c}")
    c = huber_c * math.sqrt(math.prod(x.shape[1:]))
    return jnp.sqrt(sq + c**2) - c


def sigma_time(forward: AbstractSDE, sigma: ArrayLike) -> Array:
    r"""The time :math:`t` with :math:`\sigma(t) = s/a = ` ``sigma``."""
    return forward.log_snr_inverse(-jnp.log(sigma))


def consistency_distillation_loss(
    student: Callable[[Array, Array], Array],
    teacher_step: Callable[[Array, Array, Array], Array],
    forward: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    *,
    ts: Float[Array, " N"],
    distance_kind: str = "pseudo_huber",
    huber_c: float = 0.00054,
    weighting: str = "uniform",
    output_scale: Callable[[Array], Array] | None = None,
) -> Float[Array, " B"]:
    """CD's per-example loss (module docstring); ``ts`` runs up from ``eps`` to ``T``
    (e.g. ``samplers.karras_grid(...)[::-1]``), ``student(x, t)`` is the consistency
    function being trained, ``teacher_step(x, t_from, t_to)`` one teacher ODE step.
    ``weighting``: ``"uniform"`` (Song et al. 2023, lambda = 1) or ``"ict"``
    (lambda = 1 / (sigma_{n+1} - sigma_n), Song & Dhariwal 2023, which weights the
    small-noise links of the chain, those every other link's target rests on).
    ``output_scale(t)``: the loss is divided by it at the student's time
    (:func:`networks.output_scale`: the weights as for EDM's network)."""
    if weighting not in CD_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {CD_WEIGHTINGS}, got {weighting!r}")
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D grid of >= 2 times, got shape {ts.shape}")
    key_n, key_z = jax.random.split(key)
    n = jax.random.randint(key_n, x0.shape[:1], 0, ts.shape[0] - 1)
    t_next, t_now = ts[n + 1], ts[n]
    x_next = forward.perturb(x0, t_next, jax.random.normal(key_z, x0.shape, x0.dtype))
    x_now = jax.lax.stop_gradient(teacher_step(x_next, t_next, t_now))
    target = jax.lax.stop_gradient(student(x_now, t_now))
    loss = distance(student(x_next, t_next), target, distance_kind, huber_c)
    if output_scale is not None:
        loss = loss / jax.lax.stop_gradient(output_scale(t_next))
    if weighting == "uniform":
        return loss
    a1, s1 = forward.marginal(t_next)
    a0, s0 = forward.marginal(t_now)
    return loss / jnp.maximum(s1 / a1 - s0 / a0, 1e-12)


def ect_pair(
    forward: AbstractSDE,
    key: PRNGKeyArray,
    batch: int,
    step: ArrayLike,
    *,
    total_steps: int,
    eps: float,
    stages: int = 8,
    q: float = 2.0,
    k: float = 8.0,
    b: float = 1.0,
    p_mean: float = -1.1,
    p_std: float = 2.0,
    dtype=jnp.float32,
) -> tuple[Array, Array, Array, Array]:
    r"""``(t, r, sigma_t, sigma_r)``: ECT's pair of times at training ``step``
    (module docstring): :math:`\ln\sigma_t \sim N(P_{mean}, P_{std}^2)` truncated to
    :math:`[\sigma(\epsilon), \sigma(T)]`, :math:`\sigma_r` from the stage's ratio."""
    t = lognormal(p_mean, p_std).sample(key, batch, sde=forward, eps=eps, dtype=dtype)
    a_t, s_t = forward.marginal(t)
    a_min, s_min = forward.marginal(jnp.asarray(eps, dtype))
    sigma_t, sigma_min = s_t / a_t, s_min / a_min
    d = max(total_steps // stages, 1)
    stage = jnp.ceil(jnp.asarray(step, dtype) / d)
    n = 1 + k * jax.nn.sigmoid(-b * sigma_t)
    sigma_r = jnp.maximum(sigma_min, sigma_t - sigma_t * q ** (-stage) * n)
    r = jnp.where(sigma_r <= sigma_min, jnp.asarray(eps, dtype), sigma_time(forward, sigma_r))
    return t, r, sigma_t, sigma_r


def consistency_training_loss(
    student: Callable[[Array, Array], Array],
    forward: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    step: ArrayLike,
    *,
    total_steps: int,
    eps: float,
    distance_kind: str = "pseudo_huber",
    huber_c: float = 0.00054,
    output_scale: Callable[[Array], Array] | None = None,
    **pair_options,
) -> Float[Array, " B"]:
    """ECT's per-example loss at training ``step`` of ``total_steps`` (module
    docstring); ``pair_options`` go to :func:`ect_pair`; ``output_scale`` as in
    :func:`consistency_distillation_loss`."""
    key_t, key_z = jax.random.split(key)
    t, r, sigma_t, sigma_r = ect_pair(
        forward, key_t, x0.shape[0], step, total_steps=total_steps, eps=eps,
        dtype=x0.dtype, **pair_options,
    )  # fmt: skip
    z = jax.random.normal(key_z, x0.shape, x0.dtype)
    target = jax.lax.stop_gradient(student(forward.perturb(x0, r, z), r))
    weight = 1.0 / jnp.maximum(sigma_t - sigma_r, 1e-12)
    if output_scale is not None:
        weight = weight / jax.lax.stop_gradient(output_scale(t))
    return weight * distance(student(forward.perturb(x0, t, z), t), target, distance_kind, huber_c)


def ddim_step(forward: AbstractSDE, x: Array, x0_hat: Array, t: Array, t_next: Array) -> Array:
    r"""One DDIM step from ``t`` to ``t_next`` with data prediction ``x0_hat``:
    :math:`x' = a' \hat x_0 + s' (x - a \hat x_0) / s`."""
    a, s = forward.marginal(t)
    a2, s2 = forward.marginal(t_next)
    a, s, a2, s2 = (expand_time(v, x) for v in (a, s, a2, s2))
    return a2 * x0_hat + s2 * (x - a * x0_hat) / s


def progressive_distillation_loss(
    student_x0: Callable[[Array, Array], Array],
    teacher_x0: Callable[[Array, Array], Array],
    forward: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    *,
    ts: Float[Array, " N"],
) -> Float[Array, " B"]:
    """PD's per-example loss (module docstring). ``ts`` is the *teacher's* grid from
    ``T`` down to ``eps`` with an even number of steps; the student takes every other
    point. ``student_x0``/``teacher_x0`` give data predictions ``E[x_0 | x_t]``."""
    ts = jnp.asarray(ts, x0.dtype)
    if ts.ndim != 1 or ts.shape[0] < 3 or (ts.shape[0] - 1) % 2:
        raise ValueError(
            f"ts must be the teacher's grid with an even number (>= 2) of steps, got "
            f"shape {ts.shape}"
        )
    key_i, key_z = jax.random.split(key)
    i = 2 * jax.random.randint(key_i, x0.shape[:1], 0, (ts.shape[0] - 1) // 2)
    t, t_mid, t_next = ts[i], ts[i + 1], ts[i + 2]
    x_t = forward.perturb(x0, t, jax.random.normal(key_z, x0.shape, x0.dtype))
    x_mid = ddim_step(forward, x_t, teacher_x0(x_t, t), t, t_mid)
    x_two = ddim_step(forward, x_mid, teacher_x0(x_mid, t_mid), t_mid, t_next)
    a, s = forward.marginal(t)
    a2, s2 = forward.marginal(t_next)
    ratio = s2 / s
    target = (x_two - expand_time(ratio, x0) * x_t) / expand_time(a2 - ratio * a, x0)
    weight = jnp.maximum((a / s) ** 2, 1.0)
    return weight * _sum((student_x0(x_t, t) - jax.lax.stop_gradient(target)) ** 2)
