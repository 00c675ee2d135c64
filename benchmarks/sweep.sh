#!/usr/bin/env bash
# The one command: sweeps the Ray Serve service and the naive baseline under the same load and
# writes benchmarks/RESULTS.md, with the JSON, table and plot in benchmarks/results/.
# Arguments go to benchmarks/run_sweep.py (e.g. --concurrency 1 2 4 --turns 3).
# Runs in a network namespace that has only loopback, so no byte can leave this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 VLLM_CPU_KVCACHE_SPACE=1
export SWEEP_COMMAND="bash benchmarks/sweep.sh${*:+ $*}"
cmd=(.venv/bin/python benchmarks/run_sweep.py "$@")
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${cmd[@]}"
fi
echo "[sweep] not root or no unshare: running on the host network (servers bind 127.0.0.1)"
exec "${cmd[@]}"
