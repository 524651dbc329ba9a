#!/usr/bin/env bash
# Resolution decides: the same training steps at one uniform image budget against the per-dataset budgets, on a
# dataset whose class is fine detail. The demo tree's bcn20000 draws each class as a 2-pixel texture inside a
# lesion of one size and mean colour (data_conversion/demo_tree/drawing.py, TEXTURES): a view at native size
# shows it, a 16-token view averages it away. Trains the tiny model three times, 600 steps of 4 records each,
# seeded, identical but for the images' budget (the demo's 16 visual tokens, the guide's 49, and the dataset
# table's 256 for bcn20000, which keeps these ~300x220 images at their native ~60 tokens), then evaluates each
# on the 48 held-out records beside the constant-answer baseline and ends with the comparison table.
# Measured (2 cores, 2026-12-07): docs/evaluation.md, "Resolution on the demo". About 5 minutes.
# Everything lands in ./demo_resolution (DEMO_DIR to change it).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

DEMO_DIR=${DEMO_DIR:-demo_resolution}
case "$DEMO_DIR" in /*) ;; *) DEMO_DIR="$PWD/$DEMO_DIR" ;; esac  # absolute: the training run changes folder
STEPS=${DEMO_STEPS:-600}
export SKIP_SYNC=1 FLARE25_CONVERTED_DIR="$DEMO_DIR/converted_data"
command -v nvidia-smi >/dev/null 2>&1 || export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
py() { "${RUN[@]}" python "$@"; }
EVAL="$DEMO_DIR/eval"

echo "==== 1. the demo tree's bcn20000 (48 records per split) and the tiny model ===="
py data_conversion/make_demo_dataset.py --output_dir "$DEMO_DIR/organized_dataset" --samples_per_split 48 >/dev/null
py data_conversion/convert_flare_to_qwen3vl.py --input_dir "$DEMO_DIR/organized_dataset" \
    --output_dir "$FLARE25_CONVERTED_DIR" --datasets bcn20000 --splits train val --no_progress >/dev/null
py scripts/make_demo_model.py --output_dir "$DEMO_DIR/model" >/dev/null

train() {  # NAME, then the image-budget variables of that run
    local name=$1
    shift
    rm -rf "$DEMO_DIR/output/$name"
    mkdir -p "$DEMO_DIR/output"
    echo "==== training: $name ($*) ===="
    env "$@" MODEL_PATH="$DEMO_DIR/model" OUTPUT_DIR="$DEMO_DIR/output/$name" RUN_NAME="$name" \
        DATASETS=flare_bcn20000 LR=5e-3 LR_SCHEDULER=constant WARMUP_RATIO=0 MAX_STEPS="$STEPS" BATCH_SIZE=4 \
        GRAD_ACCUM=1 TUNE_MM_VISION=True SAVE_STEPS="$STEPS" SAVE_TOTAL_LIMIT=1 LOGGING_STEPS=100 SEED=0 \
        DATALOADER_WORKERS=0 GRADIENT_CHECKPOINTING=False DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 \
        OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" \
        bash scripts/sft_qwen3_4b_flare.sh --save_only_model True --disable_tqdm True \
        2>"$DEMO_DIR/output/$name.log" | grep -E "step .*\| loss"  # the run's log (data check, cost): $name.log
}
train uniform_16 MIN_PIXELS=1024 MAX_PIXELS=16384    # one budget for every image: the demo's 16 visual tokens
train uniform_49 MIN_PIXELS=784 MAX_PIXELS=50176     # one budget: the guide's 49 visual tokens
train per_dataset PIXEL_POLICY=per_dataset           # the dataset table's budget (bcn20000: 256)

echo "==== evaluation on the 48 held-out records (image budgets from each run's run_info.json) ===="
evaluate() { py scripts/evaluate_flare.py --split val --datasets bcn20000 --no_progress "$@" | sed -n '/^Wrote /p'; }
evaluate --baseline constant --output_dir "$EVAL/constant"
evaluate --model_path "$DEMO_DIR/output/uniform_16" --output_dir "$EVAL/uniform_16"
evaluate --model_path "$DEMO_DIR/output/uniform_49" --output_dir "$EVAL/uniform_49"
evaluate --model_path "$DEMO_DIR/output/per_dataset" --output_dir "$EVAL/per_dataset" \
    --compare "$EVAL/uniform_16" "$EVAL/uniform_49" "$EVAL/constant"

echo
echo "==== per-dataset budgets against one uniform budget, bcn20000 balanced accuracy ($EVAL/per_dataset/metrics.md) ===="
sed -n '/^## Comparison/,$p' "$EVAL/per_dataset/metrics.md"
