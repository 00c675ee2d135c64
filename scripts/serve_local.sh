#!/usr/bin/env bash
# Runs the service on this machine: the CPU profile at http://127.0.0.1:8000.
# Installs what is missing, prepares the models, starts a local Redis unless
# SALES_REDIS__URL names one, runs the graph with `serve run`, and says when it is ready.
# Ray's and vLLM's logs go to a file; `--logs` shows them here too. Ctrl-C stops it all.
# `--coqui` speaks with a Coqui voice, its TTS deployment in its own environment
# (serve_config.coqui.yaml). `--direct-ingress` also serves the API on 127.0.0.1:8001 from
# the ingress replica itself (Serve's direct ingress): streamed audio skips Serve's proxy
# actor, which costs ~0.1 of a core per streamed call (README, "Where the cores go").
set -euo pipefail
cd "$(dirname "$0")/.."
show_logs=0
direct=0
config=serve_config.cpu.yaml
setup_args=()
for arg in "$@"; do
  case "$arg" in
    --logs) show_logs=1 ;;
    --coqui) config=serve_config.coqui.yaml setup_args=(--coqui) ;;
    --direct-ingress) direct=1 ;;
    *) echo "usage: bash scripts/serve_local.sh [--logs] [--coqui] [--direct-ingress]"; exit 2 ;;
  esac
done
bash scripts/setup.sh "${setup_args[@]}"
source .venv/bin/activate
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0

state="${XDG_STATE_HOME:-$HOME/.local/state}/voice-sales-agent"
log="$state/serve.log"
mkdir -p "$state"
: >"$log"
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
if [ "$direct" = 1 ]; then  # read by Ray's processes when they start
  export RAY_SERVE_ENABLE_DIRECT_INGRESS=1 RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=8001 \
    RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=8002
fi
ray_port=6390
echo "[serve] starting Ray and the deployments (log: $log)"
if ! ray start --head --node-ip-address=127.0.0.1 --port="$ray_port" \
    --include-dashboard=false --disable-usage-stats >>"$log" 2>&1; then
  echo "[serve] failed: Ray did not start on 127.0.0.1:$ray_port (log: $log)."
  echo "[serve] If an earlier run is still up, stop it with: .venv/bin/ray stop"
  exit 1
fi
serve_pid=""
stop_all() {
  trap - EXIT INT TERM
  echo "[serve] stopping"
  # Replicas first, gracefully, so vLLM's engine processes end with them; then Ray.
  timeout 60 python -c "import ray; from ray import serve
ray.init(address='127.0.0.1:$ray_port', logging_level='ERROR'); serve.shutdown()" \
    >>"$log" 2>&1 || true
  [ -z "$serve_pid" ] || kill "$serve_pid" 2>/dev/null || true
  ray stop --force >>"$log" 2>&1 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if [ "$show_logs" = 1 ]; then
  serve run --address="127.0.0.1:$ray_port" "$config" > >(tee -a "$log") 2>&1 &
else
  serve run --address="127.0.0.1:$ray_port" "$config" >>"$log" 2>&1 &
fi
serve_pid=$!

url="http://127.0.0.1:8000"
if ! python scripts/wait_ready.py "$url" --pid "$serve_pid" --timeout 900; then
  echo "[serve] the end of the log ($log):"
  grep -v -E "^\s*$" "$log" | tail -n 15
  exit 1
fi
[ "$direct" = 0 ] || python scripts/wait_ready.py "http://127.0.0.1:8001" --pid "$serve_pid" \
  --timeout 120
cat <<EOF
  console:  $url/console/
  API:      $url/api/v1/sales  (docs: $url/docs)
  health:   $url/health
  metrics:  $url/metrics
  log:      $log
EOF
[ "$direct" = 0 ] || echo "  direct:   http://127.0.0.1:8001 (the ingress replica itself, no proxy hop)"
echo "[serve] Ctrl-C stops it all"
if ! wait "$serve_pid"; then
  echo "[serve] the service stopped; the end of the log ($log):"
  tail -n 15 "$log"
  exit 1
fi
