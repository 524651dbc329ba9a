#!/usr/bin/env bash
# GRPO on the demo tree, on a CPU, in minutes: a short SFT of the tiny random Qwen3-VL on one demo
# classification set (it learns the answer format: one option letter), the GRPO rewards of that SFT model on
# held-out validation records, a short seeded GRPO from it, and the same rewards again: before and after.
# Assumes the demo tree, its conversion and the tiny model exist (scripts/demo.sh steps 1-4; DEMO_DIR, default
# demo). DEMO_GRPO_DATASET picks the set (default flare_cmmd: benign/malignant mammograms, the class drawn in
# the image). Everything lands in $DEMO_DIR/output/grpo_demo; run again to start over.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

DEMO_DIR=${DEMO_DIR:-demo}
DATASET=${DEMO_GRPO_DATASET:-flare_cmmd}
VAL_LIMIT=${DEMO_GRPO_VAL_LIMIT:-24}
SFT_EPOCHS=${DEMO_GRPO_SFT_EPOCHS:-6}
GRPO_STEPS=${DEMO_GRPO_STEPS:-16}
OUT="$DEMO_DIR/output/grpo_demo"
export SKIP_SYNC=1
export FLARE25_CONVERTED_DIR="$PWD/$DEMO_DIR/converted_data"
PIXELS=(MIN_PIXELS=1024 MAX_PIXELS=4096)   # 1-4 visual tokens per image: enough for the drawn class cue
py() { "${RUN[@]}" python "$@"; }
step() { printf '\n==== %s ====\n' "$*"; }

if [ ! -f "$DEMO_DIR/model/config.json" ] || [ ! -d "$FLARE25_CONVERTED_DIR" ]; then
    echo "error: no demo model or converted demo data under $DEMO_DIR: run scripts/demo.sh first" >&2
    exit 2
fi
rm -rf "$OUT"

step "1/4 short SFT on $DATASET (the answer format)"
env "${PIXELS[@]}" MODEL_PATH="$DEMO_DIR/model" OUTPUT_DIR="$OUT/sft" RUN_NAME=grpo_demo_sft DATASETS="$DATASET" \
    LR=1e-2 EPOCHS="$SFT_EPOCHS" GRAD_ACCUM=1 BATCH_SIZE=4 WARMUP_RATIO=0.1 TUNE_MM_VISION=True \
    SAVE_STEPS=100000 LOGGING_STEPS=6 DATALOADER_WORKERS=1 GRADIENT_CHECKPOINTING=False \
    DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 \
    bash scripts/sft_qwen3_4b_flare.sh

step "2/4 GRPO rewards of the SFT model on ${DATASET}_val (first $VAL_LIMIT records, greedy)"
py -m qwenvl.train.grpo_eval --model_path "$OUT/sft" --dataset_use "${DATASET}_val" --limit "$VAL_LIMIT" \
    --max_new_tokens 8 --output "$OUT/rewards_before.json"

step "3/4 GRPO from the SFT model ($GRPO_STEPS steps, 2 prompts x 4 completions per step, seeded)"
env "${PIXELS[@]}" MODEL_PATH="$OUT/sft" OUTPUT_DIR="$OUT/grpo" RUN_NAME=grpo_demo DATASETS="$DATASET" \
    LR=5e-3 MAX_STEPS="$GRPO_STEPS" BATCH_SIZE=8 GRAD_ACCUM=1 NUM_GENERATIONS=4 MAX_COMPLETION_LENGTH=4 \
    TUNE_MM_VISION=True SAVE_STEPS=100000 LOGGING_STEPS=1 DATALOADER_WORKERS=0 GRADIENT_CHECKPOINTING=False \
    DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 \
    bash scripts/grpo_qwen3_4b_flare.sh

step "4/4 GRPO rewards of the GRPO model on the same records"
py -m qwenvl.train.grpo_eval --model_path "$OUT/grpo" --dataset_use "${DATASET}_val" --limit "$VAL_LIMIT" \
    --max_new_tokens 8 --output "$OUT/rewards_after.json"

py - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
before, after = (json.loads((out / f"rewards_{k}.json").read_text()) for k in ("before", "after"))
print("\n==== held-out mean reward (answer x 1.0 + format x 0.2) ====")
for key in ("reward", "answer", "format"):
    print(f"  {key:<7} SFT {before[key]:.4f}  ->  SFT+GRPO {after[key]:.4f}   ({before['n']} records)")
log = [json.loads(x) for x in (out / "grpo" / "train_log.jsonl").read_text().splitlines() if x]
rewards = [r["reward"] for r in log if "loss" in r and "reward" in r]
half = len(rewards) // 2
if half:
    print(f"  training reward (sampled completions): first {half} steps {sum(rewards[:half]) / half:.4f}"
          f"  ->  last {len(rewards) - half} steps {sum(rewards[half:]) / (len(rewards) - half):.4f}")
PY
