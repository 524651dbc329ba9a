#!/usr/bin/env bash
# The whole pipeline on the embedded defaults, on a CPU, in minutes: a miniature FLARE25 tree -> conversion
# -> validation -> the tiny random Qwen3-VL -> a short training run with a checkpoint -> evaluation of the
# trained model against the untrained one and the constant-answer baseline on the starters' validation split,
# with and without format-constrained decoding. Ends with that comparison table.
# Everything lands in ./demo (DEMO_DIR to change it). Run again to start over.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

DEMO_DIR=${DEMO_DIR:-demo}
case "$DEMO_DIR" in /*) ;; *) DEMO_DIR="$PWD/$DEMO_DIR" ;; esac  # absolute: the training run changes folder
SAMPLES=${DEMO_SAMPLES_PER_SPLIT:-48}
export SKIP_SYNC=1
export FLARE25_CONVERTED_DIR="$DEMO_DIR/converted_data"
# accelerate imports DeepSpeed whenever it is installed, and DeepSpeed then warns that it found no GPU: on a
# machine without one, say so up front (the demo trains without DeepSpeed).
command -v nvidia-smi >/dev/null 2>&1 || export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
py() { "${PY[@]}" "$@"; }

STEP=0
step() { STEP=$((STEP + 1)); printf '\n==== %s. %s ====\n' "$STEP" "$*"; }
# An evaluation prints its full tables into metrics.md; here only its counts and where it wrote them.
evaluate() { py scripts/evaluate_flare.py --split val --datasets $STARTERS --limit "$LIMIT" --no_progress "$@" \
    | sed -n '/ records, \|^Wrote /p'; }

STARTERS="neojaundice retino BUSI-det boneresorption bone_marrow"
LIMIT=${DEMO_EVAL_LIMIT:-24}  # validation records per dataset (the tree has DEMO_SAMPLES_PER_SPLIT)
PIXELS=(--min_pixels 1024 --max_pixels 16384)  # at most 16 visual tokens per image, as in training below
EVAL="$DEMO_DIR/eval"

step "miniature FLARE25 tree ($SAMPLES records per dataset and split)"
py data_conversion/make_demo_dataset.py --output_dir "$DEMO_DIR/organized_dataset" --samples_per_split "$SAMPLES"

step "conversion to Qwen3-VL JSON (all 19 datasets, train/val/test)"
py data_conversion/convert_flare_to_qwen3vl.py --input_dir "$DEMO_DIR/organized_dataset" \
    --output_dir "$FLARE25_CONVERTED_DIR" --all --splits train val test --no_progress

step "validation of the converted files"
py data_conversion/validate_conversion.py --input_dir "$FLARE25_CONVERTED_DIR"

step "tiny random Qwen3-VL (real Qwen tokenizer and chat template)"
py scripts/make_demo_model.py --output_dir "$DEMO_DIR/model"

step "training on the five starter datasets (CPU, no DeepSpeed, ${DEMO_STEPS:-1000} steps of 4 records)"
# A constant learning rate of 5e-3 lets the tiny random model learn to read the images within the demo's
# thousand steps; each starter drawn about as often as it needs (the regression starter most, BUSI-det least:
# reading boxes off 16 visual tokens takes far longer than the demo). docs/evaluation.md, "The demo".
rm -rf "$DEMO_DIR/output/demo_starter"
MODEL_PATH="$DEMO_DIR/model" OUTPUT_DIR="$DEMO_DIR/output/demo_starter" RUN_NAME=demo_starter \
    DATASETS=flare_neojaundice%300,flare_retino%150,flare_boneresorption%400,flare_bone_marrow%150,flare_busi_det%50 \
    LR=${DEMO_LR:-5e-3} LR_SCHEDULER=constant WARMUP_RATIO=0 MAX_STEPS=${DEMO_STEPS:-1000} \
    BATCH_SIZE=4 GRAD_ACCUM=1 MIN_PIXELS=1024 MAX_PIXELS=16384 SEED=${DEMO_SEED:-0} \
    TUNE_MM_VISION=True SAVE_STEPS=${DEMO_STEPS:-1000} SAVE_TOTAL_LIMIT=1 LOGGING_STEPS=100 \
    DATALOADER_WORKERS=0 GRADIENT_CHECKPOINTING=False DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 \
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
    bash scripts/sft_qwen3_4b_flare.sh --save_only_model True --disable_tqdm True  # a loss line each 100 steps

step "evaluation on the starters' validation split ($LIMIT records each): baseline, untrained, trained"
echo "constant answer (each dataset's best single answer, learnt from its training split):"
evaluate --baseline constant --output_dir "$EVAL/constant"
echo "untrained model, constrained decoding (the default) / free decoding:"
evaluate --model_path "$DEMO_DIR/model" "${PIXELS[@]}" --output_dir "$EVAL/untrained"
evaluate --model_path "$DEMO_DIR/model" "${PIXELS[@]}" --output_dir "$EVAL/untrained_free" --free_decoding
echo "trained model (pixel limits from its run_info.json), free decoding / constrained decoding:"
evaluate --model_path "$DEMO_DIR/output/demo_starter" --output_dir "$EVAL/trained_free" --free_decoding
evaluate --model_path "$DEMO_DIR/output/demo_starter" --output_dir "$EVAL/trained" \
    --compare "$EVAL/constant" "$EVAL/untrained" "$EVAL/trained_free" "$EVAL/untrained_free"

# Further steps (another training mode on the trained model, its evaluation) go here, before the summary.

cat <<EOF

==== done ====
  raw demo tree        $DEMO_DIR/organized_dataset
  converted data       $FLARE25_CONVERTED_DIR   (conversion_report.json lists every skipped record)
  demo model           $DEMO_DIR/model
  trained model        $DEMO_DIR/output/demo_starter   (checkpoint-*/ folders, train.log, train_log.jsonl)
  evaluations          $EVAL/{trained,trained_free,untrained,untrained_free,constant}/
                       (metrics.md, report.html to open in a browser, predictions.json in challenge format)
Use the demo data with any command of the README by exporting FLARE25_CONVERTED_DIR=$FLARE25_CONVERTED_DIR

The trained model (constrained decoding) against the constant-answer baseline, the untrained model and both
models with free decoding, headline numbers: the organisers' record set and rules, where the records not
evaluated are left out for want of a prediction ($EVAL/trained/metrics.md, report.html):

EOF
sed -n '/^## Comparison/,$p' "$EVAL/trained/metrics.md"
