#!/usr/bin/env bash
# Runs the test suite: installs what is missing (scripts/setup.sh), then runs pytest in a
# network namespace that has only loopback, so no test traffic can leave this machine.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_api.py -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONDONTWRITEBYTECODE=1
pytest_cmd=(.venv/bin/python -m pytest -p no:cacheprovider -W ignore::DeprecationWarning "$@")
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${pytest_cmd[@]}"
fi
echo "[test] not root or no unshare: running on the host network (servers bind 127.0.0.1)"
exec "${pytest_cmd[@]}"
