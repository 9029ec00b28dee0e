#!/usr/bin/env bash
# Trains the five model kinds on skimage's natural images at sigma = 0.1 with the same budget
# (the denoising benchmark of `recon bench denoise`), and exports aelpn-natural / lpn-natural.
# Usage: bash scripts/train_natural_models.sh [STEPS] [EXPORT_DIR]
#   checkpoints in runs/ (resumable); the two exports go to EXPORT_DIR (default runs/natural).
#   The shipped weights are replaced only when asked: EXPORT_DIR = priors/weights.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-1500}
EXPORT_DIR=${2:-runs/natural}
mkdir -p "$EXPORT_DIR"
for kind in aelpn lpn scale-only shift-only normalization-trick; do
  extra=()
  case $kind in
    aelpn) extra=(--local-mean 8 --noise-input --export "$EXPORT_DIR/$kind-natural.safetensors") ;;
    lpn) extra=(--export "$EXPORT_DIR/$kind-natural.safetensors") ;;
  esac
  # --export replaces only this --out's own earlier export: an older one is replaced on purpose
  [ ${#extra[@]} -eq 0 ] || rm -f "$EXPORT_DIR/$kind-natural.safetensors"
  .venv/bin/recon train --kind "$kind" --data natural --sigma 0.1 --steps "$STEPS" --batch 8 \
    --patch 48 --width 32 --levels 3 --depth 2 --seed 0 --threads 1 \
    --out "runs/$kind-natural.safetensors" --quiet "${extra[@]}"
done
echo "exported: $EXPORT_DIR/aelpn-natural.safetensors, $EXPORT_DIR/lpn-natural.safetensors"
