#!/usr/bin/env bash
# GRPO, the second stage after SFT: reinforcement learning on the challenge's own metrics (docs: README,
# "Second stage: GRPO"). Every completion of a prompt is scored with its task type's answer reward (the
# challenge's metric on that one sample) plus a format reward (the answer parses), and the policy moves
# towards the completions that beat their group's mean, with a KL term to the starting model.
#
# Same conventions as scripts/sft_qwen3_4b_flare.sh: every setting is an environment variable (the list
# below); arguments after the script name go to qwenvl/train/grpo_qwen.py and win over the script's own, e.g.
#   MODEL_PATH=output/qwen3vl_flare25_starter NUM_GENERATIONS=8 bash scripts/grpo_qwen3_4b_flare.sh --iou_schedule True
# MODEL_PATH is usually an SFT checkpoint: a model that never answers in a valid form earns reward 0 on every
# completion and GRPO learns nothing from it. DRY_RUN=1 trains DRY_RUN_STEPS (3) steps into a temporary folder
# (no checkpoint kept) and prints the rewards of each step. Rollouts use transformers' generate; USE_VLLM=True
# samples them with vLLM (TRL's colocated engine by default), from the vLLM environment:
#   python3 -m uv sync --project envs/vllm
#   PYTHON=envs/vllm/.venv/bin/python USE_VLLM=True bash scripts/grpo_qwen3_4b_flare.sh
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh"
probe_machine

MODEL_PATH=${MODEL_PATH:-./output/qwen3vl_flare25_starter}
DATASETS=${DATASETS:-flare_neojaundice%100,flare_retino%100,flare_busi_det%100,flare_boneresorption%100,flare_bone_marrow%100}
OUTPUT_DIR=${OUTPUT_DIR:-./output/qwen3vl_flare25_grpo}
RUN_NAME=${RUN_NAME:-qwen3vl_flare25_grpo}
NPROC_PER_NODE=${NPROC_PER_NODE:-$([ "$GPU_COUNT" -gt 0 ] && echo "$GPU_COUNT" || echo 1)}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-$((29500 + RANDOM % 1000))}
LR=${LR:-1e-6}
BATCH_SIZE=${BATCH_SIZE:-8}                           # completions per device per micro-batch
GRAD_ACCUM=${GRAD_ACCUM:-2}
NUM_GENERATIONS=${NUM_GENERATIONS:-4}                 # completions per prompt (one group)
BETA=${BETA:-0.04}                                    # KL weight (0 = no reference model)
TEMPERATURE=${TEMPERATURE:-0.7}                       # sampling: Qwen3-VL's own settings
TOP_P=${TOP_P:-0.8}
TOP_K=${TOP_K:-20}
MAX_COMPLETION_LENGTH=${MAX_COMPLETION_LENGTH:-128}   # new tokens per completion (raise for report generation)
ANSWER_REWARD_WEIGHT=${ANSWER_REWARD_WEIGHT:-1.0}
FORMAT_REWARD_WEIGHT=${FORMAT_REWARD_WEIGHT:-0.2}
IOU_SCHEDULE=${IOU_SCHEDULE:-False}                   # True: box IoU threshold 0.1 -> 0.5 over training
EPOCHS=${EPOCHS:-1.0}
MAX_STEPS=${MAX_STEPS:--1}
SAVE_STEPS=${SAVE_STEPS:-100}
SAVE_TOTAL_LIMIT=${SAVE_TOTAL_LIMIT:-2}
LOGGING_STEPS=${LOGGING_STEPS:-1}
MAX_LENGTH=${MAX_LENGTH:-4096}
PIXEL_POLICY=${PIXEL_POLICY:-auto}                    # auto: the SFT checkpoint's per-dataset image budgets
MAX_PIXELS=${MAX_PIXELS:-}                            # set: one budget for every image (as SFT's)
MIN_PIXELS=${MIN_PIXELS:-}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
LR_SCHEDULER=${LR_SCHEDULER:-constant}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
TUNE_MM_VISION=${TUNE_MM_VISION:-False}
TUNE_MM_MLP=${TUNE_MM_MLP:-True}
TUNE_MM_LLM=${TUNE_MM_LLM:-True}
MM_PROJECTOR_LR=${MM_PROJECTOR_LR:-}
VISION_TOWER_LR=${VISION_TOWER_LR:-}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
DATALOADER_WORKERS=${DATALOADER_WORKERS:-2}
SEED=${SEED:-42}
SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-600}
DEEPSPEED=${DEEPSPEED:-configs/zero3.json}            # "none" trains without DeepSpeed
REPORT_TO=${REPORT_TO:-wandb}
ATTN_IMPL=${ATTN_IMPL:-auto}
LORA_ENABLE=${LORA_ENABLE:-False}
LORA_R=${LORA_R:-64}
LORA_ALPHA=${LORA_ALPHA:-128}
LORA_DROPOUT=${LORA_DROPOUT:-0.05}
LORA_VISION=${LORA_VISION:-False}
BF16=${BF16:-$([ "$BF16_OK" = 1 ] && echo True || echo False)}
USE_VLLM=${USE_VLLM:-False}                           # True: vLLM rollouts (PYTHON=envs/vllm/.venv/bin/python)
VLLM_MODE=${VLLM_MODE:-colocate}                      # colocate: an engine in each process; server: trl vllm-serve
VLLM_GPU_MEMORY_UTILIZATION=${VLLM_GPU_MEMORY_UTILIZATION:-0.3}   # colocate: the GPU share of each engine
VLLM_MAX_MODEL_LENGTH=${VLLM_MAX_MODEL_LENGTH:-$((MAX_LENGTH + MAX_COMPLETION_LENGTH))}  # prompt + completion
DRY_RUN=${DRY_RUN:-0}
DRY_RUN_STEPS=${DRY_RUN_STEPS:-3}

