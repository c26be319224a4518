#!/usr/bin/env bash
# The test command: formatting, lints, unit and integration tests (real engine, real registry).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/engine.sh start
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --no-fail-fast
