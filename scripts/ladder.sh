#!/usr/bin/env bash
# The quality ladder: what each step of the recipe buys, on the same held-out records, in one table.
#   untrained -> constant answer -> the guide's recipe -> the toolkit's recipe (RECIPE=flare_all) -> + GRPO
# Each rung is evaluated on the labelled validation split of every converted dataset (the first EVAL_LIMIT
# records of each) with the challenge's metrics and format-guaranteed decoding; the last evaluation compares
# all rungs (metrics.md and report.html with the --compare deltas, per dataset and per task type).
#
# The two training rungs differ only in the recipe's choices: the guide's is every dataset at its size
# (MIXTURE_TEMPERATURE=1), the per-token loss and one 50,176-pixel budget for every image; the toolkit's is
# configs/recipes/flare_all.env (class balance, square-root mixture, per-sample loss, per-dataset budgets).
# GRPO then trains the toolkit's model on the challenge's metrics (GRPO_DATASETS, default the ladder's datasets
# whose answers are a few tokens: letters and numbers).
#
# LADDER_DATASETS (registry names, comma-separated) narrows both training rungs to those datasets (the recipe
# keeps its own entries for them: +balanced and the rest); default: all 19 on real data, on the demo the five
# starters and bcn20000 (whose class only a native-size view resolves), which the tiny model can learn in a
# few CPU minutes (spread over all 19 it learns none of them in that time).
#
# On the demo (the default: no MODEL_PATH), seeded, on a CPU: the demo tree (48 records per split), the tiny
# model and the demo's hyper-parameters (STEPS steps of 4 records at a constant 5e-3, the vision tower trained;
# GRPO: GRPO_STEPS steps of 4 prompts x 4 completions) for both training rungs alike. Measured: README, "The
# quality ladder". On real data: MODEL_PATH=Qwen/Qwen3-VL-4B-Instruct (or a local folder) with
# FLARE25_CONVERTED_DIR pointing at the converted data, on a GPU: the launchers' own hyper-parameters (the
# guide's), STEPS optimizer steps per training rung (default: one epoch).
# Everything lands in LADDER_DIR (default ./ladder); run again to start over.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