save=(--save_strategy steps --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT")
if [ "$DRY_RUN" = 1 ]; then
    OUTPUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/qwen3vl_grpo_dry_run.XXXXXX")
    trap 'rm -rf "$OUTPUT_DIR"' EXIT
    MAX_STEPS=$DRY_RUN_STEPS REPORT_TO=none
    save=(--save_strategy no)
fi
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
    --per_device_train_batch_size "$BATCH_SIZE" --gradient_accumulation_steps "$GRAD_ACCUM"
    --num_generations "$NUM_GENERATIONS" --beta "$BETA"
    --temperature "$TEMPERATURE" --top_p "$TOP_P" --top_k "$TOP_K"
    --max_completion_length "$MAX_COMPLETION_LENGTH"
    --answer_reward_weight "$ANSWER_REWARD_WEIGHT" --format_reward_weight "$FORMAT_REWARD_WEIGHT"
    --iou_schedule "$IOU_SCHEDULE"
    --learning_rate "$LR" --warmup_ratio "$WARMUP_RATIO"
    --lr_scheduler_type "$LR_SCHEDULER" --max_grad_norm "$MAX_GRAD_NORM"
    --model_max_length "$MAX_LENGTH" --pixel_policy "$PIXEL_POLICY"
    --gradient_checkpointing "$GRADIENT_CHECKPOINTING"
    "${save[@]}"
    --logging_steps "$LOGGING_STEPS"
    --dataloader_num_workers "$DATALOADER_WORKERS"
    --seed "$SEED" --data_seed "$SEED"
    --report_to "$REPORT_TO"
    --attn_implementation "$ATTN_IMPL"
)
[ "$LORA_ENABLE" = True ] && args+=(--lora_enable True --lora_r "$LORA_R" --lora_alpha "$LORA_ALPHA"
    --lora_dropout "$LORA_DROPOUT" --lora_vision "$LORA_VISION")
[ "$DEEPSPEED" != "none" ] && args+=(--deepspeed "$DEEPSPEED")
[ "$USE_VLLM" = True ] && args+=(--use_vllm True --vllm_mode "$VLLM_MODE"
    --vllm_gpu_memory_utilization "$VLLM_GPU_MEMORY_UTILIZATION" --vllm_max_model_length "$VLLM_MAX_MODEL_LENGTH")
[ -n "$MAX_PIXELS" ] && args+=(--max_pixels "$MAX_PIXELS")
[ -n "$MIN_PIXELS" ] && args+=(--min_pixels "$MIN_PIXELS")
[ -n "$MM_PROJECTOR_LR" ] && args+=(--mm_projector_lr "$MM_PROJECTOR_LR")
[ -n "$VISION_TOWER_LR" ] && args+=(--vision_tower_lr "$VISION_TOWER_LR")

device=$([ "$HAS_CUDA" = 1 ] && echo "$GPU_COUNT GPU(s)" || echo "CPU only (no CUDA): bf16 off, DeepSpeed over gloo")
prompts=$(( BATCH_SIZE * GRAD_ACCUM * NPROC_PER_NODE * NNODES / NUM_GENERATIONS ))
cat <<EOF
================================================================================
Qwen3-VL GRPO (second stage)$([ "$DRY_RUN" = 1 ] && echo "   DRY RUN: $DRY_RUN_STEPS steps, no checkpoint")
  model        $MODEL_PATH
  datasets     $DATASETS
  output       $OUTPUT_DIR
  device       $device
  processes    $NPROC_PER_NODE per node x $NNODES node(s)   (node rank $NODE_RANK, master $MASTER_ADDR:$MASTER_PORT)
  batch        $BATCH_SIZE completions per device x $GRAD_ACCUM accumulation x $((NPROC_PER_NODE * NNODES)) processes = $prompts prompts x $NUM_GENERATIONS completions per step
  sampling     $([ "$USE_VLLM" = True ] && echo "vLLM ($VLLM_MODE, max length $VLLM_MAX_MODEL_LENGTH)" || echo "transformers generate"): temperature $TEMPERATURE, top_p $TOP_P, top_k $TOP_K, max $MAX_COMPLETION_LENGTH new tokens
  objective    beta (KL) $BETA, rewards answer x $ANSWER_REWARD_WEIGHT + format x $FORMAT_REWARD_WEIGHT, IoU schedule $IOU_SCHEDULE
  optimisation lr $LR ($LR_SCHEDULER, warmup $WARMUP_RATIO), epochs $EPOCHS, max steps $MAX_STEPS, save every $SAVE_STEPS
  precision    bf16=$BF16   deepspeed=$DEEPSPEED   report_to=$REPORT_TO   lora=$LORA_ENABLE (r $LORA_R, alpha $LORA_ALPHA)
  images       pixel policy $PIXEL_POLICY${MAX_PIXELS:+, max_pixels $MAX_PIXELS}${MIN_PIXELS:+, min_pixels $MIN_PIXELS}
  extra args   ${*:-none}
================================================================================
EOF

if [ "$DRY_RUN" != 1 ]; then
    torchrun_launch qwenvl/train/grpo_qwen.py "${args[@]}" "$@"
fi
status=0
(torchrun_launch qwenvl/train/grpo_qwen.py "${args[@]}" "$@") || status=$?
"${PY[@]}" -m qwenvl.train.grpo_dry_run "$OUTPUT_DIR" --expected_steps "$DRY_RUN_STEPS" --exit_status "$status"
