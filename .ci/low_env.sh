#!/usr/bin/env bash
# The second environment CI tests, .venv-low: the low end of pyproject.toml's range, pinned in .ci/low-env.txt
# (the GPU machines' Python 3.12 / torch 2.11 / transformers 5.17 stack). Built in the order a GPU machine gets
# its software, so that each stage proves something:
#   bash .ci/low_env.sh image     a venv with only the "# image" packages (what those machines already have)
#   bash .ci/low_env.sh bundle    scripts/device_bundle.sh's wheel folder (.whl-low), installed the way a GPU
#                                 machine installs it (pip --no-index --find-links: fails if a wheel is missing)
#   bash .ci/low_env.sh rest      the rest of the project (editable) and its dev tools, at the pinned versions
#   bash .ci/low_env.sh versions  what is installed, one line
#   bash .ci/low_env.sh           all four, in that order
# LOW_PYTHON=/path/to/python3.12 picks the interpreter; otherwise a Python 3.12 is looked for (pyenv, PATH, uv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PINS=.ci/low-env.txt
VENV=${LOW_VENV:-.venv-low}
BUNDLE=${LOW_BUNDLE:-.whl-low}
WANT=$(sed -n 's/^# python \([0-9.]*\).*/\1/p' "$PINS" | head -1)
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi

pins() {  # the names (with their pins) of one kind of line: image, bundle or rest
    case $1 in
        image | bundle) grep -E "^[A-Za-z].*# $1" "$PINS" | awk '{print $1}' ;;
        rest) grep -E '^[A-Za-z]' "$PINS" | grep -vE '# (image|bundle)' | awk '{print $1}' ;;
    esac
}

find_python() {
    local c
    for c in ${LOW_PYTHON:-} "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$WANT"*/bin/python"$WANT" \
        /usr/local/bin/python"$WANT" /usr/bin/python"$WANT" "$(command -v python"$WANT" || true)" \
        "$("${UV[@]}" python find "$WANT" 2>/dev/null || true)"; do
        [ -n "$c" ] && [ -x "$c" ] && "$c" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$WANT'.split('.'))))" \
            2>/dev/null && { echo "$c"; return; }
    done
    echo "error: no Python $WANT found for the second environment ($PINS asks for it): looked at \$LOW_PYTHON," \
        "pyenv's versions, /usr/local/bin, /usr/bin, PATH and uv's interpreters. Install one (apt-get install" \
        "python$WANT-venv, or pyenv install $WANT) or point LOW_PYTHON at it." >&2
    return 1
}

image() {
    local py
    py=$(find_python)
    echo "[low env] $VENV from $py: the GPU machines' packages ($PINS, '# image')"
    rm -rf "$VENV"
    "${UV[@]}" venv --quiet --seed --python "$py" "$VENV"
    # shellcheck disable=SC2046
    "${UV[@]}" pip install --quiet --python "$VENV/bin/python" -c "$PINS" $(pins image)
}

bundle() {
    echo "[low env] the GPU machines' wheel folder ($BUNDLE), installed with pip --no-index --find-links"
    bash scripts/device_bundle.sh --python "$VENV/bin/python" --output "$BUNDLE"
    # Only the bundle: no index, and neither this machine's pip configuration nor its PIP_FIND_LINKS (their
    # folders would hide a wheel missing from the bundle).
    # shellcheck disable=SC2046
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
        "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE" $(pins bundle)
}

rest() {
    echo "[low env] the rest of the project and its dev tools, at the pinned versions"
    "${UV[@]}" pip install --quiet --python "$VENV/bin/python" -c "$PINS" -e . --group dev
}

versions() {
    "$VENV/bin/python" - <<'PY'
import platform
from importlib import metadata

names = ["torch", "torchvision", "transformers", "accelerate", "peft", "deepspeed", "trl", "xgrammar", "numpy"]
found = []
for name in names:
    try:
        found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        found.append(f"{name} -")
print(f"[low env] python {platform.python_version()}, " + ", ".join(found))
PY
}

case "${1:-all}" in
    image | bundle | rest | versions) "$1" ;;
    all) image && bundle && rest && versions ;;
    *) echo "usage: bash .ci/low_env.sh [image|bundle|rest|versions]" >&2; exit 2 ;;
esac
