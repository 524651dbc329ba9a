# Sourced by the training launchers (sft_qwen3_4b_flare.sh, grpo_qwen3_4b_flare.sh) after _env.sh: what this
# machine offers, and the pieces every launch shares.
#   probe_machine        sets HAS_CUDA, GPU_COUNT, BF16_OK, HAS_SHUTDOWN_FLAG; stops the launch (exit 3, with the
#                        cause and the fix) when the machine's NVIDIA GPUs are unusable to torch (ALLOW_CPU=1 runs
#                        on the CPU anyway), NPROC_PER_NODE exceeds the GPUs, or bf16 meets a GPU without it
#                        (qwenvl/machine.py); run before the launcher's defaults, which it reads as given
#   wandb_without_key    with REPORT_TO wandb and no key: log offline to $OUTPUT_DIR/wandb (and say so)
#   torchrun_launch F..  replaces the shell (exec: signals reach torchrun) with torchrun on the training entry
#                        point F and its arguments: NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR/PORT and
#                        the stop grace period SHUTDOWN_TIMEOUT
probe_machine() {
    local probe
    probe=$("${PY[@]}" -m qwenvl.machine --launch --nproc "${NPROC_PER_NODE:-}" --bf16 "${BF16:-}") || exit $?
    read -r HAS_CUDA GPU_COUNT BF16_OK HAS_SHUTDOWN_FLAG <<<"$probe"
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
    exec "${PY[@]}" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "${shutdown[@]}" "$@"
}
