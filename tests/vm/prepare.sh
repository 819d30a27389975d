#!/bin/bash
# What the VM tests build that needs neither the `cairn` binary nor the
# tests' network namespace: Debian's kernel (fetch-kernel.sh), the DRBD 9
# modules when CAIRN_DRBD_SRC names their source (build-drbd.sh), and
# OpenZFS from Debian contrib (build-zfs.sh), each into its cache under
# BUILD_DIR. scripts/test.sh runs this in the background at the lowest CPU
# priority while the Rust and python tests run, so that the VM tests'
# fixture (tests/vm/conftest.py, which runs the same scripts) finds
# everything cached. A failure here is only reported: the fixture builds
# again in the foreground and fails there with the builder's own message.
#
# Usage: prepare.sh BUILD_DIR   (tests/vm/conftest.py's CAIRN_VM_BUILD,
# target/vm by default)
set -uo pipefail
BUILD=$(mkdir -p "$1" && cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
rc=0
step() { # name, command...: runs one builder, says how long it took
  local name=$1 start=$SECONDS; shift
  if "$@" >/dev/null; then echo "prepare: $name done in $((SECONDS - start)) s"
  else local r=$?; echo "prepare: $name failed (exit $r) after $((SECONDS - start)) s"; return "$r"; fi
}
step "Debian's kernel" bash "$HERE/fetch-kernel.sh" "$BUILD/kernel" || exit 1
# One after the other: both may apt-get install the kernel headers.
if [ -n "${CAIRN_DRBD_SRC:-}" ]; then
  step "DRBD 9 modules" bash "$HERE/build-drbd.sh" "$BUILD/drbd" "$BUILD/kernel" "$CAIRN_DRBD_SRC" || rc=1
fi
# Exit 3: Debian's archive unreachable, which the ZFS tests report themselves.
step "OpenZFS modules" bash "$HERE/build-zfs.sh" "$BUILD/zfs" "$BUILD/kernel"
r=$?; [ "$r" = 0 ] || [ "$r" = 3 ] || rc=1
exit "$rc"
