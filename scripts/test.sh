#!/usr/bin/env bash
# Install tokbench with its test extras, register the shared testbed assets, run the whole suite.
# Usage: bash scripts/test.sh [pytest args]   (DATA=<folder of the *.tar.xz archives>, default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-../shared/data}"
python -m pip install -e '.[test]'
tokbench assets import "$DATA"/*.tar.xz
tokbench assets fetch smollm2
tokbench assets fetch minilm
python -m pytest -q "$@"
