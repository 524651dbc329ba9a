#!/usr/bin/env bash
# Dry run: 5 optimizer steps of the full training configuration (scripts/sft_qwen3_4b_flare.sh, same
# environment variables), then the losses and the peak memory. Fails on a NaN or infinite loss.
# Leaves no checkpoint behind: it trains into a temporary folder that is removed at the end.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# the machine first (qwenvl/machine.py): a GPU machine whose CUDA torch cannot use stops here, not in training
"${PY[@]}" -m qwenvl.machine --nproc "${NPROC_PER_NODE:-}" --bf16 "${BF16:-}"

DRY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/qwen3vl_dry_run.XXXXXX")
trap 'rm -rf "$DRY_DIR"' EXIT
export MAX_STEPS=${DRY_RUN_STEPS:-5} OUTPUT_DIR="$DRY_DIR" REPORT_TO=none SKIP_SYNC=1
export GRAD_ACCUM=${GRAD_ACCUM:-16}

echo "[dry run] $MAX_STEPS steps into $DRY_DIR (removed afterwards)"
start=$(date +%s)
status=0
bash "$(dirname "${BASH_SOURCE[0]}")/sft_qwen3_4b_flare.sh" --save_strategy no "$@" || status=$?
echo "[dry run] training exited with status $status after $(( $(date +%s) - start )) s"
"${PY[@]}" -m qwenvl.train.dry_run "$DRY_DIR" --expected_steps "$MAX_STEPS" --exit_status "$status"
