#!/bin/sh
# Installs the system tools layerbuild builds with (Debian/Ubuntu, as root),
# and gitlab-ci-local (pinned, under target/tools) for tests/gitlab.rs.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
packages="buildah ansible mmdebstrap busybox-static skopeo squashfs-tools docker-registry git time rsync graphviz util-linux file qemu-user-static binfmt-support"
# gitlab-ci-local runs on node; a node already on PATH is used as it is.
command -v node >/dev/null 2>&1 || packages="$packages nodejs npm"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing$missing needs root: run as root (or with sudo)" >&2
    exit 3
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y $missing
fi
# QEMU boots images (layerbuild boot, boot_tests); without its recommends
# (about 43 MB instead of several hundred).
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed"; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing qemu-system-x86 needs root: run as root (or with sudo)" >&2
    exit 3
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86
fi
# Foreign architectures ([build] architectures): their commands run under
# qemu-user-static, which binfmt_misc hands them to.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  echo "error: qemu-aarch64 is not registered in binfmt_misc: update-binfmts --enable qemu-aarch64" >&2
  exit 3
fi
# tests/multiarch.rs: Debian's static busybox for aarch64, unpacked (not
# installed: it would replace the host's) where the fixture looks for it.
bb_dir=/usr/local/lib/layerbuild/busybox
if [ ! -x "$bb_dir/busybox-aarch64" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update
  fi
  bb_tmp=$(mktemp -d)
  chmod 777 "$bb_tmp" # apt-get download fetches as _apt
  (cd "$bb_tmp" && apt-get download busybox-static:arm64)
  dpkg-deb -x "$bb_tmp"/busybox-static_*_arm64.deb "$bb_tmp/root"
  mkdir -p "$bb_dir"
  cp "$bb_tmp/root/bin/busybox" "$bb_dir/busybox-aarch64"
  rm -rf "$bb_tmp"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing: install Rust (https://rustup.rs) and run this again" >&2
  exit 3
fi
# gitlab-ci-local, at the version tests/gitlab.rs is written for (one bundled
# file, no dependencies); scripts/gitlab-ci-local runs it.
gcl_version=4.75.1
gcl_dir="$repo/target/tools/gitlab-ci-local"
gcl_pkg="$gcl_dir/node_modules/gitlab-ci-local/package.json"
if ! grep -q "\"version\": \"$gcl_version\"" "$gcl_pkg" 2>/dev/null; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is missing (node is on PATH without it): install npm and run this again" >&2
    exit 3
  fi
  mkdir -p "$gcl_dir"
  npm install --no-audit --no-fund --loglevel=error --save-exact --prefix "$gcl_dir" "gitlab-ci-local@$gcl_version"
fi
# tests/publish.rs: an S3 server on 127.0.0.1 (moto) and the aws command
# line publish runs, pinned, in a private virtualenv under target/tools
# (never the system Python); the tests put its bin/ first on PATH. For
# publishing itself, Debian's awscli (apt-get install -y awscli) is enough.
moto_version=5.2.1
awscli_version=1.45.11
moto_dir="$repo/target/tools/moto"
if ! "$moto_dir/bin/pip" show moto 2>/dev/null | grep -q "^Version: $moto_version\$" \
  || ! "$moto_dir/bin/pip" show awscli 2>/dev/null | grep -q "^Version: $awscli_version\$"; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: python3-venv is missing: run as root (or with sudo) to install it" >&2
      exit 3
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
  fi
  python3 -m venv "$moto_dir"
  "$moto_dir/bin/pip" install --quiet "moto[server]==$moto_version" "awscli==$awscli_version"
fi
# The mitogen connection (ansible_connection = "mitogen"): Mitogen for
# Ansible, pinned, in a directory of its own where layerbuild looks for it
# (pip --target: the system Python and Ansible are left alone).
mitogen_version=0.3.54
mitogen_dir=/usr/local/lib/layerbuild/mitogen
if [ ! -d "$mitogen_dir/mitogen-$mitogen_version.dist-info" ]; then
  rm -rf "$mitogen_dir"
  "$moto_dir/bin/pip" install --quiet --no-deps --target "$mitogen_dir" "mitogen==$mitogen_version"
fi
