#!/usr/bin/env bash
# Installs cargo-deb at the version the package test pins (cargo install
# --locked), unless that version is already installed. scripts/test.sh
# runs it in the background early in the run; tests/package/test_package.sh
# runs it again before packaging, a no-op by then unless that failed.
set -euo pipefail
CARGO_DEB_VERSION=3.8.0
[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ] || exit 0
echo "installing cargo-deb $CARGO_DEB_VERSION"
start=$SECONDS
cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
echo "cargo-deb installed in $((SECONDS - start)) s"
