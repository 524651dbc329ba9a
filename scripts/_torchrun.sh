# Sourced by the training launchers (sft_qwen3_4b_flare.sh, grpo_qwen3_4b_flare.sh) after _env.sh: what this
# machine offers, and the pieces every launch shares.
#   probe_machine        sets HAS_CUDA, GPU_COUNT, BF16_OK, HAS_SHUTDOWN_FLAG
#   wandb_without_key    with REPORT_TO wandb and no key: log offline to $OUTPUT_DIR/wandb (and say so)
#   torchrun_launch F..  replaces the shell (exec: signals reach torchrun) with torchrun on the training entry
#                        point F and its arguments: NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR/PORT and
#                        the stop grace period SHUTDOWN_TIMEOUT
probe_machine() {
    read -r HAS_CUDA GPU_COUNT BF16_OK HAS_SHUTDOWN_FLAG < <("${RUN[@]}" python -c "import torch; \
c = torch.cuda.is_available(); import inspect, torch.distributed.run as r; \
print(int(c), torch.cuda.device_count(), int(c and torch.cuda.is_bf16_supported()), \
int('shutdown-timeout' in inspect.getsource(r)))" 2>/dev/null || echo 0 0 0 0)
}

wandb_without_key() {
    # wandb without a key would stop the run at its login prompt: fall back to offline logging, and say so.
    if [[ "$REPORT_TO" == *wandb* && -z "${WANDB_MODE:-}" && -z "${WANDB_API_KEY:-}" ]] \
        && ! grep -qs "api.wandb.ai" "$HOME/.netrc"; then
        export WANDB_MODE=offline
        echo "[note] no wandb key found (WANDB_API_KEY or 'wandb login'): logging offline to $OUTPUT_DIR/wandb;" \
             "upload later with 'wandb sync'"
    fi
    export WANDB_DIR=${WANDB_DIR:-$OUTPUT_DIR}
}

torchrun_launch() {
    # torchrun waits SHUTDOWN_TIMEOUT s after forwarding SIGTERM / Ctrl-C before it SIGKILLs the workers (the
    # flag where this torch has it; the variable otherwise).
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$SHUTDOWN_TIMEOUT
    local shutdown=()
    [ "${HAS_SHUTDOWN_FLAG:-0}" = 1 ] && shutdown=(--shutdown-timeout "$SHUTDOWN_TIMEOUT")
    exec "${RUN[@]}" torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "${shutdown[@]}" "$@"
}
