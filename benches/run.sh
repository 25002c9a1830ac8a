#!/bin/sh
# Prints the benchmark figures recorded in README.md.
# Needs buildah, ansible and busybox-static (see README's Quick start) and root.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo bench --quiet --bench fingerprint
