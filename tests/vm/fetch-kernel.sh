#!/bin/bash
# Downloads Debian's kernel package (linux-image-amd64's current version)
# and unpacks it into KERNEL_ROOT, once: no installation, no
# update-initramfs. build-image.sh, build-drbd.sh and build-zfs.sh read it;
# scripts/test.sh runs this early through prepare.sh.
#
# Usage: fetch-kernel.sh KERNEL_ROOT
set -euo pipefail
KROOT=$(readlink -m "$1")
if [ ! -f "$KROOT/.done" ]; then
  rm -rf "$KROOT" && mkdir -p "$KROOT/deb"
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-amd64" >&2; exit 1; }
  # Stale package lists may name a kernel the mirror no longer has.
  (cd "$KROOT/deb" && apt-get download "$pkg" >/dev/null 2>&1) || {
    apt-get update -q >/dev/null 2>&1 || true
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    (cd "$KROOT/deb" && apt-get download "$pkg" >/dev/null 2>&1)
  } || { echo "fetch-kernel: apt-get download $pkg failed" >&2; exit 1; }
  dpkg-deb -x "$KROOT"/deb/*.deb "$KROOT"
  rm -rf "$KROOT/deb"
  touch "$KROOT/.done"
fi
KVER=$(ls "$KROOT/lib/modules" | sort -V | tail -1)
[ -f "$KROOT/lib/modules/$KVER/modules.dep" ] || depmod -b "$KROOT" "$KVER"
