#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 60 s each).
#   scripts/fuzz.sh [SECONDS]
# cargo fuzz needs nightly flags; this machine has one stable toolchain, so
# RUSTC_BOOTSTRAP=1 lets it use them. Crashes land in fuzz/artifacts/<target>/;
# copy each into tests/fixtures/ as a regression case.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/resolve fuzz/corpus/config fuzz/corpus/dockerignore
cp tests/fixtures/dockerfiles/*.Dockerfile fuzz/corpus/resolve/ 2>/dev/null || true
cp tests/fixtures/config/invalid/*.json tests/fixtures/config/rebuilder/config.json config.example.json fuzz/corpus/config/ 2>/dev/null || true
printf '*.md\n!README.md\n/build\n**/*.tmp\n' > fuzz/corpus/dockerignore/seed
status=0
for t in config dockerignore resolve; do
  echo "== fuzz $t for ${SECS}s" >&2
  cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 | tail -n 3 || status=1
done
exit $status
