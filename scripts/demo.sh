#!/usr/bin/env bash
# The whole pipeline on the embedded defaults, on a CPU, in minutes: a miniature FLARE25 tree -> conversion
# -> validation -> the tiny random Qwen3-VL -> a short training run with a checkpoint -> evaluation of the
# trained model against the untrained one on the validation split.
# Everything lands in ./demo (DEMO_DIR to change it). Run again to start over.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

DEMO_DIR=${DEMO_DIR:-demo}
SAMPLES=${DEMO_SAMPLES_PER_SPLIT:-48}
export SKIP_SYNC=1
case "$DEMO_DIR" in /*) ;; *) DEMO_DIR="$PWD/$DEMO_DIR" ;; esac  # absolute: the training run changes folder
export FLARE25_CONVERTED_DIR="$DEMO_DIR/converted_data"
py() { "${RUN[@]}" python "$@"; }

step() { printf '\n==== %s ====\n' "$*"; }

step "1/6 miniature FLARE25 tree ($SAMPLES records per dataset and split)"
py data_conversion/make_demo_dataset.py --output_dir "$DEMO_DIR/organized_dataset" --samples_per_split "$SAMPLES"

step "2/6 conversion to Qwen3-VL JSON (all 19 datasets, train/val/test)"
py data_conversion/convert_flare_to_qwen3vl.py --input_dir "$DEMO_DIR/organized_dataset" \
    --output_dir "$FLARE25_CONVERTED_DIR" --all --splits train val test --no_progress

step "3/6 validation of the converted files"
py data_conversion/validate_conversion.py --input_dir "$FLARE25_CONVERTED_DIR"

step "4/6 tiny random Qwen3-VL (real Qwen tokenizer and chat template)"
py scripts/make_demo_model.py --output_dir "$DEMO_DIR/model"

step "5/6 training on the five starter datasets (CPU, no DeepSpeed)"
rm -rf "$DEMO_DIR/output/demo_starter"
MODEL_PATH="$DEMO_DIR/model" OUTPUT_DIR="$DEMO_DIR/output/demo_starter" RUN_NAME=demo_starter \
    EVAL_DATASETS=flare_neojaundice_val%25,flare_retino_val%25,flare_busi_det_val%25,flare_boneresorption_val%25,flare_bone_marrow_val%25 \
    LR=${DEMO_LR:-2e-3} EPOCHS=${DEMO_EPOCHS:-3} GRAD_ACCUM=${DEMO_GRAD_ACCUM:-4} BATCH_SIZE=1 \
    TUNE_MM_VISION=True SAVE_STEPS=${DEMO_SAVE_STEPS:-60} EVAL_STEPS=${DEMO_EVAL_STEPS:-60} \
    LOGGING_STEPS=5 DATALOADER_WORKERS=1 GRADIENT_CHECKPOINTING=False \
    DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 \
    bash scripts/sft_qwen3_4b_flare.sh

step "6/6 evaluation on the starters' validation split: untrained vs trained"
STARTERS="neojaundice retino BUSI-det boneresorption bone_marrow"
LIMIT=${DEMO_EVAL_LIMIT:-16}
py scripts/evaluate_flare.py --model_path "$DEMO_DIR/model" --datasets $STARTERS --split val \
    --min_pixels 784 --max_pixels 50176 \
    --limit "$LIMIT" --output_dir "$DEMO_DIR/eval/untrained" --no_progress
py scripts/evaluate_flare.py --model_path "$DEMO_DIR/output/demo_starter" --datasets $STARTERS --split val \
    --limit "$LIMIT" --output_dir "$DEMO_DIR/eval/trained" --compare "$DEMO_DIR/eval/untrained" --no_progress

cat <<EOF

==== done ====
  raw demo tree        $DEMO_DIR/organized_dataset
  converted data       $FLARE25_CONVERTED_DIR   (conversion_report.json lists every skipped record)
  demo model           $DEMO_DIR/model
  trained model        $DEMO_DIR/output/demo_starter   (checkpoint-*/ folders, train.log, train_log.jsonl)
  evaluation           $DEMO_DIR/eval/trained/metrics.md   (predictions.json in challenge format, metrics.json)
Use the demo data with any command of the README by exporting FLARE25_CONVERTED_DIR=$FLARE25_CONVERTED_DIR
EOF
