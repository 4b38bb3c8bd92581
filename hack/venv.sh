#!/usr/bin/env bash
# Creates the project virtualenv (.venv/) from the first python3 >= 3.11 found, and installs the project into it
# (editable, every extra). Nothing goes into the system interpreter. Re-runs only reinstall when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

pick_python() {
  for c in "${PYTHON3:-}" python3 python3.13 python3.12 python3.11; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo "$c"; return; }
  done
  echo "need python3 >= 3.11 with the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  rm -f .bootstrap-stamp
fi

stamp=".bootstrap-stamp"
sum=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ] \
   || ! "$VENV/bin/python" -c "import livenexus_common, livenexus_worker, livenexus_operator, livenexus_console, livenexus_dev, faster_whisper, kopf" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[worker,operator,models,dev]'
  echo "$sum" > "$stamp"
fi
