#!/bin/bash
# Builds LINBIT's DRBD 9 kernel modules out of tree for the Debian kernel
# the test VMs boot, and caches them: they are rebuilt only when the kernel
# or the source changes.
#
# Usage: build-drbd.sh CACHE_DIR KERNEL_ROOT SOURCE_TARBALL
#   KERNEL_ROOT: the unpacked linux-image package (build-image.sh's kernel/)
#   SOURCE_TARBALL: drbd-9.x.y.tar.xz (see README.md: CAIRN_DRBD_SRC)
# Prints the directory holding drbd.ko, drbd_transport_tcp.ko and
# handshake.ko as its last line. Installs what the build needs from Debian
# (linux-headers-<kver>, gcc, make, bc, coccinelle: DRBD patches itself for
# the kernel with spatch) when missing. Takes 1-2.5 minutes on 2 cores.
set -euo pipefail
CACHE=$(mkdir -p "$1" && cd "$1" && pwd)
KROOT=$2
SRC=$(readlink -f "$3")
[ -f "$SRC" ] || { echo "build-drbd: no source tarball at $3" >&2; exit 1; }
KVER=$(ls "$KROOT/lib/modules" 2>/dev/null | grep -- '-amd64$' | sort -V | tail -1 || true)
[ -n "$KVER" ] || { echo "build-drbd: no kernel under $KROOT" >&2; exit 1; }
key=$KVER-$(sha256sum "$SRC" | cut -c1-16)
OUT=$CACHE/$key
if [ -f "$OUT/.done" ]; then
  echo "build-drbd: cached modules for $KVER from $(basename "$SRC")" >&2
  echo "$OUT"
  exit 0
fi
missing=()
[ -d "/usr/src/linux-headers-$KVER" ] || missing+=("linux-headers-$KVER")
for t in gcc make bc spatch; do
  command -v "$t" >/dev/null || case $t in spatch) missing+=(coccinelle);; *) missing+=("$t");; esac
done
if ((${#missing[@]})); then
  echo "build-drbd: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  }
fi
work=$CACHE/build-$key
rm -rf "$work" && mkdir -p "$work"
tar -xJf "$SRC" -C "$work"
dir=$(find "$work" -maxdepth 2 -type d -name drbd -path '*/drbd-9*/drbd' | head -1)
[ -n "$dir" ] || { echo "build-drbd: no drbd/ directory in $SRC" >&2; exit 1; }
start=$(date +%s)
# SPAAS=false: never ask LINBIT's online spatch service (no internet here).
make -C "$dir" KDIR="/usr/src/linux-headers-$KVER" SPAAS=false -j"$(nproc)" >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2
  echo "build-drbd: the module build failed (log: $work/build.log)" >&2
  exit 1
}
b=$dir/build-$KVER
rm -rf "$OUT" && mkdir -p "$OUT"
cp "$b/drbd.ko" "$b/drbd_transport_tcp.ko" "$OUT/"
[ -f "$b/drbd-kernel-compat/handshake/handshake.ko" ] && cp "$b/drbd-kernel-compat/handshake/handshake.ko" "$OUT/"
for ko in "$OUT"/*.ko; do
  vm=$(modinfo -F vermagic "$ko" | awk '{print $1}')
  [ "$vm" = "$KVER" ] || { echo "build-drbd: $ko is for '$vm', the kernel is $KVER" >&2; exit 1; }
done
strip --strip-debug "$OUT"/*.ko
echo "built from $(basename "$SRC") for $KVER in $(( $(date +%s) - start )) s" > "$OUT/.done"
rm -rf "$work"
echo "build-drbd: $(cat "$OUT/.done")" >&2
echo "$OUT"
