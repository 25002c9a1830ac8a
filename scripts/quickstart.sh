#!/bin/sh
# Quick start: install what is missing, build layerbuild, build the demo's
# //compute/slurm (Debian bookworm base -> hsn -> compute -> slurm).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
cargo build --release --locked
exec target/release/layerbuild build //compute/slurm "$@"
