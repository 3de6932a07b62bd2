#!/usr/bin/env bash
# The GPU figures in one go, on a machine with an NVIDIA GPU: run from the repository root.
#   bench/gpu_check.sh [FLAGS]    # the full table, batches 1 ... 4096 (FLAGS go to bench.gpu)
#   bench/gpu_check.sh --quick    # a short pass (batches 1, 64, 4096; fewer calls)
# Writes bench/gpu/ (results.md, results.json, throughput.png) and bench/gpu/check.log.
# Needs the CUDA 13 and cuDNN 9 libraries onnxruntime-gpu loads; without system ones:
#   .venv/bin/pip install "onnxruntime-gpu[cuda,cudnn]"
# PY=/path/to/python runs it with another interpreter that has the project's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  PY=.venv/bin/python
  [ -x "$PY" ] || make .venv/.stamp-dev
fi
mkdir -p bench/gpu
exec > >(tee bench/gpu/check.log) 2>&1

echo "== the card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
  echo "no nvidia-smi: no NVIDIA driver here"; exit 1; }

echo "== onnxruntime sees the GPU"
"$PY" - <<'PY'
import sys
import onnxruntime as ort
if hasattr(ort, "preload_dlls"):
    ort.preload_dlls()
print("onnxruntime", ort.__version__, ort.get_available_providers())
s = ort.InferenceSession("artifacts/gru.onnx", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
if s.get_providers()[0] != "CUDAExecutionProvider":
    sys.exit("the CUDA provider did not load: install the CUDA/cuDNN libraries (see the header)")
PY

echo "== the GPU tests: placement, parity on the device, device states, the kernel table"
status=0  # a failed test still leaves the benchmark's figures to read
"$PY" -m pytest -q -rs -p no:cacheprovider tests/service/test_cuda_device.py tests/export/test_cuda_kernels.py \
  tests/export/test_cuda_graph.py tests/service/test_device_state.py -s || status=$?

echo "== the benchmark"
if [ "${1:-}" = "--quick" ]; then
  "$PY" -m bench.gpu --batches 1,64,4096 --seconds 0.3
else
  "$PY" -m bench.gpu "$@"
fi
echo "== done: commit bench/gpu/ (the card's name is in results.md)"
exit "$status"
