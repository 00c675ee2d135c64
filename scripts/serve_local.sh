#!/usr/bin/env bash
# Runs the service on this machine: the CPU profile at http://127.0.0.1:8000.
# Installs what is missing, prepares the models, starts a local Redis unless
# SALES_REDIS__URL names one, and runs the graph with `serve run`. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0

state="${XDG_STATE_HOME:-$HOME/.local/state}/voice-sales-agent"
mkdir -p "$state"
if [ -z "${SALES_REDIS__URL:-}" ]; then
  if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
    echo "[serve] starting a local Redis on 127.0.0.1:6379 (data in $state)"
    redis-server --bind 127.0.0.1 --port 6379 --dir "$state" --appendonly yes \
      --daemonize yes --logfile "$state/redis.log"
  fi
  export SALES_REDIS__URL="redis://127.0.0.1:6379/0"
fi

# Ray on loopback only: the node advertises 127.0.0.1 and Serve binds 127.0.0.1:8000.
# Ray swaps a --node-ip-address of 127.0.0.1 for the machine's own address unless this
# (oddly named) switch says the node is a single-machine cluster; then every Ray port
# listens on 127.0.0.1 only.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
ray_port=6390
if ! ray start --head --node-ip-address=127.0.0.1 --port="$ray_port" \
    --include-dashboard=false --disable-usage-stats >/dev/null; then
  echo "[serve] could not start Ray on 127.0.0.1:$ray_port; if an old run is still up, 'ray stop' it"
  exit 1
fi
stop_all() {
  # Replicas first, gracefully, so vLLM's engine processes end with them; then Ray.
  echo "[serve] stopping"
  timeout 60 python -c "import ray; from ray import serve
ray.init(address='127.0.0.1:$ray_port', logging_level='ERROR'); serve.shutdown()" \
    >/dev/null 2>&1 || true
  ray stop --force >/dev/null 2>&1 || true
}
trap stop_all EXIT
echo "[serve] starting the graph; ready when it prints 'Deployed app'"
serve run --address="127.0.0.1:$ray_port" serve_config.cpu.yaml
