#!/usr/bin/env bash
# One prepared accelerator run: the environment, the DDPM++ benchmark through the real
# training step (experiments/bench/gpu_ddpmpp.py, JSON written after every part), then
# the DDPM++/NCSN++ network tests on the GPU. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import jax, flax, diffrax; print('jax', jax.__version__, 'flax', flax.__version__, 'diffrax', diffrax.__version__, jax.devices())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout ${BENCH_TIMEOUT:-400} python -m experiments.bench gpu_ddpmpp "$OUT" > "$OUT/ddpmpp.log" 2>&1
echo "gpu_ddpmpp rc=$?"
tail -5 "$OUT/ddpmpp.log"
timeout ${TEST_TIMEOUT:-100} python -m pytest -q --tb=short -p no:cacheprovider tests/networks/test_ncsnpp.py > "$OUT/pytest.txt" 2>&1
echo "pytest rc=$?"
tail -15 "$OUT/pytest.txt"
