# Sourced by the scripts: make sure uv and the project's locked environment exist, then define $RUN.
# Works on a fresh machine with only Python 3.10+ and pip.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    PY=$(command -v python3 || command -v python)
    if ! "$PY" -m uv --version >/dev/null 2>&1; then
        echo "[setup] installing uv with pip"
        "$PY" -m pip install --quiet uv || "$PY" -m pip install --quiet --user uv
    fi
    UV=("$PY" -m uv)
fi
if [ "${SKIP_SYNC:-0}" != "1" ]; then
    echo "[setup] syncing the locked environment (.venv)"
    # Bytecode compiled once per lock file: without it every Python process (each rank, each evaluation)
    # compiles torch and transformers from source again where PYTHONDONTWRITEBYTECODE is set (~10 s each).
    if [ .venv/.bytecode -nt uv.lock ]; then
        "${UV[@]}" sync --locked --quiet
    else
        echo "[setup] compiling the environment's bytecode (once, about a minute)"
        "${UV[@]}" sync --locked --quiet --compile-bytecode && touch .venv/.bytecode
    fi
fi
RUN=("${UV[@]}" run --locked --no-sync)
