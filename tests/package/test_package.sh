#!/usr/bin/env bash
# The Debian package, end to end, without touching the real system:
#  1. installs cargo-deb (pinned in install-cargo-deb.sh) if it is missing, dpkg-dev for the
#     shared-library dependencies and systemd-sysusers for postinst;
#  2. packages the debug build (scripts/package.sh --profile dev --no-build);
#  3. checks the control fields, the conffiles and the file list;
#  4. installs the .deb into a scratch root (dpkg --root, maintainer scripts
#     run chrootless with DPKG_ROOT set and a policy-rc.d that forbids
#     starting anything) and checks what postinst did (the `cairn` user);
#  5. runs the installed binary: --version, --help, the completions it
#     generates against the installed ones, and a controller and a
#     satellite started from the installed example configurations;
#  6. verifies the units with systemd-analyze (when it is installed);
#  7. removes and purges the package again.
# Needs root (dpkg --root, the satellite's probes) and the debug binary
# (cargo build -p cairn).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never

say() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg --root)"

bash tests/package/install-cargo-deb.sh
# dpkg-shlibdeps computes the libc dependency ($auto in Cargo.toml);
# postinst runs systemd-sysusers (without systemd, the standalone one).
missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v systemd-sysusers >/dev/null || missing+=(systemd-standalone-sysusers)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -x "$target_dir/debug/cairn" ] || fail "no debug binary at $target_dir/debug/cairn: cargo build -p cairn"

