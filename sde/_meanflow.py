r"""MeanFlow (Geng, Deng, Bai, Kolter and He 2025, "Mean Flows for One-step Generative
Modeling") on any linear path.

The average velocity over :math:`[r, t]` of the probability-flow trajectory through
:math:`x_t`, :math:`u(x_t, r, t) = \frac{1}{t - r}\int_r^t v(x_\tau, \tau)\, d\tau`,
obeys the MeanFlow identity (differentiate :math:`(t - r) u` in :math:`t`)

.. math:: u(x_t, r, t) = v(x_t, t) - (t - r)\, \frac{d}{dt} u(x_t, r, t), \qquad
    \frac{d}{dt} u = v\, \partial_x u + \partial_t u,

the total derivative being one Jacobian-vector product of :math:`u` along
:math:`(v, 0, 1)` in :math:`(x, r, t)`. The loss regresses :math:`u_\theta` on the
stop-gradient target :math:`v - (t - r)(v \partial_x u_\theta + \partial_t u_\theta)`,
with the paper's adaptive weight :math:`w = 1/(\|\Delta\|^2 + c)^p` (no gradient
through :math:`w`). For data, :math:`v` is the conditional velocity
:math:`\dot a x_0 + \dot s z` (:math:`\dot a = f a`, :math:`\dot s = f s + g^2/(2s)`),
an unbiased estimate of the marginal one; a teacher's marginal velocity
:math:`f x - \tfrac12 g^2 \nabla\log p_t` (:func:`pf_velocity`) removes that noise.

Times: two draws on :math:`(0, 1)`, mapped affinely onto :math:`[\epsilon, T]` of the
path and sorted so that :math:`r \le t`; a share ``p_equal`` of pairs has :math:`r = t`
(flow matching). ``times="logit_normal"`` (mean -0.4, std 1.0) is the paper's best on
ImageNet, and on the rectified-flow path with :math:`\epsilon \to 0` its sampler
exactly; but it almost never draws the one-step interval itself (:math:`t > 0.95` and
:math:`r < 0.05` together: 5e-6 of pairs, against 5e-3 for uniform draws), which a large
network reaches by generalising and a small one with Fourier time features does not, so
``times="uniform"`` (the paper's ablation baseline) is the default here.
Sampling: :math:`x_r = x_t - (t - r)\, u(x_t, r, t)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractSDE, expand_time


def conditional_velocity(forward: AbstractSDE, x0: Array, z: Array, t: Array) -> Array:
    r""":math:`\dot a(t) x_0 + \dot s(t) z`, the velocity of :math:`x_t = a x_0 + s z`."""
    a, s = forward.marginal(t)
    f, g = forward.drift_coeff(t), forward.diffusion(t)
    a_dot, s_dot = f * a, f * s + g**2 / (2 * s)
    return expand_time(a_dot, x0) * x0 + expand_time(s_dot, x0) * z


def pf_velocity(score_fn: Callable, forward: AbstractSDE) -> Callable[[Array, Array], Array]:
    r"""``v(x, t) = f x - ½ g² score(x, t)``: the probability-flow velocity of a score."""

    def v(x: Array, t: Array) -> Array:
        return forward.drift(x, t) - 0.5 * expand_time(forward.diffusion(t) ** 2, x) * score_fn(
            x, t
        )

    return v


MEANFLOW_TIMES = ("uniform", "logit_normal")


def meanflow_times(
    forward: AbstractSDE, key: PRNGKeyArray, batch: int, *, p_equal: float = 0.75,
    times: str = "uniform", logit_mean: float = -0.4, logit_std: float = 1.0,
    eps: float = 1e-3, dtype=jnp.float32,
) -> tuple[Array, Array]:  # fmt: skip
    """``(r, t)`` of :func:`meanflow_loss` (module docstring)."""
    if times not in MEANFLOW_TIMES:
        raise ValueError(f"times must be one of {MEANFLOW_TIMES}, got times={times!r}")
    k1, k2 = jax.random.split(key)
    if times == "uniform":
        u = jax.random.uniform(k1, (2, batch), dtype)
    else:
        u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(k1, (2, batch), dtype))
    times = eps + (forward.T - eps) * u
    t, r = jnp.max(times, axis=0), jnp.min(times, axis=0)
    equal = jax.random.bernoulli(k2, p_equal, (batch,))
    return jnp.where(equal, t, r), t


def meanflow_loss(
    u_fn: Callable[[Array, Array, Array], Array],
    forward: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    *,
    velocity_fn: Callable[[Array, Array], Array] | None = None,
    p_equal: float = 0.75,
    times: str = "uniform",
    logit_mean: float = -0.4,
    logit_std: float = 1.0,
    norm_p: float = 1.0,
    norm_c: float = 1e-3,
    eps: float = 1e-3,
) -> Float[Array, " B"]:
    """MeanFlow's per-example loss (module docstring); ``u_fn(x, r, t)`` the model,
    ``velocity_fn(x, t)`` a teacher's velocity (None: the conditional one of the data)."""
    if not 0 <= p_equal <= 1:
        raise ValueError(f"p_equal must lie in [0, 1], got p_equal={p_equal}")
    if not logit_std > 0:
        raise ValueError(f"logit_std must be > 0, got logit_std={logit_std}")
    if not norm_p >= 0 or not norm_c > 0:
        raise ValueError(f"need norm_p >= 0 and norm_c > 0, got {norm_p}, {norm_c}")
    k_t, k_z = jax.random.split(key)
    r, t = meanflow_times(
        forward, k_t, x0.shape[0], p_equal=p_equal, times=times, logit_mean=logit_mean,
        logit_std=logit_std, eps=eps, dtype=x0.dtype,
    )  # fmt: skip
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    x_t = forward.perturb(x0, t, z)
    if velocity_fn is None:
        v = conditional_velocity(forward, x0, z, t)
    else:
        v = jax.lax.stop_gradient(velocity_fn(x_t, t))
    u, du_dt = jax.jvp(u_fn, (x_t, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    target = jax.lax.stop_gradient(v - expand_time(t - r, x0) * du_dt)
    sq = jnp.sum(jnp.reshape(u - target, (x0.shape[0], -1)) ** 2, axis=-1)
    weight = jax.lax.stop_gradient(1.0 / (sq + norm_c) ** norm_p)
    return weight * sq
