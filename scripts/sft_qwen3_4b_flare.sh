#!/usr/bin/env bash
# Full finetune of Qwen3-VL-4B-Instruct on the five FLARE25 starter datasets, with the guide's settings:
# lr 1e-5, batch 1 x accumulation 16, 1 epoch, max length 4096, AdamW (weight decay 0.01), cosine schedule
# with 3% warmup, bf16, gradient checkpointing, DeepSpeed ZeRO-3 with CPU offload, a checkpoint every 200 steps
# (2 kept), wandb run qwen3vl_flare25_starter. Images: each dataset's own visual-token budget from the dataset
# table (PIXEL_POLICY=auto, the default: per dataset unless MAX_PIXELS / MIN_PIXELS is set, which gives every
# image the guide's one budget, e.g. MAX_PIXELS=50176 MIN_PIXELS=784); DATASETS entries take NAME@TOKENS.
#
# Every setting is an environment variable (see the list below); arguments after the script name go to
# train_qwen.py and win over the script's own, e.g.
#   MODEL_PATH=demo/model NPROC_PER_NODE=2 bash scripts/sft_qwen3_4b_flare.sh --resume_from_checkpoint auto
# On a machine without a GPU, bf16 is turned off and DeepSpeed runs on CPU (gloo), so the embedded demo model
# (MODEL_PATH=<folder made by scripts/make_demo_model.py>) trains with the same script.
# Faster (docs/performance.md): DATA_FLATTEN=True packs whole samples into MAX_LENGTH-token rows (no padding;
# BATCH_SIZE then counts packs, e.g. BATCH_SIZE=1 GRAD_ACCUM=1 is ~20 samples per step); LORA_ENABLE=True trains
# LoRA adapters instead of the full LLM (fits a 24 GB GPU with DEEPSPEED=none).
# Recipes: RECIPE=flare_all reads configs/recipes/flare_all.env (all 19 datasets, class-balanced, square-root
# mixture, per-sample loss, each with its reason) before the defaults below; the environment still wins.
# The mix and the loss: MIXTURE_TEMPERATURE (1 = the datasets' sizes), DATASETS entries NAME+balanced (equal
# draws per class), LOSS_NORMALISATION token | sample | dataset.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_recipe.sh"
load_recipe
probe_machine

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-VL-4B-Instruct}
DATASETS=${DATASETS:-flare_neojaundice%100,flare_retino%100,flare_busi_det%100,flare_boneresorption%100,flare_bone_marrow%100}
EVAL_DATASETS=${EVAL_DATASETS:-}
OUTPUT_DIR=${OUTPUT_DIR:-./output/qwen3vl_flare25_starter}
RUN_NAME=${RUN_NAME:-qwen3vl_flare25_starter}
NPROC_PER_NODE=${NPROC_PER_NODE:-$([ "$GPU_COUNT" -gt 0 ] && echo "$GPU_COUNT" || echo 1)}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$((29500 + RANDOM % 1000))}
LR=${LR:-1e-5}
BATCH_SIZE=${BATCH_SIZE:-1}
GRAD_ACCUM=${GRAD_ACCUM:-16}
EPOCHS=${EPOCHS:-1.0}
MAX_STEPS=${MAX_STEPS:--1}
SAVE_STEPS=${SAVE_STEPS:-200}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-2}
EVAL_STEPS=${EVAL_STEPS:-500}
LOGGING_STEPS=${LOGGING_STEPS:-1}
MAX_LENGTH=${MAX_LENGTH:-4096}
MIXTURE_TEMPERATURE=${MIXTURE_TEMPERATURE:-1}         # draws by dataset size^(1/T): 1 the sizes, 2 square roots
LOSS_NORMALISATION=${LOSS_NORMALISATION:-token}       # token (the guide's) | sample | dataset
PIXEL_POLICY=${PIXEL_POLICY:-auto}                    # auto | per_dataset | global (see the header)
MAX_PIXELS=${MAX_PIXELS:-}                            # set: one budget (the guide's 50176) under auto / global
MIN_PIXELS=${MIN_PIXELS:-}                            # set: the fewest pixels (the guide's 784)
WEIGHT_DECAY=${WEIGHT_DECAY:-0.01}
WARMUP_RATIO=${WARMUP_RATIO:-0.03}
LR_SCHEDULER=${LR_SCHEDULER:-cosine}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
TUNE_MM_VISION=${TUNE_MM_VISION:-False}
TUNE_MM_MLP=${TUNE_MM_MLP:-True}
TUNE_MM_LLM=${TUNE_MM_LLM:-True}
MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-}
VISION_TOWER_LR=${VISION_TOWER_LR:-}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
DATALOADER_WORKERS=${DATALOADER_WORKERS:-4}
SEED=${SEED:-42}
SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-600}             # s torchrun waits after SIGTERM/Ctrl-C for the stop checkpoint
DEEPSPEED=${DEEPSPEED:-configs/zero3_offload.json}   # "none" trains without DeepSpeed
REPORT_TO=${REPORT_TO:-wandb}                         # wandb | tensorboard | none
DATA_FLATTEN=${DATA_FLATTEN:-False}                   # True: padding-free packing (BATCH_SIZE counts packs)
ATTN_IMPL=${ATTN_IMPL:-auto}                          # auto | flash_attention_2 | sdpa_packed | sdpa | eager
PACKING_MAX_TOKENS=${PACKING_MAX_TOKENS:-}            # pack budget (default: MAX_LENGTH)
LORA_ENABLE=${LORA_ENABLE:-False}                     # True: LoRA adapters on the LLM (24 GB GPUs: DEEPSPEED=none)
LORA_R=${LORA_R:-64}
LORA_ALPHA=${LORA_ALPHA:-128}
LORA_DROPOUT=${LORA_DROPOUT:-0.05}
LORA_VISION=${LORA_VISION:-False}
BF16=${BF16:-$([ "$BF16_OK" = 1 ] && echo True || echo False)}

