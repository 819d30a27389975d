#!/bin/bash
# Builds the throwaway test VM: Debian's own kernel (it has device-mapper,
# which the host kernel of these machines lacks) and an initramfs holding
# the storage tools and the `cairn` binary.
#
# Usage: build-image.sh OUT_DIR CAIRN_BINARY [DRBD_MODULE_DIR]
# Produces OUT_DIR/vmlinux (uncompressed, booted through PVH: no
# decompression under TCG) and OUT_DIR/initramfs.cpio. The kernel package
# is downloaded once and kept in OUT_DIR/kernel (or $CAIRN_VM_KERNEL).
# With DRBD_MODULE_DIR (build-drbd.sh's output) the image carries the DRBD 9
# modules, loaded when the kernel command line says cairn.drbd=1. With
# CAIRN_VM_ZFS=DIR (build-zfs.sh's output) it carries OpenZFS (modules,
# Debian's zfsutils-linux) and udevd, started with the zfs module when the
# kernel command line says cairn.zfs=1.
# Needs (Debian packages): qemu-system-x86 busybox-static lvm2
# thin-provisioning-tools cryptsetup-bin drbd-utils kmod cpio xz-utils iproute2; scripts/test.sh
# installs them.
set -euo pipefail

OUT=$(mkdir -p "$1" && cd "$1" && pwd)
CAIRN=$(readlink -f "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
[ -x "$CAIRN" ] || { echo "build-image: no cairn binary at $2" >&2; exit 1; }
DRBD_KO=${3:-}
ZFS=${CAIRN_VM_ZFS:-}

# 1. Debian's kernel, unpacked (no installation, no update-initramfs).
KROOT=$(readlink -m "${CAIRN_VM_KERNEL:-$OUT/kernel}")
bash "$HERE/fetch-kernel.sh" "$KROOT"
KVER=$(ls "$KROOT/lib/modules" | sort -V | tail -1)

# 2. The root file system.
ST=$OUT/stage
rm -rf "$ST"
mkdir -p "$ST"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,dev,proc,sys,run,tmp,var/lib,root}
ln -s usr/bin "$ST/bin"; ln -s usr/sbin "$ST/sbin"; ln -s usr/lib "$ST/lib"; ln -s usr/lib64 "$ST/lib64"
# drbdmeta locks under /var/lock; drbd-utils keeps state in /var/lib/drbd.
ln -s ../run/lock "$ST/var/lock"; ln -s ../run "$ST/var/run"; mkdir -p "$ST/var/lib/drbd"

