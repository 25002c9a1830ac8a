#!/bin/sh
# What a short play costs over each Ansible connection: layers on the demo's
# Debian base (mmdebstrap, built once, untimed) whose play has 0, 1, 5 or 10
# `command` tasks, each rebuilt ROUNDS times (after an edit of its play),
# alternating connections; the whole `layerbuild build` of the layer is
# timed, median and min printed.
#
#   sh benches/short-plays.sh [ROUNDS]     (default 6; `scripts/bench short-plays`)
#
# Needs root, buildah, ansible, mmdebstrap and Mitogen (scripts/install-deps.sh).
set -eu
ROUNDS="${1:-6}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --release --quiet
lb="$repo/target/release/layerbuild"
tmp="$(mktemp -d /var/tmp/layerbuild-bench-short.XXXXXX)"
name="benchshort-$$"
cleanup() {
  buildah images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/layerbuild/$name/" | xargs -r buildah rmi -f >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ws="$tmp/ws"
mkdir -p "$ws/plays"
cat > "$ws/Layerfile.toml" <<EOF
[workspace]
name = "$name"

[build]
isolation = "chroot"

[layers."base/os"]
parent = "scratch"
setup = ["mmdebstrap --variant=apt --include=python3 bookworm {root}"]
EOF
SIZES="0 1 5 10"
for n in $SIZES; do
  {
    printf -- '- hosts: all\n  gather_facts: false\n  tasks:\n'
    [ "$n" = 0 ] && printf '    - meta: noop\n'
    i=1
    while [ "$i" -le "$n" ]; do
      printf '    - command: touch /tmp/t%s\n' "$i"
      i=$((i + 1))
    done
  } > "$ws/plays/p$n.yml"
  for conn in chroot mitogen; do
    printf '\n[layers."t/n%s%s"]\nparent = "//base/os"\nsource = "plays"\nplaybook = "p%s.yml"\nansible_connection = "%s"\n' \
      "$n" "$conn" "$n" "$conn" >> "$ws/Layerfile.toml"
  done
done
"$lb" -C "$ws" build -q --no-outputs //base/os >/dev/null

times="$tmp/times"
: > "$times"
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for n in $SIZES; do
    echo "# round $r" >> "$ws/plays/p$n.yml"
    for conn in chroot mitogen; do
      t0=$(date +%s%N)
      "$lb" -C "$ws" build -q --no-outputs "//t/n$n$conn" >/dev/null
      t1=$(date +%s%N)
      echo "$n $conn $t0 $t1" >> "$times"
    done
  done
  r=$((r + 1))
done

printf '%-16s %18s %18s\n' "tasks in the play" "chroot (s)" "mitogen (s)"
for n in $SIZES; do
  row=""
  for conn in chroot mitogen; do
    cell=$(awk -v n="$n" -v c="$conn" '$1 == n && $2 == c { print ($4 - $3) / 1e9 }' "$times" |
      sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (min %.2f)", m, v[1] }')
    row="$row$(printf ' %18s' "$cell")"
  done
  printf '%-16s%s\n' "$n" "$row"
done
echo "rounds: $ROUNDS; machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(buildah --version), $(ansible-playbook --version | head -1)"
