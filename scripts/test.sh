#!/usr/bin/env bash
# Install tokbench with its test extras, register the shared testbed assets, run the whole suite.
# Usage: bash scripts/test.sh [pytest args]   (DATA=<folder of the *.tar.xz archives>, default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
# the testbed's archives: $DATA, else ../shared/data beside the checkout (no other fallback)
DATA="${DATA:-../shared/data}"
if ! ls "$DATA"/*.tar.xz >/dev/null 2>&1; then
  echo "scripts/test.sh: no testbed archives (*.tar.xz) in $DATA; set DATA=<folder with tokenizers.tar.xz ...>" >&2
  exit 2
fi
python -m pip install -e '.[test]'
tokbench assets import "$DATA"/*.tar.xz
tokbench assets fetch smollm2
tokbench assets fetch minilm
python -m pytest -q "$@"
