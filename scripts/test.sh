#!/bin/bash
# README command 2: set up, then run every test (unit and integration on real OVS in namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
