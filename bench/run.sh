#!/usr/bin/env bash
# freshen's benchmarks: one command, all comparisons in one invocation.
#   bench/run.sh           full run (about 25 minutes); writes BENCHMARKS.md
#   bench/run.sh --quick   smaller sizes, 2 runs; prints only
#   bench/run.sh --only B4,B6   just those benchmarks; prints only (--json FILE keeps the raw figures)
# Needs what the tests need (scripts/engine.sh installs it) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/engine.sh start
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2
cargo build --release --quiet
python3 bench/bench.py "$@"
