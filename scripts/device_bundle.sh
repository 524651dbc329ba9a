#!/usr/bin/env bash
# The folder of wheels an offline GPU machine lacks for the GPU check, reproducibly:
#   bash scripts/device_bundle.sh [--output DIR] [--python PY]
# The packages and versions are the "# bundle" lines of .ci/low-env.txt (the machines' own stack is the
# "# image" lines: Python 3.12, torch 2.11, transformers 5.17, accelerate, PEFT). Binary wheels for CPython 3.12
# on manylinux x86_64 are downloaded; DeepSpeed, published as a source archive only, is built into a wheel with
# PY (a Python with torch, setuptools and pip: default .venv-low/bin/python, made by `bash .ci/low_env.sh
# image`). Checks that the folder plus the repository's tracked files stay within the 64 MiB that may travel
# to the GPU machine, and prints the one command to run there. DIR defaults to .whl (ignored by git).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
OUT=.whl
PY=.venv-low/bin/python
while [ $# -gt 0 ]; do
    case $1 in
        --output) OUT=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
LIMIT=$((64 * 1024 * 1024))
if ! "$PY" -c "import torch, setuptools, pip" 2>/dev/null; then
    echo "error: $PY cannot build DeepSpeed's wheel: it needs torch, setuptools and pip (bash .ci/low_env.sh image" \
        "makes such an environment in .venv-low, or pass --python)" >&2
    exit 2
fi
mapfile -t PKGS < <(grep -E '^[A-Za-z].*# bundle' .ci/low-env.txt | awk '{print $1}')
BINARY=()
SOURCE=()
for p in "${PKGS[@]}"; do
    case $p in deepspeed==*) SOURCE+=("$p") ;; *) BINARY+=("$p") ;; esac
done
rm -rf "$OUT"
mkdir -p "$OUT"
echo "[bundle] downloading ${BINARY[*]} (CPython 3.12, manylinux x86_64)"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$OUT" "${BINARY[@]}"
echo "[bundle] building ${SOURCE[*]} from its source archive with $PY (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" "${SOURCE[@]}"

bundle=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "[bundle] $OUT: $(ls "$OUT" | wc -l) wheels, $((bundle / 1024)) KiB"
(cd "$OUT" && du -b *.whl | awk '{printf "  %9d KiB  %s\n", $1 / 1024, $2}')
echo "[bundle] with the repository's tracked files ($((tree / 1024)) KiB): $(((bundle + tree) / 1024)) KiB of the" \
    "$((LIMIT / 1024)) KiB that may travel"
if [ $((bundle + tree)) -gt $LIMIT ]; then
    echo "error: over the limit by $(((bundle + tree - LIMIT) / 1024)) KiB" >&2
    exit 1
fi
cat <<EOF

On the GPU machine (offline; the repository with $OUT in it), one command:
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
    $OUT/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi; PYTHON=python3 bash scripts/gpu_check.sh \\
    --output /tmp/gc --budget_s 420; cp /tmp/gc/gpu_check.json /tmp/gc/gpu_check.md \$OUT/; \\
    tar czf \$OUT/logs.tgz -C /tmp/gc logs
($OUT travels with the repository, 64 MiB in all; on any other offline machine with that stack:
  pip install --no-index --find-links $OUT ${PKGS[*]%%==*})
EOF
