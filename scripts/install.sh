#!/usr/bin/env bash
# The one way callbridge is installed: `make` (development) and the Dockerfile (the image)
# both call this, so the image is built by the same commands the tests run on.
#
#   scripts/install.sh venv DIR        → DIR/bin/callbridge, the project installed (pip)
#   scripts/install.sh venv DIR dev    → the same, editable, with the dev tools
#   (both also install the Smart Turn model file: scripts/fetch_smart_turn.py)
#
# espeak-ng needs no system package: the espeakng-loader wheel ships the library and its
# voice data, on a developer's machine and in the image alike.
set -euo pipefail

venv() {
  local dir=$1 mode=${2:-}
  local python=${PYTHON:-python3}
  test -x "$dir/bin/python" || "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  if [[ $mode == dev ]]; then
    "$dir/bin/python" -m pip install -q -e '.[dev]'
  else
    "$dir/bin/python" -m pip install -q --no-cache-dir .
  fi
  # The end-of-turn model (one pinned file out of a wheel; see the script).
  "$dir/bin/python" "$(dirname "$0")/fetch_smart_turn.py"
}

case "${1:-}" in
  venv) shift; venv "$@" ;;
  *) echo "usage: $0 venv DIR [dev]" >&2; exit 2 ;;
esac
