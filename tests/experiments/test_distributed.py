"""Data parallelism over forced host devices and over two local processes.

The truth is the single-device run: the same config, global batch and seed trained in
this (one-device) process. Against it:

* 8 forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, which
  must be set before JAX starts, hence a subprocess) give the same 20-step loss and
  gradient-norm trajectory and the same final state, replicated and FSDP-split, to
  float rounding (the sums run in another order);
* two processes with 2 devices each, joined by ``jax.distributed`` with gloo CPU
  collectives, train, checkpoint, lose one process to SIGKILL (the other exits at once
  with a clear message instead of hanging), resume, and end at the same state;
* likelihoods and samples sharded over 8 devices equal the unsharded ones; per-sample
  adaptive step control (samples needing 43 to 97 evaluations, on different devices or
  processes) neither desynchronises nor hangs, and gives exactly the unsharded result.

This file is also the subprocess worker: ``python tests/experiments/test_distributed.py WORKER``.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 20
OVERRIDES = [
    f"train.steps={STEPS}",
    "train.batch_size=64",
    "train.warmup_steps=2",
    "train.log_every=1",
    f"train.ckpt_every={STEPS}",
    "train.lr=3e-3",
    "model.hidden=32",  # 32x32 kernels: large enough to be split under FSDP
    "model.depth=2",
    "model.embed_dim=8",
    "model.cond_dim=8",
    "data.n_val=64",
    "data.n_test=64",
]
HEARTBEAT = 10  # seconds, for the two-process runs
LIK = dict(rtol=1e-4, atol=1e-4, eps=1e-5)  # adaptive likelihood settings


def _env(devices: int, cache: pathlib.Path | None = None) -> dict:
    env = dict(os.environ)
    flags = os.environ.get("XLA_FLAGS", "")  # keep the suite's own flags (conftest.py)
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if cache is not None:  # the resumed run reuses the first run's compilations
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _state_leaves(state) -> dict[str, np.ndarray]:
    import jax

    from experiments.training import checkpoint

    flat = jax.tree_util.tree_leaves_with_path(checkpoint.to_saveable(state))
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def _metrics(workdir: pathlib.Path) -> np.ndarray:
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one row per step
    return np.array([[r["loss"], r["grad_norm"]] for r in rows])


def _mixture_problem(n: int):
    import jax

    import sde

    vp = sde.VPSDE(beta_min=0.1, beta_max=20.0)
    mix = sde.GaussianMixture.ring(8, radius=3.0, std=0.3)
    oracle = sde.MixtureOracle(mix, vp)
    return vp, oracle, np.asarray(mix.sample(jax.random.key(0), n))


def _likelihoods(score_fn, vp, x, sharded_mesh=None, fixed=True) -> dict[str, np.ndarray]:
    """Fixed-grid (optional), per-sample adaptive and batch-joint adaptive
    log-likelihoods of x, its batch split over ``sharded_mesh`` (or one device)."""
    import jax
    import jax.numpy as jnp

    import samplers
    from experiments import distributed

    n = len(x)
    if sharded_mesh is None:
        xs = jnp.asarray(x)
    else:
        xs, _ = distributed.shard_batch(x, sharded_mesh)
        score_fn = distributed.batch_sharded_score(score_fn, sharded_mesh)
    common = dict(score_fn=score_fn, sde=vp, x=xs, key=jax.random.key(1))
    out = {}
    if fixed:
        logp, _ = samplers.log_likelihood(**common, steps=20, eps=LIK["eps"])
        out["fixed"] = distributed.to_host(logp)[:n]
    per, stats = samplers.log_likelihood(**common, **LIK, per_sample=True)
    out["per_sample"] = distributed.to_host(per)[:n]
    out["nfe_per_sample"] = distributed.to_host(stats["nfe_per_sample"])[:n]
    joint, stats = samplers.log_likelihood(**common, **LIK)
    out["joint"] = distributed.to_host(joint)[:n]
    out["joint_nfe"] = np.asarray(int(stats["nfe"]))
    return out


# --------------------------------------------------------------------------------------
# helpers (in this process)


def test_cluster_detection_from_the_environment(monkeypatch):
    from experiments import distributed

    for k in list(os.environ):
        if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS")):
            monkeypatch.delenv(k)
    assert distributed.detect_cluster() is None
    slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-2]", SLURM_PROCID="1")
    for k, v in {**slurm, "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(k, v)
    assert distributed.detect_cluster() is None  # one task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.detect_cluster() == "slurm"
    monkeypatch.delenv("SLURM_STEP_NODELIST")  # the sbatch script itself, not an srun step
    assert distributed.detect_cluster() is None
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.1:1234")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.detect_cluster() == "openmpi"
    monkeypatch.delenv("OMPI_MCA_orte_hnp_uri")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.detect_cluster() == "env"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_processes=2), "missing: coordinator_address, process_id"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), r"\[0, 1\]"),
        (dict(coordinator_address="h", num_processes=2, process_id=0), "HOST:PORT"),
        (dict(coordinator_address="h:1", num_processes=0, process_id=0), "num_processes"),
        (dict(mode="sometimes"), "'auto', 'on' or 'off'"),
        (dict(heartbeat_timeout=0), "heartbeat_timeout"),
    ],
)
def test_initialize_refuses_bad_arguments(kwargs, match):
    from experiments import distributed

    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_initialize_stays_single_process_without_a_cluster(monkeypatch):
    from experiments import distributed

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("OMPI_MCA_orte_hnp_uri", raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize("localhost:1234", 1, 0) is False  # one process
    assert distributed.initialize("localhost:1234", 2, 0, mode="off") is False


def test_cli_refuses_partial_distributed_flags(capsys):
    from experiments import cli

    argv = ["train", "--config", "checkerboard", "--workdir", "w", "--num-processes", "2"]
    assert cli.main(argv) == 2
    assert "missing: coordinator_address, process_id" in capsys.readouterr().err


def test_fsdp_spec_splits_the_largest_divisible_axis():
    from jax.sharding import PartitionSpec as P

    from experiments import distributed

    assert distributed.fsdp_spec((256, 64), 8) == P("data")
    assert distributed.fsdp_spec((60, 256), 8) == P(None, "data")
    assert distributed.fsdp_spec((63, 65), 8) == P()  # nothing divisible: replicated
    assert distributed.fsdp_spec((16, 16), 8) == P()  # small: replicated
    assert distributed.fsdp_spec((256, 64), 1) == P()


def test_watchdog_exits_a_stuck_process_with_a_message():
    code = (
        "import time; from experiments import distributed as d\n"
        "w = d.Watchdog(0.5, 'scoresde train'); w.beat(); time.sleep(30)"
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(1), capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - start < 25
    assert proc.returncode == 4  # distributed.EXIT_STUCK
    assert "scoresde train: process 0 of 1" in proc.stderr
    assert "no progress for" in proc.stderr and "(timeout 0.5 s)" in proc.stderr


# --------------------------------------------------------------------------------------
# subprocess workers


def worker_forced(out: pathlib.Path) -> None:
    """8 forced devices: 20 training steps, replicated and FSDP; sharded likelihoods
    and samples."""
    import diffrax
    import jax
    import jax.numpy as jnp

    import samplers
    from experiments import build, distributed, training
    from experiments import config as config_lib
    from experiments.run import Run

    mesh = distributed.mesh()
    facts = {"devices": jax.device_count()}
    for tag, extra in (("replicated", []), ("fsdp", ["train.fsdp=true"])):
        cfg = config_lib.load("checkerboard", [*OVERRIDES, *extra])
        training.train(cfg, out / tag, progress=False)
        run = Run.restore(out / tag, prefer_best=False)
        np.savez(out / f"{tag}_state.npz", **_state_leaves(run.state))
        _, state = training.init(run, build.optimizer(cfg.train)[0])  # the training state
        placed = distributed.put(state, distributed.state_shardings(state, mesh, cfg.train.fsdp))
        facts[f"{tag}_split_leaves"] = sum(
            1
            for x in jax.tree.leaves(placed)
            if len(x.addressable_shards[0].data.shape)
            and x.addressable_shards[0].data.shape != x.shape
        )
    batch = distributed.global_batch(np.zeros((64, 2), np.float32), distributed.batch_sharded(mesh))
    facts["batch_shard_rows"] = sorted({s.data.shape[0] for s in batch.addressable_shards})

    vp, oracle, x = _mixture_problem(60)  # 60 rows: padded to 64 = 8 x 8
    lik = _likelihoods(oracle.score, vp, x, mesh)
    score = distributed.batch_sharded_score(oracle.score, mesh)
    for tag, kw in (("sample_fixed", dict(steps=20)), ("sample_adaptive", LIK)):
        kw = {**kw, "eps": 1e-3}
        xs, stats = samplers.sample_ode(
            score_fn=score, sde=vp, shape=(64, 2), key=jax.random.key(2), **kw
        )
        lik[tag] = distributed.to_host(xs)
        lik[tag + "_nfe"] = np.asarray(int(stats["nfe"]))
    facts["solver"] = type(diffrax.Tsit5()).__name__
    np.savez(out / "likelihood.npz", **lik, exact=np.asarray(oracle.log_prob(jnp.asarray(x), 1e-5)))
    (out / "facts.json").write_text(json.dumps(facts))


def worker_likelihood(out: pathlib.Path, port: str, process_id: str) -> None:
    """One of two processes (2 devices each): sharded likelihoods with per-sample and
    batch-joint adaptive steps; process 0 writes them."""
    from experiments import distributed

    distributed.initialize(f"localhost:{port}", 2, int(process_id), heartbeat_timeout=HEARTBEAT)
    vp, oracle, x = _mixture_problem(60)  # padded to 64 = 4 devices x 16
    lik = _likelihoods(oracle.score, vp, x, distributed.mesh(), fixed=False)
    if distributed.is_main():
        np.savez(out / "likelihood_2proc.npz", **lik)


# --------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-device run: 20 steps in this process, on one device."""
    import jax

    from experiments import config as config_lib
    from experiments import distributed, training
    from experiments.run import Run

    workdir = tmp_path_factory.mktemp("single") / "run"
    cfg = config_lib.load("checkerboard", OVERRIDES)
    one = distributed.mesh(jax.devices()[:1])
    training.train(cfg, workdir, progress=False, mesh=one)
    run = Run.restore(workdir, prefer_best=False, mesh=one)
    return {"metrics": _metrics(workdir), "state": _state_leaves(run.state)}


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    out = tmp_path_factory.mktemp("forced8")
    proc = subprocess.run(
        [sys.executable, __file__, "forced", str(out)],
        env=_env(8),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:  # step counters, PRNG key data
            np.testing.assert_array_equal(actual[name], value, err_msg=name)


# --------------------------------------------------------------------------------------
# 8 forced devices


@pytest.mark.parametrize("tag", ["replicated", "fsdp"])
@pytest.mark.slow  # 8-device subprocess, ~60 s; default run past 12 min
def test_eight_devices_match_one_device(forced, reference, tag):
    facts = json.loads((forced / "facts.json").read_text())
    assert facts["devices"] == 8 and facts["batch_shard_rows"] == [8]  # 64 = 8 x 8 rows
    if tag == "fsdp":
        # the two 32x32 kernels of model, EMA, Adam mu and nu are split 8 ways
        assert facts["fsdp_split_leaves"] >= 4
    else:
        assert facts["replicated_split_leaves"] == 0
    trajectory = _metrics(forced / tag)
    np.testing.assert_allclose(trajectory, reference["metrics"], rtol=1e-5, atol=0)
    with np.load(forced / f"{tag}_state.npz") as f:
        _assert_same_state(dict(f), reference["state"])


@pytest.fixture(scope="module")
def unsharded_likelihood():
    vp, oracle, x = _mixture_problem(60)
    return _likelihoods(oracle.score, vp, x)


def _assert_likelihoods_match(sharded: dict, ref: dict, exact: np.ndarray | None) -> None:
    # fixed grid and per-sample control: the same arithmetic per sample
    if "fixed" in sharded:
        np.testing.assert_allclose(sharded["fixed"], ref["fixed"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sharded["per_sample"], ref["per_sample"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sharded["nfe_per_sample"], ref["nfe_per_sample"])
    assert len(np.unique(ref["nfe_per_sample"])) > 3  # samples really took different steps
    # batch-joint control: the same number of steps; the step sizes follow the float32
    # error estimate (a difference of nearly equal stage sums), whose rounding depends
    # on how XLA fuses the sharded program, so results may move by a small fraction of
    # the solver's own error against the exact density
    assert int(sharded["joint_nfe"]) == int(ref["joint_nfe"])
    if exact is not None:
        solver_error = np.max(np.abs(ref["joint"] - exact))
        assert np.max(np.abs(sharded["joint"] - ref["joint"])) <= 0.1 * solver_error
        assert solver_error < 2e-3  # and the reference itself is right


@pytest.mark.slow  # 8-device subprocess; default run past 12 min
def test_sharded_likelihood_equals_unsharded(forced, unsharded_likelihood):
    with np.load(forced / "likelihood.npz") as f:
        sharded = dict(f)
    _assert_likelihoods_match(sharded, unsharded_likelihood, sharded["exact"])


@pytest.mark.slow  # 8-device subprocess; default run past 12 min
def test_sharded_sampling_equals_unsharded(forced):
    import jax

    import samplers

    vp, oracle, _ = _mixture_problem(1)
    with np.load(forced / "likelihood.npz") as f:
        sharded = dict(f)
    for tag, kw in (("sample_fixed", dict(steps=20)), ("sample_adaptive", LIK)):
        kw = {**kw, "eps": 1e-3}
        x, stats = samplers.sample_ode(
            score_fn=oracle.score, sde=vp, shape=(64, 2), key=jax.random.key(2), **kw
        )
        assert int(stats["nfe"]) == int(sharded[tag + "_nfe"])
        np.testing.assert_allclose(sharded[tag], np.asarray(x), rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------
# two processes


def _train_command(workdir: pathlib.Path, port: int, process_id: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments",
        "train",
        "--config",
        "checkerboard",
        "--workdir",
        str(workdir),
        "--no-eval",
        "--quiet",
        "--coordinator-address",
        f"localhost:{port}",
        "--num-processes",
        "2",
        "--process-id",
        str(process_id),
        "--heartbeat-timeout",
        str(HEARTBEAT),
        *OVERRIDES,
        "train.ckpt_every=2",
        "train.keep=3",
    ]


def _checkpoint_steps(directory: pathlib.Path) -> list[int]:
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _launch(workdir: pathlib.Path, logs: pathlib.Path, tag: str) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for i in range(2):
        with (logs / f"{tag}_{i}.txt").open("w") as err:
            procs.append(
                subprocess.Popen(
                    _train_command(workdir, port, i),
                    env=_env(2, cache=logs / "jax_cache"),
                    cwd=logs,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


# The two-process runs (two coordinated OS processes on one machine, ~100 s of the 2
# cores together) run in -m slow; the default run keeps the 8-device checks above.
TWO_PROCESS = pytest.mark.slow


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Train with 2 processes; SIGKILL process 1 after the first checkpoint; time how
    long process 0 takes to notice; then resume with 2 new processes to the end."""
    logs = tmp_path_factory.mktemp("two_processes")
    workdir = logs / "run"
    info = {}
    procs = _launch(workdir, logs, "first")
    try:
        deadline = time.monotonic() + 300
        while not _checkpoint_steps(workdir / "checkpoints"):
            assert all(p.poll() is None for p in procs), (logs / "first_0.txt").read_text()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.005)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        procs[1].wait(timeout=60)
        try:
            procs[0].wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
        info["survivor_seconds"] = time.monotonic() - killed_at
        info["survivor_returncode"] = procs[0].poll()
        info["killed_returncode"] = procs[1].returncode
    finally:
        _stop(procs)
    info["survivor_log"] = (logs / "first_0.txt").read_text()
    info["on_disk"] = _checkpoint_steps(workdir / "checkpoints")

    procs = _launch(workdir, logs, "resume")
    try:
        for p in procs:
            p.wait(timeout=300)
    finally:
        _stop(procs)
    info["resume_returncodes"] = [p.returncode for p in procs]
    info["resume_logs"] = [(logs / f"resume_{i}.txt").read_text() for i in range(2)]
    info["workdir"] = workdir
    return info


@TWO_PROCESS
def test_survivor_exits_with_clear_error_when_a_process_dies(two_processes):
    info = two_processes
    assert info["killed_returncode"] == -signal.SIGKILL
    log = info["survivor_log"]
    assert info["survivor_returncode"] is not None, f"process 0 still running:\n{log[-3000:]}"
    assert info["survivor_returncode"] != 0, log[-3000:]
    print(f"survivor exited {info['survivor_seconds']:.1f} s after the kill")
    assert info["survivor_seconds"] < 3 * HEARTBEAT + 30, info["survivor_seconds"]
    # our message (failed collective) or JAX's (missed heartbeats)
    assert "another process died" in log or "another task died" in log, log[-3000:]


@TWO_PROCESS
def test_two_processes_resume_after_kill_to_the_single_process_state(two_processes, reference):
    from experiments import config as config_lib
    from experiments import distributed
    from experiments.run import Run

    info = two_processes
    assert info["on_disk"] and info["on_disk"][-1] < STEPS, info["on_disk"]  # killed mid-run
    assert info["resume_returncodes"] == [0, 0], info["resume_logs"][0][-3000:]
    workdir = info["workdir"]
    assert _checkpoint_steps(workdir / "checkpoints")[-1] == STEPS
    cfg = config_lib.read(workdir / "config.json")
    assert cfg.train.ckpt_every == 2 and cfg.train.steps == STEPS
    # process 0 alone logged: one row per step, the same trajectory as one device
    np.testing.assert_allclose(_metrics(workdir), reference["metrics"], rtol=1e-5, atol=0)
    import jax

    one = distributed.mesh(jax.devices()[:1])  # restored onto another topology
    run = Run.restore(workdir, prefer_best=False, mesh=one)
    assert run.step == STEPS
    _assert_same_state(_state_leaves(run.state), reference["state"])


@TWO_PROCESS
def test_per_sample_adaptive_likelihood_across_two_processes(tmp_path, unsharded_likelihood):
    """Samples needing 43 to 97 evaluations, split over 2 processes x 2 devices: no
    hang, and the result of one device."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "likelihood", str(tmp_path), str(port), str(i)],
            env=_env(2),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        _stop(procs)
    assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    import jax.numpy as jnp

    _, oracle, x = _mixture_problem(60)
    with np.load(tmp_path / "likelihood_2proc.npz") as f:
        sharded = dict(f)
    exact = np.asarray(oracle.log_prob(jnp.asarray(x), 1e-5))
    _assert_likelihoods_match(sharded, unsharded_likelihood, exact)


if __name__ == "__main__":
    workers = {"forced": worker_forced, "likelihood": worker_likelihood}
    name, *args = sys.argv[1:]
    workers[name](pathlib.Path(args[0]), *args[1:])
