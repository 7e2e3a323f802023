#!/usr/bin/env bash
# Browser test: serve the demo library and drive the page in headless Chromium.
# Needs: the release binary, the real weights and ../shared (as `fos demo`),
# Debian's chromium (/usr/bin/chromium) and `npm ci` here.
# Usage: web-tests/run.sh [SCREENSHOT.png]
set -euo pipefail
cd "$(dirname "$0")"
FOS=../target/release/fos
SHOT="${1:-$PWD/out/page.png}"
mkdir -p "$(dirname "$SHOT")" out
"$FOS" demo --out out/demo > out/demo.txt
PHOTO=../../shared/data/coco-sample/images/val2017/000000001000.jpg
"$FOS" serve --addr 127.0.0.1:0 > out/serve.txt 2> out/serve.log &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  ADDR=$(sed -n 's|^listening on ||p' out/serve.txt)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "the server did not start"; cat out/serve.log; exit 1; }
node search.mjs "$ADDR/" "$PHOTO" "$SHOT"
