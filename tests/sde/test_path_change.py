"""``sde.PathChange``: the score of one linear path from another's, at equal log-SNR,
against the oracle's exact score on the target path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde

MIX = sde.GaussianMixture.ring(4, radius=2.0, std=0.4, weights=[0.1, 0.2, 0.3, 0.4])
PATHS = {
    "vp": sde.VPSDE(beta_max=40.0),
    "subvp": sde.SubVPSDE(),
    "ve": sde.VESDE(sigma_max=100.0),
    "edm": sde.EDMSDE(),
    "rf": sde.RectifiedFlow(),
}
PAIRS = [("vp", "rf"), ("vp", "edm"), ("rf", "vp"), ("edm", "rf"), ("subvp", "ve")]


@pytest.mark.parametrize("trained, used", PAIRS, ids=[f"{a}-as-{b}" for a, b in PAIRS])
def test_changed_score_is_the_target_paths_exact_score(trained, used):
    source, target = PATHS[trained], PATHS[used]
    changed = sde.PathChange(sde.MixtureOracle(MIX, source).score, source, target)
    exact = sde.MixtureOracle(MIX, target)
    t = jnp.array([0.02, 0.2, 0.5, 0.8]) * target.T
    x = exact.sample(jax.random.key(0), 4, 0.3 * target.T)
    want = exact.score(x, t)
    got = changed(x, t)
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    # matched log-SNR: the trained path's time has the target's lambda
    np.testing.assert_allclose(
        source.log_snr(changed.times(t)), target.log_snr(t), rtol=1e-4, atol=1e-4
    )
    # a scalar time broadcasts over the batch
    np.testing.assert_allclose(changed(x, t[1]), exact.score(x, t[1]), rtol=1e-4, atol=1e-4 * scale)
