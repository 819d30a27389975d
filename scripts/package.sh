#!/usr/bin/env bash
# Builds the Debian package of Cairn (target/debian/cairn_<version>_<arch>.deb).
#
#   scripts/package.sh [--profile release|dev|NAME] [--no-build] [--output DIR] [--fast]
#
# 1. builds `cairn` with the chosen Cargo profile (default release), unless
#    --no-build says the binary is already there (CI builds dev anyway);
# 2. has that binary generate its shell completions (`cairn completion
#    bash|zsh|fish`) and man pages (`cairn man --out-dir DIR`, gzipped here)
#    into <target>/<profile>/cairn-package/, where crates/cairn/Cargo.toml's
#    [package.metadata.deb] assets expect them;
# 3. runs `cargo deb --no-build` on it (cargo-deb 3.8.0:
#    `cargo install --locked cargo-deb --version 3.8.0`).
# --fast: cargo-deb's quicker, larger compression (for tests).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
profile=release
build=1
output=
fast=()

die() { echo "package.sh: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --profile) [ $# -ge 2 ] || die "--profile needs a value"; profile=$2; shift 2 ;;
        --profile=*) profile=${1#--profile=}; shift ;;
        --no-build) build=0; shift ;;
        --output) [ $# -ge 2 ] || die "--output needs a value"; output=$2; shift 2 ;;
        --output=*) output=${1#--output=}; shift ;;
        --fast) fast=(--fast); shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

command -v cargo >/dev/null || die "cargo not found"
cargo deb --version >/dev/null 2>&1 \
    || die "cargo-deb is not installed: cargo install --locked cargo-deb --version $CARGO_DEB_VERSION"

# Cargo puts the dev profile in target/debug, every other one in target/<name>.
case "$profile" in
    dev|debug) profile=dev; profile_dir=debug ;;
    *) profile_dir=$profile ;;
esac
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || die "cannot find the Cargo target directory"
bin=$target_dir/$profile_dir/cairn

if ((build)); then
    echo "==> cargo build -p cairn --profile $profile"
    cargo build --locked -p cairn --profile "$profile"
fi
[ -x "$bin" ] || die "no binary at $bin (build it, or drop --no-build)"

# The generated assets, next to the binary they describe.
gen=$target_dir/$profile_dir/cairn-package
rm -rf "$gen"
mkdir -p "$gen/completions" "$gen/man"
"$bin" completion --help >/dev/null 2>&1 \
    || die "$bin has no 'completion' command: it cannot generate its shell completions (build a tree with 'cairn completion')"
"$bin" man --help >/dev/null 2>&1 \
    || die "$bin has no 'man' command: it cannot generate its man pages (build a tree with 'cairn man --out-dir')"
echo "==> completions and man pages from $bin"
"$bin" completion bash >"$gen/completions/cairn.bash"
"$bin" completion zsh >"$gen/completions/_cairn"
"$bin" completion fish >"$gen/completions/cairn.fish"
for f in cairn.bash _cairn cairn.fish; do
    [ -s "$gen/completions/$f" ] || die "cairn completion wrote an empty $f"
done
"$bin" man --out-dir "$gen/man"
[ -s "$gen/man/cairn.1" ] || die "cairn man wrote no cairn.1"
# Debian policy: man pages gzipped with -9, no timestamp (reproducible).
gzip -9n "$gen"/man/*.1

echo "==> cargo deb (profile $profile)"
args=(deb -p cairn --no-build --profile "$profile" "${fast[@]}")
[ -n "$output" ] && args+=(--output "$output")
cargo "${args[@]}"
