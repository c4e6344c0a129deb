"""The solver benchmark runs end to end and its summary compares whole runs."""

import json

import numpy as np

from experiments import bench_solvers


def test_bench_solvers_smoke(tmp_path):
    out = tmp_path / "b"
    rc = bench_solvers.main(
        ["--quick", "--out", str(out), "--grids", "uniform", "--solvers", "euler", "ddim"]
    )
    assert rc == 0
    saved = json.loads((out / "solvers.json").read_text())
    rows = saved["rows"]
    euler = {r["budget"]: r for r in rows if r["solver"] == "euler"}
    assert sorted(euler) == [5, 10, 100] and all(r["nfe"] == r["budget"] for r in euler.values())
    # Euler is first order: more steps, closer to the exact trajectory
    assert euler[100]["traj_rmse"] < euler[10]["traj_rmse"] < euler[5]["traj_rmse"]
    exact = next(r for r in rows if r["solver"] == "exact")
    assert np.isnan(exact["traj_rmse"]) and 0 <= exact["mode_tv"] < 0.2
    text = (out / "solvers.md").read_text()
    assert "Euler, uniform grid, 100 steps" in text and (out / "solvers.png").exists()
    assert bench_solvers.main(["--out", str(out), "--replot"]) == 0
