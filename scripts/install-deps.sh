#!/bin/sh
# Installs the system tools layerbuild builds with (Debian/Ubuntu, as root).
set -eu
packages="buildah ansible mmdebstrap busybox-static skopeo squashfs-tools docker-registry git time graphviz"
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
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing: install Rust (https://rustup.rs) and run this again" >&2
  exit 3
fi
