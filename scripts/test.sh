#!/usr/bin/env bash
# Cairn's whole test suite. Installs what the tests need on a fresh machine
# (Debian packages, a Python venv with python-linstor from PyPI), then runs
# formatting and lint checks, the Rust tests, and the python-linstor
# integration tests against the real `cairn` binary. Nothing is skipped: a
# missing tool or privilege fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

say() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.89 or newer (rustup)" >&2; exit 1; }

# System packages: python3's venv module, openssl (certificates for the
# TLS test), util-linux (losetup, blockdev, wipefs for the satellites),
# drbd-utils (the real drbdadm parser validates every generated .res file).
missing=()
command -v drbdadm >/dev/null || missing+=(drbd-utils)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v openssl >/dev/null || missing+=(openssl)
for tool in losetup blockdev wipefs; do command -v "$tool" >/dev/null || { missing+=(util-linux); break; }; done
# The VM tests: qemu, and the tools copied into the VM image (Debian's
# kernel itself is downloaded by tests/vm/build-image.sh, not installed).
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v lvm >/dev/null || missing+=(lvm2)
command -v thin_check >/dev/null || missing+=(thin-provisioning-tools)
command -v cryptsetup >/dev/null || missing+=(cryptsetup-bin)
command -v kmod >/dev/null || missing+=(kmod)
# The VM tests make their own network namespace, bridge and taps.
command -v ip >/dev/null || missing+=(iproute2)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
# FILE_THIN snapshots are reflink copies: the test makes an XFS file system.
command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
# The PostgreSQL store's tests start their own server (initdb, pg_ctl in a
# temporary directory, as the package's `postgres` user); Debian keeps the
# programs in /usr/lib/postgresql/N/bin, off PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
id postgres >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The real python-linstor client, pinned to the version the wire rules
# were captured with, in a project-local venv.
VENV=${CAIRN_TEST_VENV:-.venv}
say "python venv at $VENV"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check 'python-linstor==1.29.1' 'pytest>=7' 'pyyaml>=6' 'prometheus-client>=0.20' 'moto[server]==5.2.5' 'schemathesis==4.32.5'
# The S3 server of the tests (tests/s3server.py) runs on this interpreter,
# also for the Rust tests of crates/cairn-s3.
export CAIRN_TEST_PYTHON="$(cd "$VENV" && pwd)/bin/python"

# The satellite tests make real loop devices: they need root and the loop
# driver, and say so instead of skipping.
[ "$(id -u)" -eq 0 ] || { echo "the end-to-end tests need root (loop devices)" >&2; exit 1; }
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || { echo "no loop driver (/dev/loop-control)" >&2; exit 1; }

# Optional inputs from outside the clone (documented in README.md): each is
# found through an environment variable or ../shared/, and its absence is
# said in one line; everything else runs without them.
export CAIRN_SPEC=${CAIRN_SPEC:-$(pwd)/../shared/reference/linstor-rest-v1-openapi.yaml}
[ -f "$CAIRN_SPEC" ] || echo "optional: LINSTOR's OpenAPI document not found at $CAIRN_SPEC (set CAIRN_SPEC): the route list in the tree is not compared with it"
# The DRBD 9 source for the real-replication VM tests (tests/vm/build-drbd.sh
# builds and caches the modules; it installs the kernel headers and
# coccinelle it needs).
drbd_src=${CAIRN_DRBD_SRC:-$(ls "$(pwd)"/../shared/vendor/drbd-9*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)}
if [ -n "$drbd_src" ] && [ -f "$drbd_src" ]; then
    export CAIRN_DRBD_SRC=$drbd_src
else
    unset CAIRN_DRBD_SRC
    echo "optional: no DRBD 9 source (set CAIRN_DRBD_SRC, or put drbd-9.*.tar.xz in ../shared/vendor/): the real-DRBD VM tests do not run"
fi

