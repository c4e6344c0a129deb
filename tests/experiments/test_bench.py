"""The benchmarks: the timing helper, the ``scoresde bench`` table, and smoke runs of
the solver, training-step and scaling benchmarks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde
from experiments import bench, build
from experiments import timing as _timing
from experiments.bench import scale as bench_scale
from experiments.bench import solvers as bench_solvers
from experiments.bench import train as bench_train

TINY = ["model.hidden=16", "model.depth=1", "train.batch_size=32"]


def test_time_calls_alternates_rounds_and_counts_calls():
    order = []

    def fn(name):
        def call(i):
            order.append((name, i))
            return jnp.zeros(())

        return call

    times = _timing.time_calls({"a": fn("a"), "b": fn("b")}, rounds=3, calls=2, warmup=1)
    assert set(times) == {"a", "b"} and all(len(v) == 3 for v in times.values())
    assert all(t >= 0 for v in times.values() for t in v)
    # one warm-up call each, then rounds a a b b | a a b b | a a b b, indices running on
    assert order[:2] == [("a", 0), ("b", 0)]
    assert order[2:6] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [i for name, i in order if name == "a"] == list(range(7))
    assert len(_timing.ratios(times, "a", "b")) == 3


def test_time_calls_fills_a_round_when_calls_is_none():
    count = [0]

    def call(i):
        count[0] += 1
        return np.zeros(())

    _timing.time_calls({"f": call}, rounds=2, calls=None, min_round_s=1e-3)
    assert count[0] > 3  # a nearly free call is repeated to fill each round


def test_threaded_carries_the_state():
    def step(state, x, i):
        return state + x, state * 10

    call = _timing.threaded(step, jnp.asarray(1.0), jnp.asarray(2.0))
    assert [float(call(i)[0]) for i in range(3)] == [10.0, 30.0, 50.0]
    assert _timing.median_time(call, rounds=2, calls=3, block_each=False) >= 0


@pytest.mark.parametrize(
    "options", [{"rounds": 0}, {"calls": 0}, {"warmup": -1}, {"calls": None, "warmup": 0}]
)
def test_time_calls_rejects_bad_counts(options):
    with pytest.raises(ValueError, match="must be an integer"):
        _timing.time_calls({"f": lambda i: None}, **options)


def test_bench_table_and_help(capsys):
    assert list(bench.BENCHES) == ["core", "train", "solvers", "scale", "gpu_ddpmpp", "distill"]
    assert bench.main(["--help"]) == 0
    assert "{core,train,solvers,scale,gpu_ddpmpp,distill}" in capsys.readouterr().out
    for argv in ([], ["--no-such-option"], ["cores"]):  # lists them, starts none
        assert bench.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "choose one of core:" in err[0], err


def test_solver_specs_come_from_the_build_table():
    specs = bench_solvers.solver_specs()
    assert all(s.solver in build.SOLVERS for s in specs)
    per_step = {s.name: s.per_step for s in specs}
    assert per_step["heun"] == per_step["dpmpp2s"] == 2 and per_step["unipc"] == 1


@pytest.mark.slow  # ~30 s on 2 cores; the solver specs and grids have their own tests here
def test_bench_solvers_smoke(tmp_path):
    """Euler on the uniform grid of the two paths that are not VP's (VP's runs the same
    code; three paths took twice as long)."""
    out = tmp_path / "b"
    args = ["--quick", "--out", str(out), "--grids", "uniform", "--solvers", "euler"]
    rc = bench.main(["solvers", *args, "--paths", "rf", "edm"])
    assert rc == 0
    saved = json.loads((out / "solvers.json").read_text())
    rows = saved["rows"]
    assert saved["meta"]["paths"] == ["rf", "edm"]
    for path in ("rf", "edm"):
        euler = {r["budget"]: r for r in rows if r["solver"] == "euler" and r["path"] == path}
        assert sorted(euler) == [5, 10, 100]
        assert all(r["nfe"] == r["budget"] for r in euler.values())
        # Euler is first order: more steps, closer to the exact trajectory
        assert euler[100]["traj_rmse"] < euler[10]["traj_rmse"] < euler[5]["traj_rmse"], path
        exact = next(r for r in rows if r["solver"] == "exact" and r["path"] == path)
        assert np.isnan(exact["traj_rmse"]) and 0 <= exact["mode_tv"] < 0.2
    text = (out / "solvers.md").read_text()
    assert "Euler, uniform grid, 100 steps" in text and (out / "solvers.png").exists()
    assert all(f"- **{p}** (sigma" in text and f"### {p}" in text for p in ("rf", "edm"))
    assert "| oracle16 | rf | euler | uniform | 100 | 100 |" in text
    assert bench_solvers.main(["--out", str(out), "--replot"]) == 0


def test_bench_solvers_paths_end_at_one_noise_level():
    """The default paths are VP, RF and EDM; every path ends where its sigma = s/a is
    VP's at t = 1e-3, and every grid runs from the path's own T to that end."""
    assert bench_solvers._parser().parse_args([]).paths == ["vp", "rf", "edm"]
    vp = sde.VPSDE()
    sigma = lambda fwd, t: float(jnp.exp(-fwd.log_snr(jnp.float32(t))))  # noqa: E731
    assert bench_solvers.path_eps("vp") == bench_solvers.EPS
    for name in ("rf", "edm"):
        forward, oracle = bench_solvers.oracle_problem(path=name)
        assert bench_solvers.path_name(forward) == name and oracle.mixture.dim == 16
        eps = bench_solvers.path_eps(name)
        assert sigma(forward, eps) == pytest.approx(sigma(vp, 1e-3), rel=1e-5)
        for grid in bench_solvers.DEFAULT_GRIDS:
            ts = bench_solvers.GRIDS[grid](forward, 4, eps)
            assert float(ts[0]) == pytest.approx(forward.T) and float(ts[-1]) == pytest.approx(eps)


def test_bench_solvers_edm_heun_spends_2n_minus_1():
    (spec,) = [s for s in bench_solvers.solver_specs() if s.name == "edm_heun"]
    vp, oracle = bench_solvers.oracle_problem()
    for budget in (1, 5):
        steps = spec.steps_for(budget)
        ts = bench_solvers._grid_for(spec, "karras", vp, steps)
        key = jax.random.key(0)
        _, nfe = bench_solvers.run_sampler(spec, oracle.score, vp, (8, 16), key, ts)
        assert nfe == 2 * steps - 1


def test_bench_train_smoke():
    r = bench_train.run("checkerboard", TINY, rounds=1, steps_per_round=2)
    assert r["batch_size"] == 32 and r["rounds"] == 1
    assert r["ours_ms"] > 0 and r["hand_written_ms"] > 0 and r["ratio_min"] <= r["ratio_max"]


def test_bench_scale_one_device_smoke():
    (row,) = bench_scale.run("checkerboard", TINY, [1], rounds=1, steps=2, per_device_batch=None)
    assert row["devices"] == 1 and row["global_batch"] == 32
    assert row["speedup"] == row["efficiency"] == 1.0 and row["examples_per_s"] > 0