inside() { case "$1" in /bin/*|/sbin/*|/lib/*|/lib64/*) echo "$ST/usr$1";; *) echo "$ST$1";; esac; }
copy() { local d; d=$(inside "${2:-$1}"); mkdir -p "$(dirname "$d")"; rm -f "$d"; cp -L "$1" "$d"; }
declare -A LIBS=()
binary() { # a program and every shared library it links
  local p; p=$(command -v "$1" || true)
  [ -n "$p" ] || { echo "build-image: $1 not found (install its package)" >&2; exit 1; }
  copy "$p" "${2:-$p}"
  while read -r lib; do
    [ -n "$lib" ] && [ -z "${LIBS[$lib]:-}" ] || continue
    LIBS[$lib]=1
    case $lib in "${ZFS:-/nonexistent}"/*) copy "$lib" "/usr/lib/x86_64-linux-gnu/$(basename "$lib")";; *) copy "$lib";; esac
  done < <(ldd "$p" 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

copy /bin/busybox
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$ST/usr/bin/$a"; done
# Real tools replace busybox's applets; /bin/sh is bash, because busybox's
# shell would prefer its own applets (losetup, df, stat) over them.
# tc (iproute2): tests hold back a flow's packets inside a VM.
for b in bash env lvm dmsetup cryptsetup pdata_tools wipefs losetup blkid lsblk kmod df stat truncate fallocate blockdev drbdadm drbdsetup drbdmeta tc; do
  binary "$b"
done
ln -sf bash "$ST/usr/bin/sh"
for l in pvcreate pvs pvremove pvdisplay vgcreate vgs vgremove vgchange lvcreate lvs lvremove lvchange lvresize lvextend lvrename lvconvert; do
  ln -sf lvm "$ST/usr/sbin/$l"
done
for l in thin_check thin_dump thin_repair thin_restore thin_delta; do ln -sf pdata_tools "$ST/usr/sbin/$l"; done
for l in modprobe insmod lsmod depmod; do rm -f "$ST/usr/bin/$l"; ln -sf ../bin/kmod "$ST/usr/sbin/$l"; done
binary "$CAIRN" /usr/bin/cairn
if [ -n "$ZFS" ]; then
  # Debian's zfsutils-linux as unpacked (its libraries beside it), udevd
  # (whole-disk `zpool create` waits for udev to see the partitions it
  # made; /dev/zvol/... links come from 60-zvol.rules and zvol_id), and
  # libgcc_s, which glibc dlopen()s for pthread_cancel (`zfs send -v`).
  ZU=$ZFS/userland
  for b in zpool zfs zdb zstream; do
    LD_LIBRARY_PATH=$ZU/lib/x86_64-linux-gnu binary "$ZU/sbin/$b" "/usr/sbin/$b"
  done
  LD_LIBRARY_PATH=$ZU/lib/x86_64-linux-gnu binary "$ZU/lib/udev/zvol_id" /usr/lib/udev/zvol_id
  copy "$(readlink -f /lib/x86_64-linux-gnu/libgcc_s.so.1)" /lib/x86_64-linux-gnu/libgcc_s.so.1
  binary "$ZFS/udev/bin/udevadm" /usr/bin/udevadm
  mkdir -p "$ST/usr/lib/systemd" "$ST/usr/lib/udev/rules.d" "$ST/etc/udev/rules.d" "$ST/etc/zfs"
  ln -sf ../../bin/udevadm "$ST/usr/lib/systemd/systemd-udevd"
  for r in 50-udev-default.rules 60-block.rules 60-persistent-storage.rules; do cp "$ZFS/udev/lib/udev/rules.d/$r" "$ST/usr/lib/udev/rules.d/"; done
  for r in 60-zvol.rules 90-zfs.rules; do cp "$ZU/lib/udev/rules.d/$r" "$ST/usr/lib/udev/rules.d/"; done
fi
# Debug info would make the image (unpacked in guest RAM) ten times bigger.
strip --strip-debug "$ST/usr/bin/cairn" 2>/dev/null || true

# 3. Kernel modules, with their dependencies.
modules() { # Debian's modules named, and every module they need
  local m deps
  for m in "$@"; do
    deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null) || continue
    echo "$deps" | awk '$1=="insmod" {print $2}' | while read -r ko; do
      rel=${ko#"$KROOT"}; rel=${rel#/usr}
      mkdir -p "$ST/usr$(dirname "$rel")"
      cp -n "$ko" "$ST/usr$rel"
    done
  done
}
modules virtio_pci virtio_blk virtio_net virtio_rng loop dm-mod dm-thin-pool dm-crypt dm-snapshot \
        crc32c_generic crc32c_intel libcrc32c xts aesni_intel af_alg algif_skcipher algif_hash sha256_ssse3 \
        sch_ingress cls_u32 act_gact
if [ -n "$DRBD_KO" ]; then
  # DRBD 9 out of tree (depmod prefers updates/ over Debian's DRBD 8.4),
  # and what it needs from Debian's kernel.
  modules lru_cache libcrc32c crc32c_generic
  mkdir -p "$ST/usr/lib/modules/$KVER/updates/drbd9"
  cp "$DRBD_KO"/*.ko "$ST/usr/lib/modules/$KVER/updates/drbd9/"
fi
if [ -n "$ZFS" ]; then
  mkdir -p "$ST/usr/lib/modules/$KVER/updates/zfs"
  cp "$ZFS"/modules/*.ko "$ST/usr/lib/modules/$KVER/updates/zfs/"
fi
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -f "$KROOT/lib/modules/$KVER/$f" ] && cp "$KROOT/lib/modules/$KVER/$f" "$ST/usr/lib/modules/$KVER/"
done
depmod -b "$ST" "$KVER"

# 4. Configuration: no udev in the VM, so LVM and libdevmapper make the
# device nodes themselves.
mkdir -p "$ST/etc/lvm"
cat > "$ST/etc/lvm/lvm.conf" <<'EOF'
devices { obtain_device_list_from_udev = 0 external_device_info_source = "none" }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { use_lvmpolld = 0 }
EOF
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ST/etc/passwd"
printf 'root:x:0:\ndisk:x:6:\n' > "$ST/etc/group"
install -m 0755 "$HERE/init.sh" "$ST/init"
# The command channel's shell: busybox nc starts it with SIGCHLD ignored,
# which breaks every tool that waits for a child (lvm's thin_check).
printf '#!/bin/bash\nexec env --default-signal=CHLD /bin/bash\n' > "$ST/usr/bin/channel-sh"
chmod 0755 "$ST/usr/bin/channel-sh"

# 5. Pack; extract the uncompressed kernel for a PVH boot.
(cd "$ST" && find . -print0 | cpio --null -o -H newc --quiet) > "$OUT/initramfs.cpio"
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
if [ ! -f "$OUT/vmlinux" ] || [ "$VMLINUZ" -nt "$OUT/vmlinux" ]; then
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$VMLINUZ" | head -1 | cut -d: -f1)
  [ -n "$off" ] || { echo "build-image: no xz payload in $VMLINUZ" >&2; exit 1; }
  tail -c +$((off + 1)) "$VMLINUZ" | xz -dc --single-stream > "$OUT/vmlinux" 2>/dev/null || true
  [ "$(head -c 4 "$OUT/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || { echo "build-image: vmlinux extraction failed" >&2; exit 1; }
fi
echo "$KVER" > "$OUT/KVER"
rm -rf "$ST"
echo "build-image: kernel $KVER, initramfs $(du -h "$OUT/initramfs.cpio" | cut -f1)"
