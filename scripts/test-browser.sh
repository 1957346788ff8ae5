#!/usr/bin/env bash
# The browser the dashboard's tests drive: Debian's `chromium` package at /usr/bin/chromium
# (Playwright drives it through executable_path; no browser download of its own).
#
#   scripts/test-browser.sh      → installs chromium with apt-get when it is missing
#
# Exits non-zero when it cannot: the browser tests then fail (they never skip).
set -euo pipefail

CHROMIUM=${CALLBRIDGE_CHROMIUM:-/usr/bin/chromium}
if [[ -x "$CHROMIUM" ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no $CHROMIUM and no apt-get to install it: install Chromium and set CALLBRIDGE_CHROMIUM" >&2
  exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
if [[ ! -x "$CHROMIUM" ]]; then
  echo "apt-get installed chromium but $CHROMIUM is not there" >&2
  exit 1
fi
"$CHROMIUM" --version
