#!/bin/sh
# Kept for old instructions: the benchmarks are run by scripts/bench.
exec "$(dirname "$0")/../scripts/bench" "$@"
