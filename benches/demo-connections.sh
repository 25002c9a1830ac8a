#!/bin/sh
# The demo's //compute/slurm built by the release binary over each Ansible
# connection: the cold build (a fresh copy of the demo, nothing cached: the
# Debian base by mmdebstrap, then the hsn, compute and slurm plays) and a
# one-role rebuild (the slurm role's template edited: //compute/slurm
# alone). Each connection builds its own copy, one after the other.
#
#   sh benches/demo-connections.sh [ROUNDS]     (default 1; `scripts/bench demo`)
#
# Needs root, buildah, ansible, mmdebstrap and Mitogen (scripts/install-deps.sh).
set -eu
ROUNDS="${1:-1}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --release --quiet
lb="$repo/target/release/layerbuild"
tmp="$(mktemp -d /var/tmp/layerbuild-bench-demo.XXXXXX)"
names=""
cleanup() {
  for n in $names; do
    buildah images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/layerbuild/$n/" | xargs -r buildah rmi -f >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

secs() { awk "BEGIN { printf \"%.1f\", ($2 - $1) / 1000000000 }"; }

printf '%-10s %6s %12s %16s\n' connection round "cold (s)" "one role (s)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for conn in chroot mitogen; do
    name="benchdemo-$conn-$$-$r"
    names="$names $name"
    ws="$tmp/$name"
    mkdir -p "$ws"
    cp -a demo "$ws/demo"
    sed -e "s/^name = \"demo\"/name = \"$name\"/" \
      -e "s/^isolation = \"chroot\"/isolation = \"chroot\"\nansible_connection = \"$conn\"/" \
      Layerfile.toml > "$ws/Layerfile.toml"
    t0=$(date +%s%N)
    "$lb" -C "$ws" build -q --no-outputs //compute/slurm >/dev/null
    t1=$(date +%s%N)
    echo "# edited $r" >> "$ws/demo/slurm-config/roles/slurm/templates/slurm.conf.j2"
    "$lb" -C "$ws" build -q --no-outputs //compute/slurm >/dev/null
    t2=$(date +%s%N)
    printf '%-10s %6s %12s %16s\n' "$conn" "$r" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"
  done
  r=$((r + 1))
done
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(buildah --version), $(ansible-playbook --version | head -1)"
