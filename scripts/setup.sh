#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, then prepares the models.
# Idempotent: a second run checks, finds everything in place, and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
quiet_pip() { { grep -v "is ignored: it is neither" || true; }; }  # this machine's pip mirror chatter

if ! command -v redis-server >/dev/null; then
  echo "[setup] installing redis-server from the OS packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating the virtual environment $VENV"
  python3.11 -m venv "$VENV"
fi

stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing packages (first run: ~3 min)"
  "$VENV/bin/pip" install -q -e ".[cpu,piper,dev]" 2>&1 | quiet_pip
  # vLLM drags in CUDA builds of torchvision, torchaudio and torchcodec that break its
  # import on a CPU-only torch; it needs them only for multimodal models.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>&1 | quiet_pip
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

"$VENV/bin/python" -m salesagent.platform.models >/dev/null
