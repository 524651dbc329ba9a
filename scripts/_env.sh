# Sourced by the scripts: the Python to run with, as $PY (an array: "${PY[@]}" script.py ...) and $RUN (a
# module runner: "${RUN[@]}" pytest ...).
# By default uv and the project's locked environment (.venv): uv is installed with pip if missing, the
# environment synced unless SKIP_SYNC=1. Works on a fresh machine with only Python 3.10+ and pip.
# PYTHON=python3 (or a path) uses that interpreter and its packages instead (an environment of your own, e.g. a
# cluster's torch; README, "Your own environment"): nothing calls uv, nothing is installed, and the repository
# is put on PYTHONPATH so the toolkit imports without being installed.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
if [ -n "${PYTHON:-}" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: PYTHON=$PYTHON is not an interpreter found on this machine" >&2
        exit 2
    fi
    PY=("$PYTHON")
    RUN=("$PYTHON" -m)
    export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    if command -v uv >/dev/null 2>&1; then
        UV=(uv)
    else
        UV_PY=$(command -v python3 || command -v python)
        if ! "$UV_PY" -m uv --version >/dev/null 2>&1; then
            echo "[setup] installing uv with pip"
            "$UV_PY" -m pip install --quiet uv || "$UV_PY" -m pip install --quiet --user uv
        fi
        UV=("$UV_PY" -m uv)
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
    PY=("${RUN[@]}" python)
fi
