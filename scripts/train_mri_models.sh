#!/usr/bin/env bash
# Trains the shipped MRI priors (2-channel complex) on Colin27 T1 slices with smooth random
# phase (needs Debian's mricron-data), and exports aelpn-mri / lpn-mri.
# Usage: bash scripts/train_mri_models.sh [STEPS]   (checkpoints in runs/, resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-500}
for kind in aelpn lpn; do
  # --export replaces only this --out's own earlier export: the shipped file is replaced on purpose
  rm -f "priors/weights/$kind-mri.safetensors"
  .venv/bin/recon train --kind "$kind" --data mri-brain --sigma 0.1 --steps "$STEPS" --batch 8 \
    --patch 48 --width 32 --levels 3 --depth 2 --seed 0 --threads 1 \
    --out "runs/$kind-mri.safetensors" --export "priors/weights/$kind-mri.safetensors" --quiet
done