wandb_without_key
mkdir -p "$OUTPUT_DIR"

args=(
    --model_name_or_path "$MODEL_PATH"
    --dataset_use "$DATASETS"
    --output_dir "$OUTPUT_DIR"
    --run_name "$RUN_NAME"
    --tune_mm_vision "$TUNE_MM_VISION" --tune_mm_mlp "$TUNE_MM_MLP" --tune_mm_llm "$TUNE_MM_LLM"
    --bf16 "$BF16"
    --num_train_epochs "$EPOCHS" --max_steps "$MAX_STEPS"
    --per_device_train_batch_size "$BATCH_SIZE" --per_device_eval_batch_size "$BATCH_SIZE"
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --learning_rate "$LR" --weight_decay "$WEIGHT_DECAY" --warmup_ratio "$WARMUP_RATIO"
    --lr_scheduler_type "$LR_SCHEDULER" --max_grad_norm "$MAX_GRAD_NORM"
    --model_max_length "$MAX_LENGTH" --pixel_policy "$PIXEL_POLICY"
    --mixture_temperature "$MIXTURE_TEMPERATURE" --loss_normalisation "$LOSS_NORMALISATION"
    --gradient_checkpointing "$GRADIENT_CHECKPOINTING"
    --save_strategy steps --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT"
    --logging_steps "$LOGGING_STEPS"
    --dataloader_num_workers "$DATALOADER_WORKERS"
    --seed "$SEED" --data_seed "$SEED"
    --report_to "$REPORT_TO"
    --data_flatten "$DATA_FLATTEN"
    --attn_implementation "$ATTN_IMPL"
)
[ -n "$MAX_PIXELS" ] && args+=(--max_pixels "$MAX_PIXELS")
[ -n "$MIN_PIXELS" ] && args+=(--min_pixels "$MIN_PIXELS")
[ -n "$PACKING_MAX_TOKENS" ] && args+=(--packing_max_tokens "$PACKING_MAX_TOKENS")
[ "$LORA_ENABLE" = True ] && args+=(--lora_enable True --lora_r "$LORA_R" --lora_alpha "$LORA_ALPHA"
    --lora_dropout "$LORA_DROPOUT" --lora_vision "$LORA_VISION")
[ "$DEEPSPEED" != "none" ] && args+=(--deepspeed "$DEEPSPEED")
[ -n "$EVAL_DATASETS" ] && args+=(--eval_dataset_use "$EVAL_DATASETS" --eval_strategy steps --eval_steps "$EVAL_STEPS")
[ -n "$MM_PROJECTOR_LR" ] && args+=(--mm_projector_lr "$MM_PROJECTOR_LR")
[ -n "$VISION_TOWER_LR" ] && args+=(--vision_tower_lr "$VISION_TOWER_LR")

device=$([ "$HAS_CUDA" = 1 ] && echo "$GPU_COUNT GPU(s)" || echo "CPU only (no CUDA): bf16 off, DeepSpeed over gloo")
cat <<EOF
================================================================================
Qwen3-VL finetune
  model        $MODEL_PATH
  datasets     $DATASETS
  eval         ${EVAL_DATASETS:-none}
  output       $OUTPUT_DIR
  device       $device
  processes    $NPROC_PER_NODE per node x $NNODES node(s)   (node rank $NODE_RANK, master $MASTER_ADDR:$MASTER_PORT)
  batch        $BATCH_SIZE per device x $GRAD_ACCUM accumulation x $((NPROC_PER_NODE * NNODES)) processes
  optimisation lr $LR ($LR_SCHEDULER, warmup $WARMUP_RATIO), weight decay $WEIGHT_DECAY, epochs $EPOCHS, max steps $MAX_STEPS
  precision    bf16=$BF16   deepspeed=$DEEPSPEED   report_to=$REPORT_TO
  recipe       ${RECIPE:-none}${RECIPE_FILE:+ ($RECIPE_FILE)}   mixture temperature $MIXTURE_TEMPERATURE   loss per $LOSS_NORMALISATION
  images       pixel policy $PIXEL_POLICY${MAX_PIXELS:+, max_pixels $MAX_PIXELS}${MIN_PIXELS:+, min_pixels $MIN_PIXELS}
  packing      $DATA_FLATTEN${PACKING_MAX_TOKENS:+ (budget $PACKING_MAX_TOKENS tokens)}   lora=$LORA_ENABLE (r $LORA_R, alpha $LORA_ALPHA)
  extra args   ${*:-none}
================================================================================
EOF

torchrun_launch qwenvl/train/train_qwen.py "${args[@]}" "$@"
