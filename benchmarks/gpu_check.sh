#!/usr/bin/env bash
# The prepared GPU check (sized for under 8 minutes on one H100; not yet run on a GPU): run from the
# repository root on a machine with a CUDA GPU, PyTorch, the builder's dependencies and pytest
# (pip install -e '.[build]' pytest), with the Fashion-MNIST idx files in data/FashionMNIST/raw/ (or
# /usr/share/datasets/fashion-mnist/). Writes everything under ${OUT:-build/gpu-check}.
#
# The code that runs only on CUDA, and the step that exercises it:
#   1. the tests' CUDA cases (pytest -m cuda): recover_unit with AMP (fp16 autocast and the GradScaler on
#      CUDA, an injected overflow skipped, the scale lowered), teachers and batches on the GPU, its CUDA
#      peak memory; torch.cuda.set_device and a group of one over NCCL; the CUDA generator a checkpoint
#      keeps and restores; the GPU's name and CUDA/cuDNN versions in `environment`
#   2. recover_speed.py --device cuda: the CUDA recover rows (torchvision ResNet-18 at ImageNet's 200/224
#      schedule, 100 images a unit), torch.cuda.synchronize, the allocator's peak memory per variant, each
#      row with its counted FLOPs and its fraction of this GPU's torch.mm peak measured in the same run
#      (fp32 at the TF32 setting cuDNN gives the convolutions; fp16 for the AMP variants)
#   3. amp_check.py (CUDA by default): AMP against fp32 on that unit, its loss scale and skipped steps
#   4. a Fashion-MNIST IPC 10 build with --device cuda (teacher, patches, recover with AMP on by default,
#      relabel, evaluate), its environment and per-unit loss scale recorded in the manifest
#   5. a small SRe2L build (Gaussian start drawn for the GPU) through torchrun as one process: local_device,
#      torch.cuda.set_device, NCCL, the student under DDP with device_ids, checkpoints of the CUDA generator
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import pytest, torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/builders/test_recover.py tests/builders/test_devices.py \
    tests/builders/test_distributed.py 2>&1 | tee "$OUT/pytest.log"
python3 benchmarks/recover_speed.py --preset imagenet --teacher resnet18 --batch 100 --iterations 100 \
    --repeats 2 --device cuda --output "$OUT/speed.json"
python3 benchmarks/amp_check.py --preset imagenet --teacher resnet18 --batch 100 --iterations 200 \
    --output "$OUT/amp_check.json"
python3 -m builders.cli fashion-mnist --ipc 10 --device cuda --data-root data --build-root "$OUT/build" 2>&1 \
    | tee "$OUT/build.log"
cp "$OUT/build/fashion-mnist/ipc10/manifest.json" "$OUT/manifest.json"
python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m builders.cli fashion-mnist --ipc 1 \
    --method sre2l --iterations 4,4,4,4 --epochs 4 --evaluate --device cuda --data-root data \
    --build-root "$OUT/build" --build-dir "$OUT/torchrun" 2>&1 | tee "$OUT/torchrun.log"
grep -q "joined the process group (nccl)" "$OUT/torchrun.log"
cp "$OUT/torchrun/manifest.json" "$OUT/torchrun-manifest.json"
