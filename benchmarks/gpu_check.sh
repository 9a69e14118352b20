#!/usr/bin/env bash
# The GPU visit in one command (docs/benchmarks.md): correctness of CUDA against the CPU, then the speed table.
#   benchmarks/gpu_check.sh OUT_DIR            # writes OUT_DIR/gpu_check.{json,md,png}; about 7 minutes
# Uses .venv/bin/python when there is one (make install), else python3 with the package installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
if ! "$python" -c "import crossformer_vision" 2>/dev/null; then
    "$python" -m pip install -q -e ".[dense]"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
# 8 minutes at most: correctness (~1 min), speed within --budget, the rest is start-up and writing
exec timeout 480 "$python" benchmarks/gpu_check.py --out "$out" --budget "${GPU_CHECK_BUDGET:-330}" "${@:2}"
