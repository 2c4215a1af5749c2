#!/usr/bin/env bash
# One-GPU check of the real-size path (random-weight Qwen2.5-Math-1.5B-shaped pair, bf16):
# caching, steering, the hybrid engine (batched and cross-tokenizer) and preset loading
# (dtype, device_map). Prints one line per phase and a final `GPU_CHECK {json}` line;
# exits non-zero when a correctness check fails. Sized for <= 5 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh                  # on a machine with one CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu-smoke      # reduced form on CPU (CI runs it: tests/test_real_pairs.py)
#   GPU_CHECK_CPU_SMOKE=1 bash benchmarks/gpu_check.sh   # the same, by environment
#
# Needs torch, transformers, tokenizers, safetensors, scikit-learn, tqdm (and accelerate for
# device_map); nnsight is optional (the backend comparison is skipped without it). Runs from a
# checkout without installing the package. PYTHON picks the interpreter (default python3);
# GPU_CHECK_TIMEOUT the wall-clock limit in seconds (default 330); the summary JSON is also
# written to $GPU_CHECK_OUT, or to $OUT/gpu_check.json when OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
args=("$@")
if [[ "${GPU_CHECK_CPU_SMOKE:-0}" == 1 ]]; then
    args=(--cpu-smoke "${args[@]}")
fi
out="${GPU_CHECK_OUT:-}"
if [[ -z "$out" && -n "${OUT:-}" ]]; then
    out="$OUT/gpu_check.json"
fi
if [[ -n "$out" ]]; then
    args+=(--out "$out")
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout "${GPU_CHECK_TIMEOUT:-330}" "$PY" benchmarks/gpu_check.py "${args[@]}"
