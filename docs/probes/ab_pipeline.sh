#!/bin/bash
# A/B of `ringex bench pipeline` between two checkouts, each with its own .venv, alternating
# so that the host's drift falls on both alike: ab_pipeline.sh DIR_A DIR_B [ROUNDS]
# (docs/benchmarks.md, "Crash points compiled in").
set -eu
a=$1 b=$2 rounds=${3:-3}
for _ in $(seq 1 "$rounds"); do
  for d in "$a" "$b"; do
    (cd "$d" && timeout 600 .venv/bin/ringex bench pipeline --json --runs 1 2>/dev/null |
      python3 -c "import json, sys; r = json.load(sys.stdin); print('$d', round(r['msgs_per_s']), 'p99', round(r['p99_us']), 'p99.9', round(r['p999_us']))")
  done
done
