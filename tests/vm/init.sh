#!/bin/sh
# /init of the Cairn test VM (PID 1; /bin/sh is bash). It brings up the
# disks, device-mapper and the network, then runs `cairn satellite` in a
# loop (a test restarts the satellite by killing it) and a command channel
# for the test on port 2222. qemu's user network forwards both ports to a
# loopback address of the host; nothing else leaves the VM.
# Kernel command line: cairn.hostname=NAME (the node name as well);
# cairn.ip=ADDR/LEN: eth0 is a tap on the test's own bridge (in a network
# namespace the test made) with that address, instead of qemu's user
# network; cairn.drbd=1: load the DRBD 9 modules and run DRBD for real;
# cairn.zfs=1: start udevd and load OpenZFS (an image built with ZFS).
# With /cairn/tls.crt, tls.key and tls-ca.crt in the initramfs (the test
# appends them, as it does the cluster secret) the satellite speaks mutual
# TLS with its controller, on port 3367 instead of 3366.
export PATH=/usr/sbin:/usr/bin
# No udev: libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/lvm /run/cryptsetup /tmp /var/lib/cairn-satellite

arg() { for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return 0;; esac; done; return 1; }

modprobe -a virtio_pci virtio_blk virtio_net virtio_rng loop dm-mod dm-thin-pool dm-crypt dm-snapshot 2>&1
# No writeback throttling on the virtual disks: under TCG their latency
# swings with the host's load, wbt then cuts the queue down to a request or
# two, and a dm-thin worker was seen blocked in wbt_wait for over 120 s.
for q in /sys/block/vd*/queue/wbt_lat_usec; do [ -e "$q" ] && echo 0 > "$q"; done
name=$(arg cairn.hostname) || name=vm
hostname "$name"
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if ip=$(arg cairn.ip); then
  ip addr add "$ip" dev eth0 && ip link set eth0 up
else
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
fi
if [ "$(arg cairn.zfs)" = 1 ]; then
  # udev makes the /dev/zvol links and answers `zpool create`'s wait for
  # the partitions it labels; LVM keeps making its own nodes.
  /usr/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/run/udevd.err
  udevadm trigger --type=subsystems --action=add; udevadm trigger --type=devices --action=add
  udevadm settle -t 30
  modprobe zfs || echo "CAIRN-VM-NO-ZFS: modprobe zfs failed"
fi
drbd=--drbd-config-only
if [ "$(arg cairn.drbd)" = 1 ]; then
  if modprobe drbd && modprobe drbd_transport_tcp; then drbd=; else echo "CAIRN-VM-NO-DRBD: modprobe drbd failed"; fi
  mkdir -p /var/lib/drbd
fi

port=3366 tls=()
if [ -f /cairn/tls.crt ]; then
  port=3367 tls=(--tls-cert /cairn/tls.crt --tls-key /cairn/tls.key --tls-ca /cairn/tls-ca.crt)
fi

# The command channel: one shell per connection, output back on the socket.
nc -ll -p 2222 -e /usr/bin/channel-sh &
echo "CAIRN-VM-READY $(cut -d' ' -f1 /proc/uptime)"
while [ ! -f /run/stop ]; do
  # Debian's kernel has DRBD 8.4 only: without cairn.drbd=1 DRBD runs
  # config-only (files, metadata and the planned kernel commands are real).
  if [ -z "$drbd" ]; then
    # Real DRBD: every command the satellite runs goes to a log file the
    # test fetches after a failure (the console, a slow serial line,
    # shows the rest).
    mkdir -p /var/log
    RUST_LOG=info,cairn_exec=debug cairn satellite --node-name "$name" --listen 0.0.0.0:$port "${tls[@]}" --data-dir /var/lib/cairn-satellite \
      --cluster-secret-file /cairn/secret --command-timeout 120 --allow-pool-dirs /var/lib/cairn-pool,/var/lib/cairn-thick --metrics-bind 0.0.0.0:9942 2>&1 \
      | tee -a /var/log/cairn-satellite.log | grep -v DEBUG
    rc=${PIPESTATUS[0]}
  else
    cairn satellite --node-name "$name" --listen 0.0.0.0:$port "${tls[@]}" --data-dir /var/lib/cairn-satellite \
      --cluster-secret-file /cairn/secret --command-timeout 120 --allow-pool-dirs /var/lib/cairn-pool,/var/lib/cairn-thick $drbd
    rc=$?
  fi
  echo "CAIRN-SATELLITE-EXIT rc=$rc"
  sleep 0.2
done
sync
poweroff -f
