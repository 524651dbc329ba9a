#!/usr/bin/env bash
# The test suite: lint, then pytest (CPU only, no network; GPU tests are skipped without a GPU).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
"${RUN[@]}" ruff check .
"${RUN[@]}" ruff format --check .
"${RUN[@]}" pytest -q --durations=20 "$@"  # the 20 slowest tests listed at the end
