#!/bin/bash
# Fetches OpenZFS from Debian's archive (zfs-dkms, zfsutils-linux and its
# libraries from contrib; udev from main) through a private apt
# configuration under CACHE_DIR (the host's apt sources and lists are never
# read or changed), builds the kernel modules out of tree for the Debian
# kernel the test VMs boot, and caches the result: it is rebuilt only when
# the kernel or a package changes.
#
# Usage: build-zfs.sh CACHE_DIR KERNEL_ROOT
#   KERNEL_ROOT: the unpacked linux-image package (build-image.sh's kernel/)
# Prints the build directory as its last line: modules/*.ko, userland/ (the
# unpacked zfsutils-linux and libraries), udev/ (the unpacked udev package).
# Exit 3 (with one line on stderr) when Debian's archive cannot be reached
# and nothing is cached. Needs linux-headers-<kver>, gcc, make (installed
# when missing, as build-drbd.sh does). About 2.5 minutes on 2 cores.
set -euo pipefail
CACHE=$(mkdir -p "$1" && cd "$1" && pwd)
KROOT=$2
KVER=$(ls "$KROOT/lib/modules" 2>/dev/null | grep -- '-amd64$' | sort -V | tail -1 || true)
[ -n "$KVER" ] || { echo "build-zfs: no kernel under $KROOT" >&2; exit 1; }
PKGS=(zfs-dkms zfsutils-linux libzfs4linux libzpool5linux libnvpair3linux libuutil3linux udev)

# 1. The packages, through apt's own client with a configuration of our own.
A=$CACHE/apt
mkdir -p "$A/sources/" "$A/lists/partial" "$A/archives/partial"
cat > "$A/sources/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
APT=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$A/sources" -o Dir::State::Lists="$A/lists"
     -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Debug::NoLocking=1)
debs=$CACHE/debs
if ! apt-get "${APT[@]}" update -q >"$A/update.log" 2>&1 || grep -q '^E:\|^Err:' "$A/update.log"; then
  last=$(ls -d "$CACHE/$KVER"-*/ 2>/dev/null | tail -1 || true)
  if [ -n "$last" ] && [ -f "$last/.done" ]; then
    echo "build-zfs: Debian's archive is unreachable; using the cached build ${last%/}" >&2
    echo "${last%/}"
    exit 0
  fi
  echo "build-zfs: Debian's archive (deb.debian.org, contrib) is unreachable: $(grep -m1 '^E:\|^Err:' "$A/update.log" || echo 'apt-get update failed')" >&2
  exit 3
fi
rm -rf "$debs.new" && mkdir -p "$debs.new"
(cd "$debs.new" && apt-get "${APT[@]}" download "${PKGS[@]}" >"$A/download.log" 2>&1) || {
  cat "$A/download.log" >&2; echo "build-zfs: apt-get download failed" >&2; exit 1; }
rm -rf "$debs" && mv "$debs.new" "$debs"
key=$KVER-$( (cd "$debs" && ls *.deb | sort && sha256sum -- *.deb) | sha256sum | cut -c1-16)
OUT=$CACHE/$key
if [ -f "$OUT/.done" ]; then
  echo "build-zfs: cached modules: $(cat "$OUT/.done")" >&2
  echo "$OUT"
  exit 0
fi

# 2. The module build (no dkms: configure + make against the headers).
missing=()
[ -d "/usr/src/linux-headers-$KVER" ] || missing+=("linux-headers-$KVER")
for t in gcc make; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]})); then
  echo "build-zfs: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
rm -rf "$OUT" && mkdir -p "$OUT/userland" "$OUT/udev" "$OUT/modules"
for d in "$debs"/*.deb; do
  case $(basename "$d") in udev_*) dpkg-deb -x "$d" "$OUT/udev";; *) dpkg-deb -x "$d" "$OUT/userland";; esac
done
src=$(ls -d "$OUT"/userland/usr/src/zfs-* | tail -1)
work=$CACHE/build-$key
rm -rf "$work" && mkdir -p "$work" && mv "$src" "$work/"
src=$work/$(basename "$src")
common=$(readlink -f "/usr/src/linux-headers-$KVER/source" 2>/dev/null || true)
[ -d "$common" ] || common=/usr/src/linux-headers-${KVER%-amd64}-common
start=$(date +%s)
(cd "$src" && ./configure --with-config=kernel --with-linux="$common" --with-linux-obj="/usr/src/linux-headers-$KVER") >"$work/configure.log" 2>&1 || {
  tail -30 "$work/configure.log" >&2; echo "build-zfs: configure failed (log: $work/configure.log)" >&2; exit 1; }
# The top-level make also builds a test helper that fails here; the modules
# are what counts, and they are checked below.
make -C "$src" -j"$(nproc)" >"$work/make.log" 2>&1 || true
find "$src/module" -name '*.ko' -exec cp {} "$OUT/modules/" \;
n=$(ls "$OUT"/modules/*.ko 2>/dev/null | wc -l)
[ "$n" = 9 ] || { tail -30 "$work/make.log" >&2; echo "build-zfs: $n modules built, expected 9 (log: $work/make.log)" >&2; exit 1; }
for ko in "$OUT"/modules/*.ko; do
  vm=$(modinfo -F vermagic "$ko" | awk '{print $1}')
  [ "$vm" = "$KVER" ] || { echo "build-zfs: $ko is for '$vm', the kernel is $KVER" >&2; exit 1; }
done
strip --strip-debug "$OUT"/modules/*.ko
rm -rf "$OUT/userland/usr/src" "$work"
echo "$(basename "$src") built for $KVER in $(( $(date +%s) - start )) s" > "$OUT/.done"
echo "build-zfs: $(cat "$OUT/.done")" >&2
echo "$OUT"