LADDER_DIR=${LADDER_DIR:-ladder}
case "$LADDER_DIR" in /*) ;; *) LADDER_DIR="$PWD/$LADDER_DIR" ;; esac  # absolute: the training runs change folder
EVAL_LIMIT=${EVAL_LIMIT:-24}
export SKIP_SYNC=1
command -v nvidia-smi >/dev/null 2>&1 || export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
py() { "${RUN[@]}" python "$@"; }
step() { printf '\n==== %s ====\n' "$*"; }
START=$SECONDS

# The datasets whose answers are a few tokens (letters, numbers): GRPO's short completions fit them.
SHORT_ANSWER_SETS=$(py -c "
from qwenvl.flare.datasets import FLARE_DATASETS, registry_name
from qwenvl.flare.tasks import TASKS
print(','.join(registry_name(n) for n, c in FLARE_DATASETS.items() if max(TASKS[t].max_new_tokens for t in c.task_types) <= 16))")
ALL_SETS=$(py -c "
from qwenvl.flare.datasets import FLARE_DATASETS, registry_name
print(','.join(registry_name(n) for n in FLARE_DATASETS))")

if [ -z "${MODEL_PATH:-}" ]; then  # the demo: tree, conversion and tiny model built here
    export FLARE25_CONVERTED_DIR="$LADDER_DIR/converted_data"
    MODEL_PATH="$LADDER_DIR/model"
    STEPS=${STEPS:-1000}
    GRPO_STEPS=${GRPO_STEPS:-15}
    LADDER_DATASETS=${LADDER_DATASETS:-flare_neojaundice,flare_retino,flare_busi_det,flare_boneresorption,flare_bone_marrow,flare_bcn20000}
    step "demo tree (48 records per dataset and split), conversion of all 19, the tiny model"
    py data_conversion/make_demo_dataset.py --output_dir "$LADDER_DIR/organized_dataset" --samples_per_split 48 >/dev/null
    py data_conversion/convert_flare_to_qwen3vl.py --input_dir "$LADDER_DIR/organized_dataset" \
        --output_dir "$FLARE25_CONVERTED_DIR" --all --splits train val --no_progress >/dev/null
    py scripts/make_demo_model.py --output_dir "$MODEL_PATH" >/dev/null
    TRAIN_ENV=(LR=5e-3 LR_SCHEDULER=constant WARMUP_RATIO=0 BATCH_SIZE=4 GRAD_ACCUM=1 TUNE_MM_VISION=True
        GRADIENT_CHECKPOINTING=False DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 DATALOADER_WORKERS=0
        EVAL_DATASETS= LOGGING_STEPS=100 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
    GRPO_ENV=(LR=1e-3 LR_SCHEDULER=cosine WARMUP_RATIO=0.1 BATCH_SIZE=16 GRAD_ACCUM=1 NUM_GENERATIONS=4
        TEMPERATURE=1.0 TOP_P=1.0 TOP_K=0 BETA=0 MAX_COMPLETION_LENGTH=8 TUNE_MM_VISION=True
        GRADIENT_CHECKPOINTING=False DEEPSPEED=none REPORT_TO=none NPROC_PER_NODE=1 DATALOADER_WORKERS=0
        LOGGING_STEPS=5 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
else
    STEPS=${STEPS:--1}
    GRPO_STEPS=${GRPO_STEPS:-200}
    TRAIN_ENV=()
    GRPO_ENV=()
fi
LADDER_DATASETS=${LADDER_DATASETS:-$ALL_SETS}
# The recipe's own entries for those datasets (+balanced, %NN, @TOKENS as the recipe file writes them).
RECIPE_SETS=$(grep -E '^DATASETS=' configs/recipes/flare_all.env | cut -d= -f2 | tr ',' '\n' \
    | grep -E "^($(echo "$LADDER_DATASETS" | tr ',' '|'))([%@+]|$)" | paste -sd, -)
GRPO_DATASETS=${GRPO_DATASETS:-$(echo "$LADDER_DATASETS" | tr ',' '\n' | grep -xF -f <(echo "$SHORT_ANSWER_SETS" | tr ',' '\n') | paste -sd, -)}
EVAL="$LADDER_DIR/eval"
OUT="$LADDER_DIR/output"
rm -rf "$EVAL" "$OUT"
mkdir -p "$OUT"

EVAL_SETS=$(echo "$LADDER_DATASETS" | tr ',' ' ')
evaluate() {  # NAME, then evaluate_flare.py's model arguments
    local name=$1
    shift
    # shellcheck disable=SC2086
    py scripts/evaluate_flare.py --split val --datasets $EVAL_SETS --limit "$EVAL_LIMIT" --no_progress \
        --output_dir "$EVAL/$name" "$@" | sed -n '/ records, /p'
}
train() {  # NAME, then the rung's own variables (its log: $OUT/NAME.log)
    local name=$1
    shift
    env "${TRAIN_ENV[@]}" "$@" MODEL_PATH="$MODEL_PATH" OUTPUT_DIR="$OUT/$name" RUN_NAME="ladder_$name" \
        MAX_STEPS="$STEPS" SAVE_STEPS=100000 SEED=0 \
        bash scripts/sft_qwen3_4b_flare.sh --save_only_model True --disable_tqdm True 2>"$OUT/$name.log" \
        | grep -E "recipe|images|step .*\| (loss|train_loss)"
}

step "rung 1: untrained ($MODEL_PATH)"
evaluate untrained --model_path "$MODEL_PATH"
step "rung 2: constant answer (each dataset's best single training answer)"
evaluate constant --baseline constant
step "rung 3: the guide's recipe (sizes as they are, per-token loss, one 50,176-pixel budget)"
train guide DATASETS="$LADDER_DATASETS" MIXTURE_TEMPERATURE=1 LOSS_NORMALISATION=token PIXEL_POLICY=global \
    MAX_PIXELS=50176 MIN_PIXELS=784
evaluate guide --model_path "$OUT/guide"
step "rung 4: the toolkit's recipe (RECIPE=flare_all)"
train recipe RECIPE=flare_all DATASETS="$RECIPE_SETS"
evaluate recipe --model_path "$OUT/recipe"
step "rung 5: + GRPO on $GRPO_DATASETS ($GRPO_STEPS steps)"
env "${GRPO_ENV[@]}" MODEL_PATH="$OUT/recipe" OUTPUT_DIR="$OUT/grpo" RUN_NAME=ladder_grpo DATASETS="$GRPO_DATASETS" \
    MAX_STEPS="$GRPO_STEPS" SAVE_STEPS=100000 SEED=0 \
    bash scripts/grpo_qwen3_4b_flare.sh --disable_tqdm True 2>"$OUT/grpo.log" | grep -E "step .*\| (loss|train_loss)"
evaluate grpo --model_path "$OUT/grpo" --compare "$EVAL/recipe" "$EVAL/guide" "$EVAL/constant" "$EVAL/untrained"

step "the ladder on the held-out records ($EVAL/grpo/metrics.md, report.html), $((SECONDS - START)) s"
sed -n '/^## Comparison/,$p' "$EVAL/grpo/metrics.md"
