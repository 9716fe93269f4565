#!/usr/bin/env bash
# The fault suite's soak, for longer: bench/soak.sh [SECONDS (300)] [RESTART_EVERY (60)]
# Two `authgate run` processes on one Redis (AOF, appendfsync always): sessions made, used
# (API and browser) and logged out on either process, Redis killed or stopped and started
# again every RESTART_EVERY seconds. Prints requests and logouts by status, logged-out
# sessions served (must be 0), 503s outside the outages and each process's RSS growth.
# Needs the dev install (.venv with `pip install -e '.[dev]'`) and redis-server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,7p' "$0"
  exit 0
fi
export AUTHGATE_SOAK_SECONDS="${1:-300}" AUTHGATE_SOAK_RESTART_SECONDS="${2:-60}"
exec .venv/bin/pytest -q -s -p no:cacheprovider tests/faults/test_soak.py
