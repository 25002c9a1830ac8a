#!/bin/sh
# Per-task cost of each Ansible connection, measured through layerbuild:
# on a Debian base with python3 (mmdebstrap, built once and cached), one
# layer per connection runs a play of N trivial `command` tasks and one runs
# an empty play; per-task cost = (time with N tasks - time with none) / N.
# Every run changes a `run` command so the layers are really rebuilt.
#
#   sh benches/ansible-connections.sh [N] [ROUNDS]     (default 10 tasks, 3 rounds)
#
# Needs root, buildah, ansible, mmdebstrap (scripts/install-deps.sh).
set -eu
N="${1:-10}"
ROUNDS="${2:-3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --release --quiet
lb="$repo/target/release/layerbuild"
ws="${LAYERBUILD_BENCH_DIR:-/var/tmp/layerbuild-bench-ansible}"
mkdir -p "$ws/play"

{
  echo '- hosts: all'
  echo '  gather_facts: false'
  echo '  tasks:'
  i=0
  while [ "$i" -lt "$N" ]; do
    echo "    - command: \"true\""
    i=$((i + 1))
  done
} > "$ws/play/tasks.yml"
printf -- '- hosts: all\n  gather_facts: false\n  tasks: []\n' > "$ws/play/empty.yml"

layers() {
  stamp="$1"
  cat <<EOF
[workspace]
name = "bench-ansible"

[layers."base/os"]
parent = "scratch"
setup = ["mmdebstrap --variant=apt --include=python3 bookworm {root}"]
EOF
  for conn in chroot buildah; do
    for play in tasks empty; do
      cat <<EOF

[layers."$conn/$play"]
parent = "//base/os"
run = ["echo $stamp > /etc/bench-stamp"]
source = "play"
playbook = "$play.yml"
ansible_connection = "$conn"
EOF
    done
  done
}

layers 0 > "$ws/Layerfile.toml"
"$lb" -C "$ws" build --no-outputs //base/os >/dev/null

ms() {
  # the layer's duration from `build --json`
  sed -n 's/.*"duration_ms": \([0-9][0-9]*\).*/\1/p' | head -1
}

printf '%-10s %6s %12s %12s %14s\n' connection round "empty (ms)" "$N tasks (ms)" "per task (ms)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  layers "$$-$r" > "$ws/Layerfile.toml"
  for conn in chroot buildah; do
    empty=$("$lb" -C "$ws" build --json -j 1 --no-outputs "//$conn/empty" 2>/dev/null | ms)
    tasks=$("$lb" -C "$ws" build --json -j 1 --no-outputs "//$conn/tasks" 2>/dev/null | ms)
    per=$(( (tasks - empty) / N ))
    printf '%-10s %6s %12s %12s %14s\n' "$conn" "$r" "$empty" "$tasks" "$per"
  done
  r=$((r + 1))
done
echo "machine: $(nproc) cores, $(uname -r), $(buildah --version), $(ansible-playbook --version | head -1)"
