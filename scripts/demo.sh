#!/bin/bash
# README command 1: set up, then start the controller with its embedded NB and a 2-host lab to try it on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/weft lab up --hosts "${WEFT_DEMO_HOSTS:-2}"
cat <<MSG

Weft is running: the controller (embedded NB) and hosts h1..h${WEFT_DEMO_HOSTS:-2}.
Try:
  eval "\$(.venv/bin/weft lab env)"
  .venv/bin/weft status
  .venv/bin/weft lab exec h1 -- ovs-vsctl show
Stop everything:  .venv/bin/weft lab down
MSG
