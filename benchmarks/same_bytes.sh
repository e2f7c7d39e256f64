#!/usr/bin/env bash
# Builds Fashion-MNIST IPC 10 with each of the four methods into OUT, from a fresh build root (so
# every teacher is trained, none read from a cache), with 20 soft-label and student epochs, on one
# thread. Two runs of this script at two commits are compared with `benchmarks/same_bytes_compare.py`:
# a refactor that must not change what is built shows no difference.
#   usage: benchmarks/same_bytes.sh OUT [PYTHON]
set -euo pipefail
out=${1:?usage: same_bytes.sh OUT [PYTHON]}
python=${2:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for method in fadrm fadrm+ sre2l random-real; do
  "$python" -m builders.cli build fashion-mnist --ipc 10 --method "$method" --epochs 20 \
    --build-root "$out" --device cpu --seed 0 --evaluate
done
