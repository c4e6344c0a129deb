r"""Colorization (Song et al. 2021, App. I.3): imputation after an orthogonal change
of colour basis :math:`y = M x` (per pixel) whose first row is the grey-level direction;
the grey channel is then one known coordinate. Because :math:`M` is orthogonal and the
forward SDE isotropic, :math:`y_t = M x_t` and the score in the new basis is
:math:`\nabla_y \log p_t(y) = M\, \nabla_x \log p_t(M^\top y)`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from ._inpaint import sample_inpaint


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
        return jnp.eye(w.shape[0], dtype=float)
    h = np.eye(w.shape[0]) - 2.0 * np.outer(v, v) / (v @ v)
    return jnp.asarray(h, dtype=float)


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
    sde: sde_lib.AbstractSDE,
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
    gray = jnp.asarray(gray, dtype=float)
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