work=$(mktemp -d /tmp/cairn-package-test.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

say "packaging the debug build"
start=$SECONDS
scripts/package.sh --profile dev --no-build --fast --output "$work/deb/" 2>&1 | grep -v -e 'dev profile is not supported' -e 'To enable debug symbols set'
echo "package built in $((SECONDS - start)) s"
debs=("$work"/deb/cairn_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one .deb in $work/deb, found: ${debs[*]}"
deb=${debs[0]}
version=$("$target_dir/debug/cairn" --version | awk '{print $2}')
[ "$(basename "$deb")" = "cairn_${version}-1_$(dpkg --print-architecture).deb" ] || fail "unexpected file name $(basename "$deb") for version $version"

say "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = cairn ] || fail "Package: $(field Package)"
[ "$(field Version)" = "${version}-1" ] || fail "Version: $(field Version)"
for dep in 'libc6 (>=' util-linux systemd; do
    field Depends | grep -qF "$dep" || fail "Depends lacks $dep: $(field Depends)"
done
for rec in drbd-utils lvm2 thin-provisioning-tools cryptsetup-bin; do
    field Recommends | grep -qw "$rec" || fail "Recommends lacks $rec: $(field Recommends)"
done
field Suggests | grep -qw zfsutils-linux || fail "Suggests lacks zfsutils-linux: $(field Suggests)"
dpkg-deb -I "$deb" | sed -n 's/^ *//; /^[0-9]/p'

say "conffiles and maintainer scripts"
dpkg-deb -e "$deb" "$work/control"
[ "$(cat "$work/control/conffiles")" = $'/etc/cairn/controller.toml\n/etc/cairn/satellite.toml' ] \
    || fail "conffiles: $(cat "$work/control/conffiles")"
for script in postinst prerm postrm; do [ -x "$work/control/$script" ] || fail "no $script"; done
grep -q 'systemd-sysusers .*cairn.conf' "$work/control/postinst" || fail "postinst does not create the cairn user"
grep -q 'daemon-reload' "$work/control/postinst" || fail "postinst does not reload systemd"
# Installed, never enabled or started: enabling only where the admin had
# enabled the unit before (debian-installed), never `start`/`restart`
# (try-restart on upgrade restarts only running units).
for unit in cairn-controller cairn-satellite; do
    grep -q "deb-systemd-helper debian-installed $unit.service" "$work/control/postinst" || fail "postinst may enable $unit"
done
! grep -E 'deb-systemd-invoke (start|restart) ' "$work/control/postinst" || fail "postinst starts a unit"
grep -q 'deb-systemd-invoke stop cairn-satellite.service' "$work/control/prerm" || fail "prerm does not stop the satellite on removal"

say "file list"
dpkg-deb -c "$deb" | awk '{print $1, $6}' >"$work/list"
want=(
    '-rwxr-xr-x ./usr/bin/cairn'
    '-rw-r--r-- ./usr/lib/systemd/system/cairn-controller.service'
    '-rw-r--r-- ./usr/lib/systemd/system/cairn-satellite.service'
    '-rw-r--r-- ./usr/lib/sysusers.d/cairn.conf'
    '-rw-r--r-- ./etc/cairn/controller.toml'
    '-rw-r--r-- ./etc/cairn/satellite.toml'
    '-rw-r--r-- ./usr/share/bash-completion/completions/cairn'
    '-rw-r--r-- ./usr/share/zsh/vendor-completions/_cairn'
    '-rw-r--r-- ./usr/share/fish/vendor_completions.d/cairn.fish'
    '-rw-r--r-- ./usr/share/man/man1/cairn.1.gz'
    '-rw-r--r-- ./usr/share/man/man1/cairn-controller.1.gz'
    '-rw-r--r-- ./usr/share/man/man1/cairn-satellite.1.gz'
    '-rw-r--r-- ./usr/share/doc/cairn/GUIDE.md'
    '-rw-r--r-- ./usr/share/doc/cairn/README.md'
    '-rw-r--r-- ./usr/share/doc/cairn/copyright'
)
for w in "${want[@]}"; do grep -qxF -- "$w" "$work/list" || fail "missing from the package: $w"; done
echo "$(wc -l <"$work/list") entries, $(grep -c '/man1/.*\.1\.gz' "$work/list") man pages, all expected paths present"

say "installing into a scratch root"
root=$work/root
mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info" "$root/usr/sbin"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# The chroot convention: maintainer scripts must not start or stop services.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
host_passwd=$(md5sum </etc/passwd)
# --force-depends: the scratch root has no libc6/util-linux packages.
dpkg --root="$root" --force-script-chrootless --force-depends -i "$deb" >"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log"; fail "dpkg -i into the scratch root"; }
[ "$(md5sum </etc/passwd)" = "$host_passwd" ] || fail "the install changed the host's /etc/passwd"
dpkg --root="$root" -s cairn | grep -qx 'Status: install ok installed' || fail "not installed in the scratch root"
grep -q '^cairn:x:[0-9]*:[0-9]*:Cairn controller:/var/lib/cairn:/usr/sbin/nologin$' "$root/etc/passwd" \
    || fail "postinst did not create the cairn user: $(cat "$root/etc/passwd" 2>/dev/null)"
cmp -s packaging/controller.toml "$root/etc/cairn/controller.toml" || fail "/etc/cairn/controller.toml differs from packaging/"
cmp -s packaging/satellite.toml "$root/etc/cairn/satellite.toml" || fail "/etc/cairn/satellite.toml differs from packaging/"
ls "$root"/etc/systemd/system/*.wants/cairn-* 2>/dev/null && fail "the install enabled a unit"
echo "installed; postinst created: $(grep '^cairn:' "$root/etc/passwd")"

say "running the installed binary"
bin=$root/usr/bin/cairn
v=$("$bin" --version)
[[ $v == "cairn $version" || $v == "cairn $version "* ]] || fail "--version: $v"
help=$("$bin" --help)
for sub in controller satellite up node storage-pool resource-group completion; do
    grep -qE "^  $sub( |$)" <<<"$help" || fail "--help does not list '$sub'"
done
for shell in bash zsh fish; do
    case $shell in
        bash) f=$root/usr/share/bash-completion/completions/cairn ;;
        zsh) f=$root/usr/share/zsh/vendor-completions/_cairn ;;
        fish) f=$root/usr/share/fish/vendor_completions.d/cairn.fish ;;
    esac
    "$bin" completion "$shell" | cmp -s - "$f" || fail "installed $shell completion is not what the binary generates"
done
bash -n "$root/usr/share/bash-completion/completions/cairn" || fail "bash completion has syntax errors"
bash -c "source '$root/usr/share/bash-completion/completions/cairn' && complete -p cairn" >/dev/null \
    || fail "bash completion does not register for cairn"
zcat "$root/usr/share/man/man1/cairn.1.gz" | grep -q '^\.TH cairn 1' || fail "cairn.1.gz is not a man page"
if command -v man >/dev/null; then
    MANWIDTH=80 man -l "$root/usr/share/man/man1/cairn-satellite.1.gz" 2>/dev/null | grep -q -- '--cluster-secret-file' \
        || fail "man cairn-satellite does not render --cluster-secret-file"
fi
echo "--version, --help, completions (bash, zsh, fish), man pages: ok"

say "controller and satellite from the installed configuration files"
wait_log() { # file pattern pid
    for _ in $(seq 1 100); do
        grep -q -- "$2" "$1" && return 0
        kill -0 "$3" 2>/dev/null || { cat "$1"; fail "exited before '$2'"; }
        sleep 0.1
    done
    cat "$1"; fail "no '$2' within 10 s"
}
: >"$work/ctrl.log"
: >"$work/sat.log"
"$bin" controller --config "$root/etc/cairn/controller.toml" --data-dir "$work/ctrl" --rest-bind 127.0.0.1:0 >"$work/ctrl.log" 2>&1 &
pids+=($!)
wait_log "$work/ctrl.log" 'controller ready' "$!"
[ -s "$work/ctrl/cluster-secret" ] || fail "the controller wrote no cluster secret"
CAIRN_CLUSTER_SECRET=$(cat "$work/ctrl/cluster-secret") "$bin" satellite --config "$root/etc/cairn/satellite.toml" \
    --listen 127.0.0.1:0 --data-dir "$work/sat" --node-name pkgtest >"$work/sat.log" 2>&1 &
pids+=($!)
wait_log "$work/sat.log" 'satellite ready' "$!"
for p in "${pids[@]}"; do kill "$p"; wait "$p" || true; done
pids=()
echo "both started from /etc/cairn/*.toml as installed"

say "systemd units"
if command -v systemd-analyze >/dev/null; then
    # verify --root needs the targets and slices the units hang off.
    verify=$work/verify
    cp -a "$root/." "$verify/"
    cp -n /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice "$verify/usr/lib/systemd/system/" 2>/dev/null \
        || cp -n /lib/systemd/system/*.target /lib/systemd/system/*.slice "$verify/usr/lib/systemd/system/"
    # It prints unknown or misspelt settings but still exits 0: any output fails.
    out=$(systemd-analyze verify --root="$verify" --man=no cairn-controller.service cairn-satellite.service 2>&1) \
        || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    echo "systemd-analyze verify: both units clean"
    for unit in cairn-controller cairn-satellite; do
        systemd-analyze security --offline=yes --root="$verify" "$verify/usr/lib/systemd/system/$unit.service" 2>/dev/null \
            | grep 'Overall exposure level' || true
    done
else
    echo "systemd-analyze not installed: the unit check did not run"
fi

say "remove and purge"
dpkg --root="$root" --force-script-chrootless -r cairn >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/cairn" ] || fail "dpkg -r left /usr/bin/cairn"
[ -f "$root/etc/cairn/controller.toml" ] || fail "dpkg -r removed the conffiles"
dpkg --root="$root" --force-script-chrootless -P cairn >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P"; }
[ ! -e "$root/etc/cairn/controller.toml" ] || fail "dpkg -P left the conffiles"
echo "removed (conffiles kept), purged (conffiles gone)"

say "package test passed"
