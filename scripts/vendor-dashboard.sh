#!/usr/bin/env bash
# Re-fetch the dashboard's vendored JavaScript from the npm registry at pinned versions.
#
#   scripts/vendor-dashboard.sh          → rewrites the files below and prints their sha256
#
# Run it only to change a version; the files are committed, nothing is fetched at run
# time or at test time. Licenses: uPlot MIT, wavesurfer.js BSD-3-Clause (both shipped
# with the package), axe-core MPL-2.0 (used by the browser tests only, never served).
set -euo pipefail
cd "$(dirname "$0")/.."
STATIC=src/callbridge/server/dashboard/static/vendor
TESTS=tests/dashboard/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch NAME@VERSION → unpacked into $work/NAME/package
  local spec=$1 name=${1%@*}
  mkdir -p "$work/$name"
  (cd "$work/$name" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz)
}

fetch uplot@1.6.32
fetch wavesurfer.js@8.0.1
fetch axe-core@4.14.1

cp "$work/uplot/package/dist/uPlot.iife.min.js" "$STATIC/uPlot.iife.min.js"
cp "$work/uplot/package/dist/uPlot.min.css" "$STATIC/uPlot.min.css"
cp "$work/uplot/package/LICENSE" "$STATIC/uPlot.LICENSE"
cp "$work/wavesurfer.js/package/dist/wavesurfer.min.js" "$STATIC/wavesurfer.min.js"
cp "$work/wavesurfer.js/package/LICENSE" "$STATIC/wavesurfer.LICENSE"
cp "$work/axe-core/package/axe.min.js" "$TESTS/axe.min.js"
cp "$work/axe-core/package/LICENSE" "$TESTS/axe.LICENSE"
sha256sum "$STATIC"/* "$TESTS"/*
