#!/usr/bin/env bash
# The prepared GPU check (about 5 minutes on one H200, at most 8): run from the repository root on a
# machine with a CUDA GPU and PyTorch, with the Fashion-MNIST idx files in data/FashionMNIST/raw/ (or
# /usr/share/datasets/fashion-mnist/). Writes everything under ${OUT:-build/gpu-check}.
#   1. the CUDA recover rows: torchvision ResNet-18 at the ImageNet schedule (200/224, 100 images a unit),
#      each with its counted FLOPs and its fraction of this GPU's torch.mm peak, measured in the same run
#      (fp32 at the TF32 setting cuDNN gives the convolutions; fp16 for the AMP variants)
#   2. AMP against fp32: the images stay close and every loss is finite
#   3. a Fashion-MNIST IPC 10 build with --device cuda (teacher, patches, recover, relabel, evaluate)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
python3 benchmarks/recover_speed.py --preset imagenet --teacher resnet18 --batch 100 --iterations 100 \
    --device cuda --output "$OUT/speed.json"
python3 benchmarks/amp_check.py --preset imagenet --teacher resnet18 --batch 100 --iterations 200 \
    --output "$OUT/amp_check.json"
python3 -m builders.cli fashion-mnist --ipc 10 --device cuda --data-root data --build-root "$OUT/build" 2>&1 \
    | tee "$OUT/build.log"
cp "$OUT/build/fashion-mnist/ipc10/manifest.json" "$OUT/manifest.json"
