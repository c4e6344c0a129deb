#!/usr/bin/env bash
# One short accelerator check: which packages the image has, the sampler/likelihood
# tests that need no scipy/sklearn, and the quick core benchmark. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=.
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python -c "import jax; print('jax', jax.__version__, jax.devices())"
  for m in diffrax equinox lineax flax optax orbax.checkpoint scipy sklearn matplotlib tqdm pytest; do
    python -c "import $m; print('$m', getattr($m, '__version__', 'ok'))" 2>/dev/null || echo "$m MISSING"
  done
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 200 python -m pytest -q --tb=line -p no:cacheprovider tests/samplers/test_samplers.py tests/samplers/test_likelihood.py \
  tests/samplers/test_exponential.py tests/samplers/test_grids.py > "$OUT/pytest.txt" 2>&1
grep -E "passed|failed|Error|assert" "$OUT/pytest.txt" | tail -15
timeout 150 python -m experiments.bench core --quick --out "$OUT/bench_core.json" > "$OUT/bench.txt" 2>&1
tail -40 "$OUT/bench.txt"
