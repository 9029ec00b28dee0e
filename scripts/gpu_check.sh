#!/usr/bin/env bash
# Everything that needs a GPU, in one command, on a machine with CUDA:
#   bash scripts/gpu_check.sh [OUT]        (default OUT=out/gpu-check)
# 1. a CUDA build of PyTorch in .venv-gpu (the CPU .venv is left alone), CuPy for SigPy
# 2. the CUDA tests (tests/test_cuda.py, tests/test_cg.py::test_cg_on_cuda)
# 3. seconds and PSNR of recon ct on the 512² real slice (90 views, 1e5 photons) per method
# 4. a 64-slice 512² series (scripts/bench_ct_series.py), killed after 10 slices and resumed
# Results: OUT/*.json, OUT/*.log.
set -euo pipefail
OUT=${1:-out/gpu-check}
mkdir -p "$OUT"
PY=.venv-gpu/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install --quiet --upgrade pip
  .venv-gpu/bin/pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126 \
    || .venv-gpu/bin/pip install --quiet torch==2.13.0
  .venv-gpu/bin/pip install --quiet -e '.[test,mri,ctdata,jpeg12]' cupy-cuda12x
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
$PY -m pytest -q tests/test_cuda.py tests/test_cg.py 2>&1 | tee "$OUT/tests.log"
SLICE=$($PY -c "from recon.bench.speed import _slice_path; print(_slice_path())")
for method in "fbp" "tv" "pnp-admm --prior aelpn-ct" "pnp-admm --prior ridge-ct"; do
  name=$(echo "$method" | tr ' ' '_')
  # shellcheck disable=SC2086
  $PY -m recon.cli ct --input "$SLICE" --views 90 --photons 1e5 --solver $method \
    --device cuda --quiet --out "$OUT/slice-$name"
  $PY -c "import json,sys; m=json.load(open('$OUT/slice-$name/metrics.json')); \
print('$method', round(m['psnr'], 2), 'dB', round(m['seconds'], 2), 's')" | tee -a "$OUT/slice.log"
done
$PY scripts/bench_ct_series.py --out "$OUT/series" --slices 64 --solver pnp-admm \
  --prior aelpn-ct --device cuda --kill-after 10 | tee "$OUT/series.log"