# Slow preparations that need neither the build nor the tests' network
# namespace run in the background at the lowest CPU priority, using what
# the compiler and the tests leave idle: Debian's kernel, the DRBD 9 and
# OpenZFS modules for the VM tests (tests/vm/prepare.sh; the VM tests find
# them cached), and cargo-deb for the package test. Each is waited for
# before the step that needs it; a failure there is reported and the step
# itself tries again in the foreground.
mkdir -p target
vm_build=${CAIRN_VM_BUILD:-$(pwd)/target/vm}
# setsid: a session (and so a scheduler autogroup) of its own, whose
# weight is lowered too where the kernel groups tasks by session
# (sched_autogroup: a process's nice value counts only within its group).
low='echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"'
setsid bash -c "$low" background bash tests/vm/prepare.sh "$vm_build" >target/vm-prepare.log 2>&1 &
vm_prepare=$!
setsid bash -c "$low" background bash tests/package/install-cargo-deb.sh >target/cargo-deb-install.log 2>&1 &
cargo_deb=$!
# Each runs in a session of its own: an early failure here ends its whole tree.
trap 'for p in $vm_prepare $cargo_deb; do kill -- "-$p" 2>/dev/null || true; done' EXIT
joined() { # pid, what, log: waits for a background preparation
    local waited=$SECONDS
    if wait "$1"; then echo "$2: ready (waited $((SECONDS - waited)) s for it)"
    else echo "$2 failed in the background (log: $3, its end below); the next step tries again"; tail -n 5 "$3"; fi
}

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo test"
cargo test --workspace
say "python-linstor integration tests"
cargo build -p cairn
export CAIRN_BIN="$(pwd)/target/debug/cairn"
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider tests/python
say "VM tests (Debian's kernel under qemu: LVM, LVM_THIN, physical storage, LUKS, snapshots; real DRBD 9 replication between three VMs; real OpenZFS from Debian contrib, fetched with a private apt configuration)"
joined "$vm_prepare" "VM preparation" target/vm-prepare.log
grep '^prepare:' target/vm-prepare.log || true
vm_pytest() { "$VENV/bin/python" -m pytest -q -rs --durations=12 -p no:cacheprovider "$@"; }
"$VENV/bin/python" tests/vm/build_images.py target/vm-images.json
export CAIRN_VM_IMAGES=$(pwd)/target/vm-images.json
# A VM runs on one host core (TCG), so the modules that boot one VM at a
# time leave the other core idle: two such lanes run at once, each test
# process in a network namespace of its own. The modules with two or three
# VMs at once (DRBD, shipping) then run alone; a new module runs there
# unless it is named here.
lane_a=(tests/vm/test_vm_backups.py)
lane_b=(tests/vm/test_vm_luks.py tests/vm/test_vm_lvm.py tests/vm/test_vm_snapshots.py tests/vm/test_vm_zfs.py)
vm_failed=0
vm_pytest "${lane_a[@]}" >target/vm-lane-a.log 2>&1 &
pid_a=$!
vm_pytest "${lane_b[@]}" >target/vm-lane-b.log 2>&1 &
pid_b=$!
wait "$pid_a" || vm_failed=1
wait "$pid_b" || vm_failed=1
for lane in a b; do echo "--- VM lane $lane"; cat "target/vm-lane-$lane.log"; done
echo "--- VM modules with several VMs at once"
ignore=()
for f in "${lane_a[@]}" "${lane_b[@]}"; do ignore+=("--ignore=$f"); done
vm_pytest tests/vm "${ignore[@]}" || vm_failed=1
say "Debian package (cargo-deb, pinned in tests/package/install-cargo-deb.sh; installed into a scratch root, never into this system)"
joined "$cargo_deb" "cargo-deb" target/cargo-deb-install.log
bash tests/package/test_package.sh
[ "$vm_failed" = 0 ] || { echo "VM tests failed (above)" >&2; exit 1; }
