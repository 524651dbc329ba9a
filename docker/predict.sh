#!/bin/sh
# FLARE25 2D challenge submission: answer every *_test.json under INPUT_DIR into OUTPUT_DIR/predictions.json.
#
# The organisers run, in the image's working folder:   sh predict.sh
#   inputs  /workspace/inputs/<Modality>/<dataset>/<dataset>_questions_test.json + imagesTs/
#   output  /workspace/outputs/predictions.json (the input records, every field kept, Answer filled in)
# Outside Docker, e.g. on the demo tree (from the repository root):
#   INPUT_DIR=demo/raw/testing OUTPUT_DIR=/tmp/sub MODEL_PATH=demo/model uv run sh docker/predict.sh
#
# This script only sets variables; the logic is qwenvl/eval/submission.py (python -m qwenvl.eval.submission).
set -eu

INPUT_DIR="${INPUT_DIR:-/workspace/inputs}"
OUTPUT_DIR="${OUTPUT_DIR:-/workspace/outputs}"
MODEL_PATH="${MODEL_PATH:-/opt/flare25/model}"  # the checkpoint baked into the image
BACKEND="${BACKEND:-hf}"  # hf (transformers generate) or vllm (an image built with --build-arg BACKEND=vllm)
BATCH_SIZE="${BATCH_SIZE:-}"  # default: 8 records per generate call (hf), 64 concurrent sequences (vllm)
BOX_FORMAT="${BOX_FORMAT:-qwen1000}"  # the converter's --box_format the checkpoint was trained with
PYTHON="${PYTHON:-python}"

# No network: never ask a hub for anything.
HF_HUB_OFFLINE=1
TRANSFORMERS_OFFLINE=1
HF_DATASETS_OFFLINE=1
TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_DATASETS_OFFLINE TOKENIZERS_PARALLELISM

set -- \
    --input_dir "$INPUT_DIR" \
    --output_dir "$OUTPUT_DIR" \
    --model_path "$MODEL_PATH" \
    --backend "$BACKEND" \
    --box_format "$BOX_FORMAT" \
    --no_progress
# Optional overrides, unset in the image: the defaults are each task type's token budget and the pixel
# limits the checkpoint was trained with.
if [ -n "$BATCH_SIZE" ]; then
    set -- "$@" --batch_size "$BATCH_SIZE"
fi
if [ -n "${MAX_NEW_TOKENS:-}" ]; then
    set -- "$@" --max_new_tokens "$MAX_NEW_TOKENS"
fi
if [ -n "${MIN_PIXELS:-}" ]; then
    set -- "$@" --min_pixels "$MIN_PIXELS"
fi
if [ -n "${MAX_PIXELS:-}" ]; then
    set -- "$@" --max_pixels "$MAX_PIXELS"
fi

mkdir -p "$OUTPUT_DIR"
exec "$PYTHON" -m qwenvl.eval.submission "$@"
