#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, then prepares the models.
# Idempotent: a second run checks, finds everything in place, and returns in seconds.
#   --coqui  also builds .venv-coqui, the TTS deployment's own environment for Coqui voices
#   --tests  also installs Chromium and builds .venv-coqui (the suite uses both)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
logs="${XDG_STATE_HOME:-$HOME/.local/state}/voice-sales-agent"
mkdir -p "$logs"

# Runs a long step with its output in a log, showing the time it has taken so far; on
# failure, says so and shows the end of the log.
progress() {
  local label=$1 log=$2 start=$SECONDS
  shift 2
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ -t 1 ]; then
      printf '\r[setup] %s: %d s' "$label" $((SECONDS - start))
    elif [ $(((SECONDS - start) % 30)) -eq 0 ]; then
      echo "[setup] $label: $((SECONDS - start)) s"
    fi
  done
  [ ! -t 1 ] || printf '\n'
  if ! wait "$pid"; then
    echo "[setup] $label failed; the end of $log:"
    tail -n 20 "$log"
    exit 1
  fi
}

# OS packages: Redis always; with --tests, the Chromium the console's browser tests drive.
os_packages=()
command -v redis-server >/dev/null || os_packages+=(redis-server)
[ "${1:-}" != "--tests" ] || command -v chromium >/dev/null || os_packages+=(chromium)
coqui=0
case "${1:-}" in --tests | --coqui) coqui=1 ;; esac
if [ ${#os_packages[@]} -gt 0 ]; then
  echo "[setup] installing ${os_packages[*]} from the OS packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install \
      -y -qq "${os_packages[@]}"; } >/tmp/salesagent-apt.log 2>&1; then
    echo "[setup] apt-get failed (log: /tmp/salesagent-apt.log); install ${os_packages[*]} by hand"
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating the virtual environment $VENV"
  python3.11 -m venv "$VENV"
fi

stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing packages (first run: ~3 min; log: $logs/pip.log)"
  progress "installing packages" "$logs/pip.log" "$VENV/bin/pip" install -e ".[cpu,piper,dev]"
  # vLLM drags in CUDA builds of torchvision, torchaudio and torchcodec that break its
  # import on a CPU-only torch; it needs them only for multimodal models.
  progress "removing CUDA-only extras" "$logs/pip-uninstall.log" \
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

"$VENV/bin/python" -m salesagent.platform.models >/dev/null

# Coqui voices run in a second environment: coqui-tts needs torchaudio, which cannot sit
# beside vLLM's CPU torch. The TTS deployment runs there through Ray's runtime_env
# (`py_executable`, see serve_config.coqui.yaml): the same Ray and project, no vLLM.
if [ "$coqui" = 1 ]; then
  COQUI_VENV="${COQUI_VENV:-.venv-coqui}"
  [ -x "$COQUI_VENV/bin/python" ] || python3.11 -m venv "$COQUI_VENV"
  coqui_stamp="$COQUI_VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -f "$coqui_stamp" ]; then
    echo "[setup] building $COQUI_VENV for Coqui voices (first run: ~2.5 min, 2.6 GB)"
    progress "installing Coqui TTS" "$logs/pip-coqui.log" \
      "$COQUI_VENV/bin/pip" install -e ".[coqui]"
    # PyPI's torchaudio is a CUDA build whose C++ extension cannot load beside the CPU
    # torch; without it torchaudio runs in pure Python, which is all VITS inference needs.
    rm -f "$COQUI_VENV"/lib/python3.11/site-packages/torchaudio/lib/*.so
    if "$COQUI_VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia-'; then
      echo "[setup] $COQUI_VENV pulled CUDA wheels (nvidia-*); see $logs/pip-coqui.log"
      exit 1
    fi
    "$COQUI_VENV/bin/python" -c "import ray, torchaudio; from TTS.api import TTS" \
      || { echo "[setup] Coqui TTS does not import in $COQUI_VENV"; exit 1; }
    rm -f "$COQUI_VENV"/.installed-*
    touch "$coqui_stamp"
  fi
  # The random-weight test voice (no trained Coqui voice ships offline).
  "$COQUI_VENV/bin/python" -m salesagent.voice.coqui_voice >/dev/null
fi
