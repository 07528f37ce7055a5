#!/usr/bin/env bash
# Short versions of every benchmark, so CI shows that each still runs and prints its figures.
# The full campaigns are `make bench` (see the README for the figures they printed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DATABASE_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
run() { printf '\n--- %s\n' "$*"; timeout 300 "$PY" "$@"; }

run bench/fuzz_apply.py --examples 300 --diff-examples 50 --seed 1
run bench/apply_bench.py --files 200 --repeats 2
run bench/pipeline_overhead.py --files 500 --phases 4
run bench/retrieval.py --only hashing
run bench/claims.py --runs 100 --phases 20 --seconds 3 --latency-samples 200
run bench/chaos.py --kills 10 --lease 3 --runs 4 --phases-per-run 5
run bench/telemetry_scale.py --events 100000 --quick
run bench/pages.py --runs 200 --events 20000 --repeat 5
run bench/api_load.py --seconds 5 --warmup 2 --rate 100 --runs 20 --phases 10
