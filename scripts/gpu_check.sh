#!/usr/bin/env bash
# GPU acceptance in ONE time-boxed command (see docs/performance.md, "How to run the GPU check"):
#   bash scripts/gpu_check.sh [--tiny] [--output DIR] [--budget_s N]
# Prints the GPU, driver, torch, transformers, DeepSpeed and the attention implementations, and every missing
# dependency with its offline install (pip install --no-index --find-links WHEEL_DIR <pkg>), then measures the
# guide's ZeRO-3 + CPU offload run, packed full finetune, LoRA, packed LoRA and the evaluator's batched
# generation on the real 4B architecture with random weights (configs/qwen3_vl_4b, no download), each in its
# own process with its own share of --budget_s (default 420 s). Writes DIR/gpu_check.json and DIR/gpu_check.md
# after every step.
# --tiny: the same code path with the embedded tiny model on the CPU (1-2 minutes on an idle 2-core machine;
# default budget 180 s).
# No network needed: demo data and the processor are built locally (HF_HUB_OFFLINE=1).
# PYTHON=python3 runs it with that interpreter (e.g. a GPU machine's own torch, with wheels on PYTHONPATH)
# instead of the project's .venv / uv environment. Stops before any model loads where the machine's NVIDIA GPUs
# are unusable to torch (qwenvl/machine.py; ALLOW_CPU=1 to measure on the CPU anyway).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] && export SKIP_SYNC=${SKIP_SYNC:-1}  # the environment as it is: no sync per check
source scripts/_env.sh
"${PY[@]}" -m qwenvl.machine
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
DATA_DIR=${GPU_CHECK_DATA:-$REPO_ROOT/demo/gpu_check_data}
if [ ! -f "$DATA_DIR/converted/BUSI-det_val.json" ]; then
    echo "[gpu_check] building demo data in $DATA_DIR"
    "${PY[@]}" data_conversion/make_demo_dataset.py --output_dir "$DATA_DIR/raw" --samples_per_split 24 >/dev/null
    "${PY[@]}" data_conversion/convert_flare_to_qwen3vl.py --input_dir "$DATA_DIR/raw" --output_dir "$DATA_DIR/converted" \
        --datasets neojaundice retino busi_det boneresorption bone_marrow --splits train val --no_progress >/dev/null
fi
export FLARE25_CONVERTED_DIR="$DATA_DIR/converted"
exec "${PY[@]}" -m qwenvl.bench.gpu_check "$@"
