#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) over its committed corpus
# and prints one line per target: executions, executions/s, corpus size,
# and whether it found a crash. Needs the nightly toolchain; installs
# cargo-fuzz from crates.io when missing. New corpus entries go to
# target/corpus-new/TARGET, so the committed corpora stay as they are.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
TARGETS=${TARGETS:-"coco image index request"}
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
status=0
for t in $TARGETS; do
  new=target/corpus-new/$t
  mkdir -p "$new" artifacts/$t
  log=target/fuzz-$t.log
  if cargo +nightly fuzz run -O "$t" "$new" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 > "$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log and fuzz/artifacts/$t)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  echo "$t: ${SECONDS_PER_TARGET}s, $execs executions, $rate/s, coverage $cov edges: $result"
done
exit $status
