#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 60 s each) and prints
# one summary line per target: runs, executions per second, corpus size, crashes.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: config dockerignore resolve
# cargo fuzz needs nightly flags; this machine has one stable toolchain, so
# RUSTC_BOOTSTRAP=1 lets it use them. Full logs go to fuzz/logs/<target>.log.
# Every crash libFuzzer saves (fuzz/artifacts/<target>/crash-*) is copied to
# tests/fixtures/fuzz/<target>/, where `cargo test --test fuzz_regressions`
# replays it through the same code on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(config dockerignore resolve)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/resolve fuzz/corpus/config fuzz/corpus/dockerignore fuzz/logs
cp tests/fixtures/dockerfiles/*.Dockerfile fuzz/corpus/resolve/ 2>/dev/null || true
cp tests/fixtures/config/invalid/*.json tests/fixtures/config/rebuilder/config.json config.example.json fuzz/corpus/config/ 2>/dev/null || true
printf '*.md\n!README.md\n/build\n**/*.tmp\n' > fuzz/corpus/dockerignore/seed
for t in "${TARGETS[@]}"; do
  mkdir -p "tests/fixtures/fuzz/$t"
  cp "tests/fixtures/fuzz/$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
done
status=0
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t for ${SECS}s" >&2
  cargo fuzz build "$t" >"fuzz/logs/$t.build.log" 2>&1 || { echo "fuzz $t: build failed, see fuzz/logs/$t.build.log" >&2; status=1; continue; }
  if ! cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=4096 -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1; then
    status=1
  fi
  runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "fuzz/logs/$t.log" | grep -ao '[0-9]*$' || echo 0)
  speed=$(grep -ao 'stat::average_exec_per_sec: *[0-9]*' "fuzz/logs/$t.log" | grep -ao '[0-9]*$' || echo 0)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  crashes=0
  for c in fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/oom-* fuzz/artifacts/"$t"/timeout-*; do
    [ -e "$c" ] || continue
    cp "$c" "tests/fixtures/fuzz/$t/"
    crashes=$((crashes + 1))
  done
  echo "fuzz $t: ${runs} runs in ${SECS} s (${speed}/s), corpus ${corpus} inputs, ${crashes} crash/oom/timeout inputs saved to tests/fixtures/fuzz/$t/"
done
exit $status
